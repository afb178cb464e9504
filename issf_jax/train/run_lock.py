"""One trainer per run folder: an exclusive `flock` on `<workdir>/.lock`, held while it trains.

Two `issf-train` processes on one --workdir would both train, interleave their records in
`metrics.jsonl` and overwrite each other's checkpoints. The first takes the lock and writes its
pid into the file; a second finds the lock taken and stops with one line naming that pid.

The kernel releases a `flock` when its process ends, however it ends (a kill -9 too), so a
lock is never left stale; the file itself stays, and only the lock on it counts. On a pod, only
process 0 takes the lock (the others write nothing the lock guards); `flock` is per host, so
the lock guards a folder against a second run started on the same host as process 0, and on a
shared file system against hosts where the file system honours `flock` (NFSv4, Lustre do).
A run folder on an object store (`gs://...`) has no lock: no such store has `flock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from issf_common import errors, paths

LOCK_FILE = '.lock'


class RunFolderLockedError(errors.InputError):
  """Another process holds the run folder's lock."""


def _holder(fd: int) -> str:
  """The pid the holder wrote into the lock file ('unknown' while it has not written it)."""
  try:
    text = os.pread(fd, 64, 0).decode('ascii', 'replace').strip()
  except OSError:
    text = ''
  return text if text.isdigit() else 'unknown'


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds the exclusive lock on `workdir` (created if needed) for the block.

  Raises:
    RunFolderLockedError: another process holds it; names its pid.
  """
  if not enabled or paths.is_url(workdir):
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise RunFolderLockedError(
        f'--workdir {workdir}: another process (pid {_holder(fd)}) is training in this run '
        'folder; wait for it to end, or use another --workdir'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
