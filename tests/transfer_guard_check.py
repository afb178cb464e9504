"""Trains a tiny run with device-to-host transfers refused outside the log steps (a subprocess
of tests/test_trainer_transfers.py, so that XLA's fast-compile flags and the device count apply).

  python -m tests.transfer_guard_check SHARDS WORKDIR exact|micro [auto|off]

Two epochs of 6 steps, the memory built at the end of the first, so both phases run; a log at
each epoch end only. Every other step (taking its batch, dispatching it, the in-flight bound)
runs inside the Trainer's `step_guard`, here `no_device_to_host()`:
  * `jax.transfer_guard_device_to_host('disallow_explicit')`, which refuses implicit and
    explicit transfers on GPU and TPU, but on the CPU lets every one through (an XLA:CPU array
    is read in place, "zero-copy": jax-ml/jax issue 16602);
  * so the CPU read of a value is refused as well: `jax.Array._value` (the host copy behind
    `float`, `int`, `bool`, `.tolist()`, `jax.device_get`, formatting and, for an array on
    several devices, `np.asarray`) raises while the guard is on. A one-device array read with
    `np.asarray` goes through the buffer protocol instead, which no Python hook sees: the
    2-device run catches those.
Prints `guarded steps: N` at the end; a transfer raises inside the step that made it, with
the traceback of the read.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import array as array_lib

_GUARD = threading.local()


def _install_value_guard() -> None:
  """Wraps `ArrayImpl._value` (the host copy of an array) to raise while the guard is on."""
  read = array_lib.ArrayImpl._value.fget

  def guarded(self):
    if getattr(_GUARD, 'on', False):
      raise AssertionError(f'device-to-host transfer of {self.aval} outside a log step')
    return read(self)

  array_lib.ArrayImpl._value = property(guarded)


@contextlib.contextmanager
def no_device_to_host():
  """Refuses device-to-host transfers inside the block (module docstring)."""
  before = getattr(_GUARD, 'on', False)
  _GUARD.on = True
  try:
    with jax.transfer_guard_device_to_host('disallow_explicit'):
      yield
  finally:
    _GUARD.on = before


def main(shards: str, workdir: str, batching: str, resident: str = 'auto') -> None:
  from issf_jax.train import loop
  from tests.conftest import TINY_TRAIN_OVERRIDES, synthetic_config

  settings = {
    **TINY_TRAIN_OVERRIDES, 'data.batching': batching, 'train.num_epochs': 2,
    'train.memory_init_epoch': 0, 'train.log_every_steps': 1000, 'data.resident': resident,
    'data.micro_buckets': 3,  # 'micro': a few programs a phase are enough to be guarded
  }  # fmt: skip
  config = synthetic_config(shards, settings)
  guarded = []

  def guard():
    guarded.append(1)
    return no_device_to_host()

  _install_value_guard()
  # The guard is not vacuous here: it refuses a read of a value on the mesh's devices.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('d',))
  value = jax.device_put(
    jnp.arange(3.0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  for read in (float, lambda x: np.asarray(x) if len(jax.devices()) > 1 else x.tolist()):
    with no_device_to_host():
      try:
        read(value[1] + 1)
      except Exception as err:  # noqa: BLE001  (AssertionError, or jax's runtime error)
        assert 'transfer' in str(err), err
      else:
        raise AssertionError('the guard let a device-to-host transfer through')
  trainer = loop.Trainer(config, workdir, step_guard=guard)
  assert trainer.config.data.batching == batching
  trainer.run()
  # 'auto' keeps this tiny set resident on CPU; 'off' feeds the steps from tf.data.
  assert trainer.resident is (resident != 'off'), (trainer.resident, resident)
  print(f'guarded steps: {len(guarded)}', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
