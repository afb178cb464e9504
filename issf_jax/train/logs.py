"""Console hygiene for the launch scripts: Orbax's INFO records are dropped, warnings kept."""

from __future__ import annotations

import logging


class _DropLibraryInfo(logging.Filter):
  _NOISY = ('/orbax/', '/tensorstore/', '/etils/')

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(n in record.pathname for n in self._NOISY)


def quiet_libraries() -> None:
  logging.getLogger('absl').addFilter(_DropLibraryInfo())
