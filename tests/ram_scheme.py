"""`ram://`, TensorFlow's in-memory file system, as a URL scheme of etils.epath (importing this
module registers it; tests/test_remote_paths.py says why).

epath knows gs://, s3://, az:// and hf:// by name; `RamPath` is epath's own path class, told to
send `ram://` to TensorFlow's file systems through epath's `tf_backend`, exactly as epath does
for gs:// when TensorFlow is installed. A command started as
`python -c 'import tests.ram_scheme; ...'` sees the scheme too (for its own process's memory).

One way ram:// differs from a bucket: a file that exists is appended to, not replaced, when it is
opened for writing (a test that overwrites a file removes it first). The code's atomic writes
are not affected: they write a fresh `.partial` file, then rename it.
"""

from __future__ import annotations

from etils import epath
from etils.epath import backend, gpath


@epath.register_path_cls('ram://')
class RamPath(gpath.PosixGPath):
  """`ram://a/b` through epath's TensorFlow backend (pathlib reads it as the parts 'ram:', ...)."""

  @property
  def _uri_scheme(self):
    return 'ram' if self.parts[:1] == ('ram:',) else None

  @property
  def _backend(self):
    return backend.tf_backend if self._uri_scheme else super()._backend

  @property
  def _path_str(self) -> str:
    if self._uri_scheme:
      return 'ram://' + '/'.join(self.parts[1:])
    return super()._path_str
