"""No host synchronisation in the train loop outside the log steps.

The trainer runs its steps (both batching modes, both phases) with device-to-host transfers
refused in every step that is not a log step (tests/transfer_guard_check.py: JAX's transfer
guard, and on the CPU a guard on the host copy of an array); the log steps (epoch ends here)
bring the metrics to the host as usual. One device for both modes; two devices for 'exact',
where an `np.asarray` read is seen too (on one CPU device it bypasses every Python hook).
"""

from __future__ import annotations

import pytest

from tests.conftest import run_python, subprocess_env


# Resident features (the CPU default for a set this size) and, with 'off', the tf.data path.
@pytest.mark.parametrize(
  'batching, devices, resident',
  [('exact', 1, 'auto'), ('micro', 1, 'auto'), ('exact', 2, 'auto'), ('micro', 1, 'off')],
)
def test_no_transfer_outside_log_steps(
  batching, devices, resident, tmp_path, tiny_shards, jax_cache_dir
):
  env = subprocess_env(jax_cache_dir, num_devices=devices if devices > 1 else None)
  args = ['-m', 'tests.transfer_guard_check', tiny_shards, tmp_path / 'run', batching, resident]
  proc = run_python(args, env)
  # 12 steps; steps 6 and 12 end an epoch (log steps), the other 10 ran guarded.
  assert 'guarded steps: 10' in proc.stdout, proc.stdout[-2000:]
  assert (tmp_path / 'run' / 'checkpoints').is_dir()
