"""`data.batching = 'auto'` (the default): decided per backend when the trainer starts.

'micro' on the CPU where micro-batches can serve the config, 'exact' on GPU/TPU, and a resumed
run keeps the mode its config.json records (issf_jax/train/loop.py `resolve_batching`).
"""

from __future__ import annotations

import json
import shutil

import jax
import pytest

from issf_jax import config_validation
from issf_jax.train import loop
from tests.conftest import (
  TINY_TRAIN_OVERRIDES,
  run_python,
  subprocess_env,
  synthetic_config,
  train_args,
)


def _config(**overrides):
  config = synthetic_config('', {**TINY_TRAIN_OVERRIDES, 'data.batching': 'auto'})
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  return config


@pytest.mark.parametrize(
  'backend, devices, overrides, want',
  [
    ('cpu', 1, {}, 'micro'),
    ('gpu', 1, {}, 'exact'),
    ('tpu', 1, {}, 'exact'),
    ('cpu', 8, {}, 'exact'),  # micro-batches of 8 (one per device) do not divide batches of 4
    ('cpu', 8, {'train.batch_size': 8}, 'micro'),
    ('cpu', 8, {'data.micro_batch_size': 2}, 'micro'),
    ('cpu', 1, {'data.mode': 'activitynet'}, 'exact'),  # every video holds t_s snippets
    ('cpu', 1, {'memory.mode': 'batched'}, 'exact'),  # micro needs the sequential memory
    ('cpu', 1, {'data.batching': 'exact'}, 'exact'),  # set: never changed
    ('gpu', 1, {'data.batching': 'micro'}, 'micro'),
  ],
)  # fmt: skip
def test_auto_is_decided_per_backend(backend, devices, overrides, want):
  got, why = loop.resolve_batching(_config(**overrides), devices, backend=backend)
  assert got == want, why


def test_a_resumed_auto_run_keeps_its_mode():
  config = _config()
  assert loop.resolve_batching(config, 1, backend='cpu', stored='exact')[0] == 'exact'
  assert loop.resolve_batching(config, 1, backend='gpu', stored='micro')[0] == 'micro'
  # A mode set in the config is the config's, whatever the run had (the resume check decides).
  assert loop.resolve_batching(_config(**{'data.batching': 'exact'}), 1, stored='micro')[0] == (
    'exact'
  )


def test_validation_accepts_auto_and_refuses_other_words():
  assert not list(config_validation.problems(_config()))
  [(key, value, _)] = config_validation.problems(_config(**{'data.batching': 'sorted'}))
  assert (key, value) == ('data.batching', 'sorted')


def test_resolved_config_is_a_copy():
  config = _config()
  resolved = loop.resolved_config(config)
  assert config.data.batching == 'auto'
  assert resolved.data.batching == ('micro' if jax.default_backend() == 'cpu' else 'exact')
  assert loop.resolved_config(resolved) is resolved  # nothing to decide


def test_a_run_from_before_auto_resumes_as_it_was(tmp_path, tiny_shards, tiny_run):
  """tiny_run's config.json says 'exact': resumed with the default 'auto', it stays 'exact' and
  the resume check sees no change."""
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  config = synthetic_config(tiny_shards, {**TINY_TRAIN_OVERRIDES, 'data.batching': 'auto'})
  trainer = loop.Trainer(config, str(workdir))
  try:
    assert trainer.config.data.batching == 'exact' and trainer.config_changes == {}
    assert config.data.batching == 'auto'
  finally:
    trainer.checkpointer.close()
    trainer._lock.close()


def test_auto_run_on_cpu_is_micro_recorded_and_resumed(tmp_path, tiny_shards, jax_cache_dir):
  """A one-step 'auto' run trains micro-batches and records 'micro' in config.json; resumed
  with 'auto' it goes on (no config change); resumed with 'exact' it is refused."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the CPU decision')
  workdir = tmp_path / 'run'
  env = subprocess_env(jax_cache_dir)
  # One micro-batch per step; the jittable tie orders, so that the resumed run loads the
  # programs of the first from the compilation cache (host callbacks are never cached).
  # Three length buckets: fewer programs to compile, the decision is the same.
  auto = {
    'data.batching': 'auto', 'train.batch_size': 1, 'model.saliency_tie_order': 'index',
    'memory.merge_tie_order': 'index', 'data.micro_buckets': 3,
  }  # fmt: skip

  def run(steps, **extra):
    args = train_args(workdir, tiny_shards, {**auto, 'train.max_steps': steps, **extra})
    return run_python(args, env, check=not extra)

  first = run(1)
  assert "data.batching 'auto' -> 'micro' (the cpu backend)" in first.stderr, first.stderr[-3000:]
  config_json = json.loads((workdir / 'config.json').read_text())
  assert config_json['data']['batching'] == 'micro'
  second = run(2)
  assert "data.batching 'auto' -> 'micro' (the run's config.json)" in second.stderr
  assert 'Resumed from step 1' in second.stderr
  config_json['train']['max_steps'] = 2  # the only change (a safe key)
  assert json.loads((workdir / 'config.json').read_text()) == config_json
  refused = run(3, **{'data.batching': 'exact'})
  assert refused.returncode == 2 and 'data.batching "micro" -> "exact"' in refused.stderr
