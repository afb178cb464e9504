"""Programs for many lengths: compiled ahead of need, and traced once with a symbolic T.

A 'micro' run compiles one train-step program per length bucket (16 for THUMOS14's training
set) and phase, and the memory initialisation one per padded length (12). Each is an XLA
compile of a few CPU-seconds, which the persistent cache keeps; but JAX traces and lowers each
one again in Python before it can even look the program up (0.55-0.75 s per train-step program
on a 2-core CPU, most of a rerun's start-up with a warm cache). `LengthPolymorphic` traces and
lowers the function once with a symbolic time axis T (`jax.export`), constrained to the range
of the lengths to compile; each length's program then lowers from that module (shape
refinement, about 0.06 s) and compiles, or loads from the cache, as before. `ProgramSet` keeps
one function's compiled programs by input shape and compiles those of a list of lengths
ahead of need, one per two cores at once (`compile_workers`).

The module is valid for every T in the range: a Python-level decision on T that is not the
same for all of them (`T < windows` with the range straddling it, `int(T)`) makes the export
fail, and each length is lowered on its own, as without this module. The programs compute the
same values as the ones lowered per length, up to the order of float additions (XLA fuses the
refined module a little differently: gradients within a few ulp, the forward and the memory
the same in the tests), so within a run every shape that an export covers is lowered from it,
whenever it is met (`ProgramSet.get`).
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import jax
from absl import logging
from jax import export


def padded_spec(batch: dict, length, time_keys) -> dict:
  """`batch` with the time axis (axis 1) of its `time_keys` set to `length` (an int or a
  symbolic dimension), those entries as ShapeDtypeStructs."""
  return {
    k: jax.ShapeDtypeStruct(
      v.shape[:1] + (length,) + v.shape[2:], v.dtype, sharding=getattr(v, 'sharding', None)
    )
    if k in time_keys else v
    for k, v in batch.items()
  }  # fmt: skip


def time_free_signature(batch: dict, time_keys) -> tuple:
  """The shapes of a batch with its time axis left out: programs of one export share it."""
  return tuple(
    sorted((k, v.shape[:1] + v.shape[2:] if k in time_keys else v.shape) for k, v in batch.items())
  )


class LengthPolymorphic:
  """The programs of `jitted(*args)` for a range of lengths T of `args[batch_index]`'s time
  axis (axis 1 of its `time_keys` entries), lowered from one symbolic export.

  `create(...)` returns None (and logs why) where the function cannot be exported with a
  symbolic T over the range; the caller then lowers per length.
  """

  def __init__(self, exported, call, signature, low: int, high: int, keys):
    self.exported, self._call, self.signature = exported, call, signature
    self.low, self.high, self._keys = low, high, keys

  @classmethod
  def create(
    cls, jitted, args, *, batch_index: int, time_keys, lengths, donate_argnums=(),
    compiler_options=None, name: str = 'program',
  ) -> LengthPolymorphic | None:  # fmt: skip
    """Exports `jitted` at `args` (arrays or ShapeDtypeStructs) with the time axis of
    `args[batch_index][k]`, k in `time_keys`, symbolic over [min(lengths), max(lengths)]."""
    low, high = int(min(lengths)), int(max(lengths))
    batch = args[batch_index]
    keys = tuple(k for k in time_keys if k in batch)
    (time_dim,) = export.symbolic_shape('T', constraints=(f'T >= {low}', f'T <= {high}'))
    spec = list(args)
    spec[batch_index] = padded_spec(batch, time_dim, keys)
    try:
      exported = export.export(jitted)(*spec)
    except Exception as e:  # noqa: BLE001 - any failure: lower per length, as before
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      logging.info('%s: one program per length (no symbolic T over [%d, %d]: %s).',
                   name, low, high, reason)  # fmt: skip
      return None
    call = jax.jit(exported.call, donate_argnums=donate_argnums, compiler_options=compiler_options)
    return cls(exported, call, time_free_signature(batch, keys), low, high, keys)

  def covers(self, batch: dict) -> bool:
    """Whether `batch` (arrays or ShapeDtypeStructs) has this export's shapes and a T in its
    range."""
    lengths = {v.shape[1] for k, v in batch.items() if k in self._keys}
    return (
      len(lengths) == 1
      and self.low <= lengths.pop() <= self.high
      and time_free_signature(batch, self._keys) == self.signature
    )

  def lower(self, *args):
    """The `jax.stages.Lowered` of the program at these concrete shapes."""
    return self._call.lower(*args)


def compile_workers() -> int:
  """How many programs to compile at once: half the cores this process may use, at least 1.

  One XLA:CPU compile already keeps about 1.6 cores busy (its LLVM code generation runs in
  parallel), so a compile per core only adds contention: 16 train-step programs on 2 cores,
  one at a time against two, took 53.4 against 57.8 s (warm-up phase, 88 against 112
  CPU-seconds) and 65.7 against 75.7 s (memory phase, 108 against 146), docs/results.md.
  """
  return max(1, len(os.sched_getaffinity(0)) // 2)


def _timed_compile(lowered):
  t0 = time.perf_counter()
  return lowered.compile(), time.perf_counter() - t0


class ProgramSet:
  """The compiled programs of one jitted function, one per shape of its batch argument.

  `get(*args)` returns the program for these arguments' shapes, compiled when first met.
  `precompile(args, lengths)` compiles, ahead of need, those of `args` with the batch padded to
  each of `lengths`, `workers` at once (`compile_workers`), while the lowering, in Python, runs
  here one after the other. With `symbolic`, the programs of those lengths are lowered from one
  `LengthPolymorphic` export, and so is any later shape it covers.
  """

  def __init__(
    self, jitted, *, batch_index: int, time_keys=('features', 'mask'), donate_argnums=(),
    compiler_options=None, symbolic: bool = True, name: str = 'program', compile_seconds=None,
  ):  # fmt: skip
    self._jitted, self._batch_index, self._time_keys = jitted, batch_index, time_keys
    self._export_options = dict(donate_argnums=donate_argnums, compiler_options=compiler_options)
    self._symbolic, self._name = symbolic, name
    self.compiled: dict = {}
    self.compile_seconds = [] if compile_seconds is None else compile_seconds
    self.exports: list[LengthPolymorphic] = []

  @staticmethod
  def _key(batch) -> tuple:
    return tuple(sorted((k, v.shape) for k, v in batch.items()))

  def _lower(self, *args):
    batch = args[self._batch_index]
    source = next((p for p in self.exports if p.covers(batch)), self._jitted)
    return source.lower(*args)

  def get(self, *args):
    key = self._key(args[self._batch_index])
    if key not in self.compiled:
      self.compiled[key], seconds = _timed_compile(self._lower(*args))
      self.compile_seconds.append(seconds)
    return self.compiled[key]

  def precompile(self, args, lengths, workers: int | None = None) -> int:
    """Compiles the programs of `args` (arrays or ShapeDtypeStructs) with the batch padded to
    each of `lengths`; returns how many were new."""
    batch = args[self._batch_index]
    keys = [k for k in self._time_keys if k in batch]
    specs = [padded_spec(batch, t, keys) for t in sorted(set(int(t) for t in lengths))]
    todo = [b for b in specs if self._key(b) not in self.compiled]
    if not todo:
      return 0
    uncovered = [b for b in todo if not any(p.covers(b) for p in self.exports)]
    if self._symbolic and len(uncovered) > 1:
      exported = LengthPolymorphic.create(
        self._jitted, args, batch_index=self._batch_index, time_keys=keys,
        lengths=[b[keys[0]].shape[1] for b in uncovered], name=self._name,
        **self._export_options,
      )  # fmt: skip
      if exported is not None:
        self.exports.append(exported)
    workers = workers or compile_workers()
    pending = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
      for spec in todo:
        full = list(args)
        full[self._batch_index] = spec
        pending[self._key(spec)] = pool.submit(_timed_compile, self._lower(*full))
      for key, future in pending.items():
        self.compiled[key], seconds = future.result()
        self.compile_seconds.append(seconds)
    return len(pending)

  def symbolic_ranges(self) -> list[tuple[int, int]]:
    """The length ranges of the exports made so far."""
    return [(p.low, p.high) for p in self.exports]
