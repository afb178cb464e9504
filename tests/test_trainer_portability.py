"""Checkpoint portability (issue 6): a run trained on 8 simulated host devices (global batch 8,
one video per device) restores onto the 1 device of this process, and `launch.evaluate` (1
device) reproduces the 8-device trainer's own evaluation exactly."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from issf_jax.train import restore, run_dir
from tests.conftest import run_python, subprocess_env, train_args

# 24 videos / batch 8 = 3 steps: one epoch, the memory built at its end, evaluated and saved.
EIGHT_DEVICE_OVERRIDES = {
  'train.batch_size': 8,
  'train.num_epochs': 1,
  'train.memory_init_epoch': 0,
  'train.eval_every_epochs': 1,
}
STEP = 3


@pytest.fixture(scope='module')
def eight_device_run(tmp_path_factory, tiny_shards, jax_cache_dir):
  workdir = tmp_path_factory.mktemp('eight_devices') / 'run'
  env = subprocess_env(jax_cache_dir, num_devices=8)
  run_python(train_args(workdir, tiny_shards, EIGHT_DEVICE_OVERRIDES), env)
  return workdir


def _saved_mesh_sizes(step_dir) -> set[int]:
  with open(os.path.join(step_dir, 'state', '_sharding')) as f:
    shardings = [json.loads(v) for v in json.load(f).values()]
  return {len(s['device_mesh']['mesh']) for s in shardings}


def test_eight_device_checkpoint_restores_on_one_device(eight_device_run):
  step_dir = eight_device_run / 'checkpoints' / str(STEP)
  assert _saved_mesh_sizes(step_dir) == {8}  # really written from an 8-device mesh
  assert jax.local_device_count() == 1
  config = run_dir.load_config(str(eight_device_run))
  state, step = restore.restore_state(config, str(eight_device_run / 'checkpoints'), 'latest')
  assert step == STEP and int(state.step) == STEP
  assert bool(state.memory.initialized) and np.asarray(state.memory.filled).any()
  for leaf in jax.tree.leaves(state):
    assert len(leaf.sharding.device_set) == 1
    assert np.isfinite(np.asarray(leaf, np.float64)).all()


def test_one_device_eval_reproduces_eight_device_trainer(eight_device_run, tmp_path, jax_cache_dir):
  workdir = tmp_path / 'run'
  shutil.copytree(eight_device_run, workdir)
  name = os.path.join('predictions', f'step_{STEP}.json')
  with open(workdir / name) as f:
    trainer_predictions = json.load(f)  # made inside the 8-device trainer
  proc = run_python(
    ['-m', 'launch.evaluate', '--workdir', workdir, '--checkpoint', 'latest'],
    subprocess_env(jax_cache_dir),
  )
  assert f'Checkpoint step {STEP} (latest)' in proc.stdout
  with open(workdir / name) as f:
    assert json.load(f) == trainer_predictions
  with open(workdir / 'eval' / f'step_{STEP}.json') as f:
    result = json.load(f)
  with open(workdir / 'metrics.jsonl') as f:
    logged = [json.loads(line) for line in f]
  logged = [r for r in logged if 'eval/average_mAP' in r][-1]
  assert logged['step'] == STEP
  assert result['average_mAP'] == pytest.approx(logged['eval/average_mAP'], abs=1e-6)
