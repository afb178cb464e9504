"""Exact resume after a real SIGKILL, and the guards on resume (issues 6 and 10).

The reference is `tiny_run` (conftest): 2k = 24 steps uninterrupted, memory built at step 12.
The interrupted run is the same command, SIGKILLed once it has logged step 18 (after its step-k,
k = 12, checkpoint is on disk; the step-18 checkpoint may or may not be final), then started
again with the same workdir. Every checkpoint both runs hold (all of them: keep_last = 10) must
restore to bitwise the same TrainState: params, opt_state, memory, step; and metrics.jsonl and
TensorBoard must hold each logged step once, as the uninterrupted run's do.
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
from issf_jax.train import restore, run_dir
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
  config = run_dir.load_config(str(workdir))
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


def read_metrics(workdir) -> list[dict]:
  """metrics.jsonl, parsed strictly (a bare NaN or Infinity is not JSON)."""

  def refuse(token):
    raise ValueError(f'non-strict JSON token {token}')

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line, parse_constant=refuse) for line in f]


def logged_steps(workdir) -> set[int]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return set()
  steps = set()
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # being written
      if any(k.startswith('train/') for k in record):
        steps.add(record['step'])
  return steps


def tensorboard_points(workdir) -> list[tuple[str, int]]:
  """Every (tag, step) scalar written to the run's TensorBoard event files."""
  from issf_common.tensorflow_cpu import tf

  points = []
  for path in sorted((workdir / 'tensorboard').glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      points += [(v.tag, event.step) for v in event.summary.value]
  return points


def _kill_after_log(workdir, shards, env, log_path, step: int) -> list[int]:
  """Starts the trainer, SIGKILLs it once it has logged `step`'s train metrics; returns the
  final checkpoint steps left on disk."""
  args = [sys.executable, *map(str, train_args(workdir, shards))]
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(args, cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 480
    while step not in logged_steps(workdir):
      if proc.poll() is not None:
        pytest.fail(f'trainer exited ({proc.returncode}) before logging step {step}:\n'
                    f'{open(log_path).read()[-4000:]}')  # fmt: skip
      if time.monotonic() > deadline:
        pytest.fail(f'step {step} not logged after 480 s:\n{open(log_path).read()[-4000:]}')
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  # After the step-18 log the run still has to save, take 6 steps, evaluate and save: far
  # longer than the 20 ms poll, so the kill lands mid-run.
  assert proc.returncode == -signal.SIGKILL, (
    f'the trainer finished before the kill (rc {proc.returncode}); nothing was interrupted'
  )
  return finalized_steps(workdir)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, tiny_shards, tiny_run, jax_cache_dir):
  env = subprocess_env(jax_cache_dir)
  workdir = tmp_path / 'killed'
  left = _kill_after_log(workdir, tiny_shards, env, tmp_path / 'first.log', K + 6)
  resume_from = max(left)
  print(f'killed with checkpoints {left} on disk; resuming from {resume_from}')
  assert K <= resume_from < TOTAL, left  # the kill interrupted the run after the memory init
  # What a kill in the middle of a write leaves: a torn last line.
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 19, "train/lo')

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

  # One record per logged step (train at each epoch end, eval at 12 and 24), with the
  # uninterrupted run's values: the records of the redone steps were dropped, not repeated.
  records, expected = read_metrics(workdir), read_metrics(tiny_run)
  kinds = [(r['step'], next(k for k in r if k != 'step').split('/')[0]) for r in records]
  assert kinds == [(6, 'train'), (12, 'train'), (12, 'eval'), (18, 'train'), (24, 'train'),
                   (24, 'eval')], kinds  # fmt: skip
  assert records == expected
  points = tensorboard_points(workdir)
  assert len(points) == len(set(points))  # each (tag, step) once
  assert set(points) == {(k, r['step']) for r in records for k in r if k != 'step'}


def test_resume_with_a_changed_learning_rate_is_refused(tmp_path, tiny_shards, tiny_run,
                                                       jax_cache_dir):  # fmt: skip
  """A resume whose config changes the training stops with one line naming the keys, and
  leaves the run as it was; --allow_config_change resumes, keeping the old config.json."""
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  before = (workdir / 'config.json').read_text()
  metrics_before = (workdir / 'metrics.jsonl').read_text()
  env = subprocess_env(jax_cache_dir)
  args = train_args(workdir, tiny_shards, {'optim.lr': 0.001, 'train.log_every_steps': 3})
  proc = run_python(args, env, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  [line] = [line for line in proc.stderr.splitlines() if 'error:' in line]
  assert line.startswith('issf-train: error: ') and 'config.json' in line, line
  assert 'optim.lr 0.0001 -> 0.001' in line and 'log_every_steps' not in line  # a safe key
  assert '--allow_config_change' in line
  assert (workdir / 'config.json').read_text() == before
  assert (workdir / 'metrics.jsonl').read_text() == metrics_before
  assert finalized_steps(workdir) == [6, 12, 18, 24]

  proc = run_python(args + ['--allow_config_change'], env)
  assert (workdir / f'config.before_step_{TOTAL}.json').read_text() == before
  with open(workdir / 'config.json') as f:
    assert json.load(f)['optim']['lr'] == 0.001
  assert 'optim.lr' in proc.stderr  # said, not silent
  assert (workdir / 'metrics.jsonl').read_text() == metrics_before  # nothing left to train


def test_config_check_keys():
  stored = {'optim': {'lr': 1e-4}, 'train': {'seed': 2, 'log_every_steps': 20}, 'eval': {}}
  same = run_dir.config_changes(stored, stored)
  assert same == {}
  current = {'optim': {'lr': 1e-4}, 'train': {'seed': 3, 'log_every_steps': 5},
             'eval': {'extra_protocols': ['official']}}  # fmt: skip
  changes = run_dir.config_changes(stored, current)
  assert changes == {
    'eval.extra_protocols': ('<absent>', ['official']),
    'train.log_every_steps': (20, 5),
    'train.seed': (2, 3),
  }
  assert [k for k in changes if not run_dir.is_safe(k)] == ['train.seed']
  # Keys added later: absent from a stored config means what the runs before them did.
  current = {**stored, 'data': {'micro_buckets': 16}, 'model': {'matmul_dtype': 'float32'}}
  assert run_dir.config_changes(stored, current) == {'data.micro_buckets': (0, 16)}
  current['data']['micro_buckets'] = 0
  assert run_dir.config_changes(stored, current) == {}


def test_every_split_is_verified_before_the_first_step(tmp_path, tiny_shards):
  """A corrupted eval shard stops the trainer before it builds anything, naming the shard."""
  from data_pipelines import source
  from issf_jax.train import loop

  shards = tmp_path / 'shards'
  shutil.copytree(tiny_shards, shards)
  [test_shard] = shards.glob('test-*.tfrecord')
  data = bytearray(test_shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  test_shard.write_bytes(bytes(data))
  config = synthetic_config(shards, TINY_TRAIN_OVERRIDES)
  with pytest.raises(source.ChecksumError, match=test_shard.name):
    loop.Trainer(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_a_config_built_in_code_is_validated(tmp_path, tiny_shards):
  """Library callers skip launch/cli.py's check: the Trainer itself refuses a value out of its
  range (a dropout of 1.5 would train to exit 0), naming the key, before writing anything."""
  from issf_common import errors
  from issf_jax.train import loop

  config = synthetic_config(tiny_shards, TINY_TRAIN_OVERRIDES)
  config.model.dropout = 1.5
  with pytest.raises(errors.ConfigError, match=r'model\.dropout=1\.5'):
    loop.Trainer(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


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
