"""Every file a command writes goes through here: atomically, and through one path library.

`write_text` / `write_bytes` / `write_json` write `<name>` as `<name>.partial` in the same
folder, then rename it over `<name>` (`paths.write_atomic`, on `etils.epath`): a reader, or the
next run, sees the old file or the new one, never a half-written one, and a failed write (a full
disk, a read-only folder) leaves no file behind and the old one intact. A run folder may be a
local folder or a URL (`paths`). A failed write raises `OutputError`, one line naming the file
(a command prints it and exits with status 2).

`check_writable(folder, what)` checks, before a command does its work, that the folder where
its outputs go can be written (creating nothing).
"""

from __future__ import annotations

import json
import os
import uuid

from etils import epath

from issf_common import errors, paths

PathLike = str | os.PathLike


class OutputError(errors.InputError, OSError):
  """An output that cannot be written (no space, no permission, a file where a folder goes)."""


def _reason(err: OSError) -> str:
  return err.strerror or str(err) or type(err).__name__


def write_bytes(path: PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically (`paths.write_atomic`; module docstring); creates the
  folder. Returns `path`."""
  if not paths.is_url(path):
    # A link is followed (the rename replaces its target, not the link), and a device or a
    # pipe (/dev/stdout, /dev/null) is written in place: renaming over it would replace it.
    real = os.path.realpath(path)
    if os.path.exists(real) and not os.path.isfile(real) and not os.path.isdir(real):
      try:
        with open(real, 'wb') as f:
          f.write(data)
      except OSError as err:
        raise OutputError(f'{path}: cannot be written ({_reason(err)})') from None
      return os.fspath(path)
    path = real if os.path.islink(path) else path
  try:
    paths.makedirs(paths.path(path).parent)
    paths.write_atomic(path, data)
  except OSError as err:
    raise OutputError(f'{path}: cannot be written ({_reason(err)})') from None
  return os.fspath(path)


def write_text(path: PathLike, text: str) -> str:
  return write_bytes(path, text.encode('utf-8'))


def strict_json(x):
  """`x` with numpy values as Python ones and non-finite floats as None (strict JSON)."""
  import math

  import numpy as np

  if isinstance(x, dict):
    return {str(k): strict_json(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [strict_json(v) for v in x]
  if isinstance(x, np.ndarray):
    return strict_json(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(path: PathLike, payload, indent: int | None = 2) -> str:
  """`payload` as strict JSON: numpy values as Python ones, a NaN or Inf as null."""
  return write_text(path, json.dumps(strict_json(payload), indent=indent, allow_nan=False))


def save_figure(path: PathLike, fig, **kwargs) -> str:
  """A matplotlib figure, in the format of `path`'s extension, written atomically."""
  import io

  buffer = io.BytesIO()
  fig.savefig(buffer, format=epath.Path(path).suffix.lstrip('.').lower() or None, **kwargs)
  return write_bytes(path, buffer.getvalue())


def check_writable(folder: PathLike, what: str) -> None:
  """Raises OutputError unless files can be written into `folder`, before any work is done.

  Creates nothing: a missing `folder` is checked at its nearest existing parent (where the
  command will create it); a URL with nothing above it yet (an object store has no folders to
  create) in the folder itself. `what` names the flag in the message ('--workdir').
  """
  remote = paths.is_url(folder)
  folder = epath.Path(folder)
  existing = folder
  while not existing.exists() and existing.parent != existing:
    if remote and not paths.is_url(existing.parent):  # epath's parent of `gs://` is the local /
      break
    existing = existing.parent
  if not existing.exists():
    existing = folder
  elif not existing.is_dir():
    raise OutputError(f'{what} {folder}: {existing} is a file, not a folder')
  probe = existing / f'.write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}'
  try:
    with paths.open_file(probe, 'wb') as f:
      f.write(b'')  # a URL's file is created by its first write
    probe.unlink()
  except OSError as err:
    raise OutputError(f'{what} {folder}: {existing} cannot be written ({_reason(err)})') from None
