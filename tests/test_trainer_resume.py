"""Exact resume after a real SIGKILL, and the model-shape guard on resume (issue 6).

The reference is `tiny_run` (conftest): 2k = 24 steps uninterrupted, memory built at step 12.
The interrupted run is the same command, SIGKILLed once its step-k (k = 12) checkpoint is on
disk, then started again with the same workdir. Every checkpoint both runs hold (all of them:
keep_last = 10) must restore to bitwise the same TrainState: params, opt_state, memory, step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from issf_jax import checkpointing
from issf_jax.train import restore
from tests.conftest import (
  REPO_DIR,
  TINY_STEPS_PER_EPOCH,
  TINY_TRAIN_OVERRIDES,
  run_python,
  subprocess_env,
  synthetic_config,
  train_args,
)

K = 2 * TINY_STEPS_PER_EPOCH  # the kill comes after this checkpoint (= the memory init step)
TOTAL = TINY_TRAIN_OVERRIDES['train.num_epochs'] * TINY_STEPS_PER_EPOCH  # 2k


def finalized_steps(workdir) -> list[int]:
  """Steps whose checkpoint directory is final (Orbax renames `<step>.orbax-checkpoint-tmp-*`
  to `<step>` as the very last act of a save)."""
  ckpt = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt):
    return []
  return sorted(int(name) for name in os.listdir(ckpt) if name.isdigit())


def restore_leaves(workdir, step: int) -> dict:
  config = restore.load_config(str(workdir))
  state, got = restore.restore_state(config, os.path.join(workdir, 'checkpoints'), step)
  assert got == step
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def assert_states_bitwise_equal(a: dict, b: dict, what: str) -> None:
  assert a.keys() == b.keys(), what
  groups = {k.split('.')[1].split('[')[0] for k in a}
  assert {'params', 'opt_state', 'memory', 'step'} <= groups, groups
  for key in a:
    assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (what, key)
    assert np.array_equal(a[key], b[key]), f'{what}: {key} differs'


def _kill_after_checkpoint(workdir, shards, env, log_path, k: int) -> list[int]:
  """Starts the trainer, SIGKILLs it once the step-k checkpoint is final; returns the final
  checkpoint steps left on disk."""
  args = [sys.executable, *map(str, train_args(workdir, shards))]
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(args, cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
  try:
    target = os.path.join(workdir, 'checkpoints', str(k))
    deadline = time.monotonic() + 480
    while not os.path.isdir(target):
      if proc.poll() is not None:
        pytest.fail(f'trainer exited ({proc.returncode}) before checkpoint {k}:\n'
                    f'{open(log_path).read()[-4000:]}')  # fmt: skip
      if time.monotonic() > deadline:
        pytest.fail(f'no checkpoint {k} after 480 s:\n{open(log_path).read()[-4000:]}')
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  # After step k the run still has to load the memory-phase step, take 12 steps, save twice
  # and evaluate: far longer than the 20 ms poll, so the kill lands mid-run.
  assert proc.returncode == -signal.SIGKILL, (
    f'the trainer finished before the kill (rc {proc.returncode}); nothing was interrupted'
  )
  return finalized_steps(workdir)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, tiny_shards, tiny_run, jax_cache_dir):
  env = subprocess_env(jax_cache_dir)
  workdir = tmp_path / 'killed'
  left = _kill_after_checkpoint(workdir, tiny_shards, env, tmp_path / 'first.log', K)
  resume_from = max(left)
  print(f'killed with checkpoints {left} on disk; resuming from {resume_from}')
  assert K <= resume_from < TOTAL, left  # the kill interrupted the run after the memory init

  second = run_python(train_args(workdir, tiny_shards), env)
  assert f'Resumed from step {resume_from} ' in second.stderr, second.stderr[-3000:]
  assert finalized_steps(workdir)[-1] == TOTAL

  reference = finalized_steps(tiny_run)
  assert reference == [6, 12, 18, 24]
  common = sorted(set(reference) & set(finalized_steps(workdir)))
  assert common == reference, common
  for step in common:
    assert_states_bitwise_equal(
      restore_leaves(tiny_run, step), restore_leaves(workdir, step), f'step {step}'
    )
  final = restore_leaves(workdir, TOTAL)
  assert final['.step'] == TOTAL
  assert final['.memory.initialized']  # the resumed half ran in the memory phase

  # The final evaluation of both runs saw the same parameters.
  for name in (f'predictions/step_{TOTAL}.json',):
    with open(tiny_run / name) as f, open(workdir / name) as g:
      assert json.load(f) == json.load(g)


def test_resume_with_another_embed_dim_fails_clearly(tmp_path, tiny_shards, tiny_run):
  """launch.train's resume path (train_and_evaluate) refuses a checkpoint of another shape,
  and the failed attempt leaves the run's config.json (used by issf-eval) untouched."""
  from issf_jax.train import loop

  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  with open(workdir / 'config.json') as f:
    before = f.read()
  config = synthetic_config(tiny_shards, {**TINY_TRAIN_OVERRIDES, 'model.embed_dim': 32})
  with pytest.raises(checkpointing.CheckpointMismatchError, match='embed_dim') as err:
    # allow_config_change: past the config check, which would refuse the change first.
    loop.train_and_evaluate(config, str(workdir), allow_config_change=True)
  assert 'checkpoint 64 vs config 32' in str(err.value)
  with open(workdir / 'config.json') as f:
    assert f.read() == before
  assert finalized_steps(workdir) == finalized_steps(tiny_run)


@pytest.mark.parametrize('field,value', [('brm_reduction', 8), ('use_brm', False)])
def test_restore_with_another_model_shape_fails_clearly(tiny_shards, tiny_run, field, value):
  """restore_state (issf-eval's path) raises CheckpointMismatchError naming the field."""
  config = synthetic_config(tiny_shards, {**TINY_TRAIN_OVERRIDES, f'model.{field}': value})
  with pytest.raises(checkpointing.CheckpointMismatchError, match=field):
    restore.restore_state(config, str(tiny_run / 'checkpoints'), 'latest')
