"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import pathlib
import platform


def cpu_name() -> str:
  """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
