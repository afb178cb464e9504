"""Run folders and shard folders on any file system: one path library, `etils.epath`.

`--workdir`, `data.shards_dir`, `issf-prepare --src` and `--out`, the files under them, and the
files a command is given or writes (features, ground truth, predictions, reports) may be local paths
or URLs (`gs://bucket/run`: Cloud Storage, through TensorFlow's file systems when TensorFlow is
installed, as here; Orbax writes the checkpoints there itself). Code that touches them goes
through this module or `epath.Path`, never `open()` or `os.path` on the string, so a URL is never
taken for a local relative path (`gs:/bucket/run` under the working directory). Reads go through
`open_file` / `read_text` / `load_npy`, where a URL file system's failures are OSErrors like a
local file's, so the one-line error of a bad input (`errors.py`) is the same for both. Local
paths keep the local guarantees: `write_atomic` fsyncs before its rename.

What an object store cannot give: an append (a URL file is rewritten whole, see `append_text`),
an atomic rename (Cloud Storage copies then deletes; a reader may see the new object before the
temporary one is gone, never half an object), and a lock (`run_lock` is local only).
"""

from __future__ import annotations

import contextlib
import os
import sys

from etils import epath

PARTIAL_SUFFIX = '.partial'


def is_url(path: str | os.PathLike) -> bool:
  """True for `scheme://...` (gs://, s3://, ram://, ...), False for a local path."""
  return '://' in os.fspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  """`p` as an `epath.Path` (local, or a URL of a file system epath knows)."""
  return epath.Path(p)


def join(base: str | os.PathLike, *parts: str) -> str:
  """`os.path.join` that keeps a URL a URL (`gs://b/run` + `x` -> `gs://b/run/x`)."""
  return os.fspath(epath.Path(base).joinpath(*parts))


def absolute(p: str | os.PathLike) -> str:
  """A local path made absolute; a URL as it is."""
  return os.fspath(p) if is_url(p) else os.path.abspath(p)


def exists(p: str | os.PathLike) -> bool:
  return epath.Path(p).exists()


def is_file(p: str | os.PathLike) -> bool:
  return epath.Path(p).is_file()


def is_dir(p: str | os.PathLike) -> bool:
  return epath.Path(p).is_dir()


def size(p: str | os.PathLike) -> int:
  """The file's length in bytes."""
  return epath.Path(p).stat().length


def relative(p: str | os.PathLike, root: str | os.PathLike) -> str:
  """`p` relative to the folder `root` (`os.path.relpath` locally; a URL must lie under it)."""
  if not is_url(p):
    return os.path.relpath(p, root)
  return os.fspath(epath.Path(p).relative_to(epath.Path(root)))


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
  """The sorted paths in `folder` whose names match `pattern` (`*.npy`; `folder` is literal)."""
  return sorted(os.fspath(x) for x in epath.Path(folder).glob(pattern))


def _as_os_error(err: Exception) -> OSError | None:
  """A URL file system's own error as an OSError (TensorFlow's `OpError`: a folder read as a
  file, a denied bucket), so one `except OSError` covers local and remote files; else None."""
  tf = sys.modules.get('tensorflow')
  errors = getattr(tf, 'errors', None)
  if errors is not None and isinstance(err, errors.OpError):
    return OSError(err.message)
  return None


@contextlib.contextmanager
def open_file(p: str | os.PathLike, mode: str = 'r'):
  """`p` opened through epath (a local file: the built-in `open`; a URL: its file system).
  Every failure of the file system is an OSError (FileNotFoundError for a missing file)."""
  try:
    with epath.Path(p).open(mode) as f:
      yield f
  except Exception as err:
    converted = _as_os_error(err)
    if converted is None:
      raise
    raise converted from None


def load_npy(p: str | os.PathLike, **kwargs):
  """`np.load` of a .npy file through `open_file` (kwargs: `allow_pickle`, `encoding`)."""
  import numpy as np

  with open_file(p, 'rb') as f:
    return np.load(f, **kwargs)


def save_npy(p: str | os.PathLike, array, **kwargs) -> None:
  """`np.save` to `p` (the same bytes as `np.save(p, ...)`; kwargs: `allow_pickle`)."""
  import numpy as np

  with open_file(p, 'wb') as f:
    np.save(f, array, **kwargs)


def makedirs(p: str | os.PathLike) -> None:
  epath.Path(p).mkdir(parents=True, exist_ok=True)


def read_text(p: str | os.PathLike) -> str:
  with open_file(p, 'r') as f:
    return f.read()


def write_atomic(p: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to `p + .partial`, then renames it to `p`: a reader sees the old file or the
  new one. Locally the bytes are fsynced before the rename; nothing is left behind on failure."""
  target = epath.Path(p)
  tmp = target.with_name(target.name + PARTIAL_SUFFIX)
  raw = data.encode('utf-8') if isinstance(data, str) else data
  try:
    if is_url(p):
      tmp.write_bytes(raw)
    else:
      with open(tmp, 'wb') as f:  # a local path: fsync is what makes the rename durable
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(target)
  finally:
    if tmp.exists():
      tmp.unlink()


def append_text(p: str | os.PathLike, text: str) -> None:
  """Appends `text` to `p` (created if missing). Object stores have no append: there the file is
  read and written again whole, through `write_atomic` (metrics.jsonl stays small)."""
  if not is_url(p):
    with open(p, 'a') as f:
      f.write(text)
    return
  target = epath.Path(p)
  old = target.read_text() if target.exists() else ''
  write_atomic(p, old + text)
