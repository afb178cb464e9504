"""The persistent XLA compilation cache of the commands: on by default, one folder per user.

Every command that compiles (issf-train, issf-eval, issf-predict, issf-repro, the GPU recipe
benchmark) calls `configure(setting)` before its first compilation, with the value of its
`--compilation_cache` flag:
  ''     (default) `$JAX_COMPILATION_CACHE_DIR` when that is set, else `default_dir()`:
         `$XDG_CACHE_HOME/issf-jax/xla`, or `~/.cache/issf-jax/xla`;
  'off'  no persistent cache (every run compiles its programs again);
  DIR    that folder (a URL, gs://..., is JAX's to open: it reads the cache through etils.epath).
A program is then compiled once per machine (per program, shapes, XLA flags and JAX version:
JAX's cache key) and loaded from the folder by every later run; a train step takes 1-20 s to
compile on a 2-core CPU, loading it takes milliseconds.

What else decides what is cached (jax 0.10, `jax/_src/compiler.py`):
  * `jax_persistent_cache_min_compile_time_secs` (JAX's default 1 s): programs that compiled
    faster are not written. Set to `MIN_COMPILE_TIME_S` here, so that the small programs (the
    optimizer update, the evaluation's, the initial state) are kept too: a warm run then
    compiles nothing. `$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` wins when set.
  * programs with host callbacks (the torch tie orders, `:ties=torch`) are never written; they
    compile in every run.
  * `jax_persistent_cache_enable_xla_caches` (JAX's default: the per-fusion autotuning results
    on GPU, in a subfolder of the same folder) is left as JAX sets it.
  * the folder grows without bound (`jax_compilation_cache_max_size` needs the `filelock`
    package to evict); deleting it is always safe.
Multi-host: every process may name the same folder (a shared file system); JAX writes entries
from process 0 only and every process reads them. A folder local to each host is fine too, but
then only process 0's host gets warm.

`CompileCounter` counts the compilations of the process and how many came from the cache; the
trainer logs its `summary()` at the end of a run.
"""

from __future__ import annotations

import os
import threading

import jax
from absl import logging

from issf_common import paths

ENV_DIR = 'JAX_COMPILATION_CACHE_DIR'
ENV_MIN_COMPILE_TIME = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'
OFF = 'off'
# Every program is written, the small ones too (in a tiny training run 10 of its 17 programs
# compile in under 0.3 s each; a file each is cheap, and a warm run then compiles nothing).
MIN_COMPILE_TIME_S = 0.0

# jax.monitoring events (jax/_src/dispatch.py, compiler.py): every compilation, whether it was
# compiled or loaded, records the first; a load from the persistent cache also records the
# second.
COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


def default_dir() -> str:
  """`$XDG_CACHE_HOME/issf-jax/xla`, or `~/.cache/issf-jax/xla`."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'issf-jax', 'xla')


def resolve(setting: str | None) -> str | None:
  """The cache folder that `setting` (module docstring) names, absolute (a URL as it is); None
  for 'off'."""
  setting = (setting or '').strip()
  if setting.lower() == OFF:
    return None
  path = setting or os.environ.get(ENV_DIR) or default_dir()
  return paths.absolute(path if paths.is_url(path) else os.path.expanduser(path))


def configure(setting: str | None = '', *, announce: bool = True) -> str | None:
  """Turns the persistent compilation cache on in the folder `setting` names, or off.

  Call before the first compilation of the process (JAX opens the folder at the first one).
  Returns the folder, or None when the cache is off. With `announce`, which is logged at the
  first compilation, not here: a command refusing its input before compiling prints its one
  error line and nothing else (issf-eval and issf-predict check some input after compiling,
  and announce nothing).
  """
  path = resolve(setting)
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)
  else:
    jax.config.update('jax_enable_compilation_cache', True)
    jax.config.update('jax_compilation_cache_dir', path)
    if ENV_MIN_COMPILE_TIME not in os.environ:
      jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_S)
  COUNTER.install(f'Persistent compilation cache: {path or "off."}' if announce else None)
  return path


class CompileCounter:
  """Counts the process's compilations (`jax.monitoring` listeners, installed once)."""

  def __init__(self):
    self.programs = 0  # compilations, from scratch or loaded
    self.hits = 0  # loaded from the persistent cache
    self.seconds = 0.0  # the time of both
    self._installed = False
    self._announce = None  # logged at the first compilation
    self._lock = threading.Lock()

  def install(self, announce: str | None = None) -> None:
    """Starts counting (once per process); `announce` is logged at the next compilation."""
    with self._lock:
      self._announce = announce
      if self._installed:
        return
      self._installed = True
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event == COMPILE_EVENT:
      with self._lock:
        self.programs += 1
        self.seconds += duration
        announce, self._announce = self._announce, None
      if announce:
        logging.info('%s', announce)

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == CACHE_HIT_EVENT:
      with self._lock:
        self.hits += 1

  @property
  def compiled(self) -> int:
    """Programs compiled from scratch."""
    return self.programs - self.hits

  def summary(self) -> str:
    """'Compilation: 31 programs in 42.1 s, 0 from scratch, 31 from the persistent cache.'"""
    return (
      f'Compilation: {self.programs} programs in {self.seconds:.1f} s, {self.compiled} from '
      f'scratch, {self.hits} from the persistent cache.'
    )


COUNTER = CompileCounter()
