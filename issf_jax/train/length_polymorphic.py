"""One trace for the programs of every length bucket: a symbolic T through `jax.export`.

A 'micro' run compiles one program per length bucket (16 for THUMOS14's training set). Each
is an XLA compile of a few CPU-seconds, which the persistent cache keeps; but JAX traces and
lowers each one again in Python before it can even look the program up (0.55-0.75 s per
program on a 2-core CPU, most of a rerun's start-up with a warm cache). Here the program is
traced and lowered once per phase with a symbolic time axis T, constrained to the range of
the lengths to compile; each bucket's program then lowers from that module (shape
refinement, about 0.06 s) and compiles, or loads from the cache, as before.

The module is valid for every T in the range: a Python-level decision on T that is not the
same for all of them (`T < windows` with the range straddling it, `int(T)`) makes the export
fail, and the caller lowers each length on its own, as without this module. The programs
compute the same values as the ones lowered per length, up to the order of float additions
(XLA fuses the refined module a little differently: gradients within a few ulp; the forward
and the memory the same in the tests), so one run's programs all come from one path
(`LengthPolymorphic.covers`).
"""

from __future__ import annotations

import jax
from absl import logging
from jax import export


def _symbolic(x, time_dim):
  return jax.ShapeDtypeStruct(
    x.shape[:1] + (time_dim,) + x.shape[2:], x.dtype, sharding=getattr(x, 'sharding', None)
  )


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

  def __init__(self, exported, call, signature, low: int, high: int, batch_index: int, keys):
    self.exported, self._call, self.signature = exported, call, signature
    self.low, self.high, self._batch_index, self._keys = low, high, batch_index, keys

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
    symbolic = {k: _symbolic(v, time_dim) if k in keys else v for k, v in batch.items()}
    spec = list(args)
    spec[batch_index] = symbolic
    try:
      exported = export.export(jitted)(*spec)
    except Exception as e:  # noqa: BLE001 - any failure: lower per length, as before
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      logging.info('%s: one program per length (no symbolic T over [%d, %d]: %s).',
                   name, low, high, reason)  # fmt: skip
      return None
    call = jax.jit(exported.call, donate_argnums=donate_argnums, compiler_options=compiler_options)
    return cls(exported, call, time_free_signature(batch, keys), low, high, batch_index, keys)

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
