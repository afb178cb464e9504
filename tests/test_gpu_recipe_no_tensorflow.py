"""benchmarks/gpu_recipe.py where TensorFlow cannot be imported (the GPU machines' fixed image).

The recipe runs at tiny scale in a subprocess whose sitecustomize (tests/no_tensorflow/) hides
tensorflow, tensorflow_datasets and msgspec: it prepares its shards, trains with the training
features resident on the device, builds the memory, evaluates and checkpoints. The shards it
wrote are the bytes TensorFlow writes, and every batch it was fed (training steps, evaluation,
memory initialisation) is bitwise the tf.data pipeline's on those shards (this process has
TensorFlow). benchmarks/device_run.sh --dry_run prints the command that runs it on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np

from tests.conftest import REPO_DIR, run_python, subprocess_env

BLOCKER = REPO_DIR / 'tests' / 'no_tensorflow'


def _groups(batch) -> list:
  return batch if isinstance(batch, list) else [batch]


def _assert_bitwise(name: str, got: dict, want: dict) -> None:
  assert set(got) == set(want), (name, sorted(got), sorted(want))
  for key, value in want.items():
    value = np.asarray(value)
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, (name, key)
    assert got[key].tobytes() == value.tobytes(), (name, key)


def test_gpu_recipe_without_tensorflow(tmp_path, jax_cache_dir, tiny_shards):
  from benchmarks import gpu_recipe
  from data_pipelines import input_pipeline
  from issf_jax.train import loop

  env = subprocess_env(jax_cache_dir)
  env['PYTHONPATH'] = os.pathsep.join([str(BLOCKER), env['PYTHONPATH']])
  work, out, dump = tmp_path / 'work', tmp_path / 'report.json', tmp_path / 'batches.npz'
  # 2 epochs: the memory after epoch 1, then an evaluation and a checkpoint at the end.
  args = ['-m', 'benchmarks.gpu_recipe', '--scale', 'tiny', '--epochs', '2', '--drift_steps', '0']
  args += ['--parity_dir', '', '--annotations', '', '--resident', 'on', '--workdir', work]
  args += ['--json', out, '--dump_batches', dump, '--dump_steps', '12']
  proc = run_python(args, env)
  report = json.loads(out.read_text())

  # Nothing of TensorFlow there: the numpy pipeline for the host batches, resident training.
  assert report['env']['tensorflow_importable'] is False
  assert report['input'] == {'pipeline': 'numpy_pipeline', 'resident': True}
  assert 'numpy_pipeline pipeline' in proc.stdout
  recipe = report['recipe']
  assert (recipe['epochs'], recipe['steps_per_epoch']) == (2, 6)
  assert (recipe['steps_warmup'], recipe['steps_memory']) == (6, 6)
  assert (recipe['memory_inits'], recipe['evals'], recipe['checkpoints']) == (1, 1, 1)
  assert {'train_warmup', 'memory_init', 'train_memory', 'eval', 'checkpoint'} <= set(
    recipe['phase_wall_s']
  )
  assert np.isfinite(recipe['final_average_mAP'])
  run_dir = work / 'recipe'
  assert (run_dir / 'checkpoints' / '12').is_dir()
  records = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if 'train/loss' in r] == [6, 12]

  # The TensorBoard events it wrote without TensorFlow hold the same scalars.
  from tensorboard.backend.event_processing import event_accumulator

  events = event_accumulator.EventAccumulator(str(run_dir / 'tensorboard'))
  events.Reload()
  losses = [(e.step, e.value) for e in events.Scalars('train/loss')]
  assert losses == [(r['step'], np.float32(r['train/loss'])) for r in records if 'train/loss' in r]

  # Its shards are the bytes TensorFlow writes (same synthetic data, prepared with TF here).
  shards = work / 'data' / 'shards'
  ours = input_pipeline.load_manifest(str(shards))['shards']
  assert ours == input_pipeline.load_manifest(str(tiny_shards))['shards']

  # Every batch it was fed is the tf.data pipeline's, bitwise.
  got = np.load(dump)
  config = gpu_recipe.recipe_config(str(shards), 'tiny', gpu_recipe.RECIPE_EPOCHS)
  options = loop.batching_options(config, 1)
  host = input_pipeline.Host()
  train = input_pipeline.create_train_iterator(str(shards), options, host=host)
  for i in range(12):  # 2 epochs
    groups = _groups(next(train))
    for j, want in enumerate(groups):
      prefix = f'train/{i}' if len(groups) == 1 else f'train/{i}.{j}'
      keys = {k[len(prefix) + 1 :] for k in got.files if k.startswith(prefix + '/')}
      # The resident batches carry the train step's keys ('valid', 'position'), not 'length'.
      assert keys == {'features', 'mask', 'labels', 'video_index', 'valid', 'position'}
      _assert_bitwise(prefix, {k: got[f'{prefix}/{k}'] for k in keys - {'valid', 'position'}},
                      {k: v for k, v in want.items() if k != 'length'})  # fmt: skip
      assert got[f'{prefix}/valid'].all()
  train.close()
  data = config.data
  for name, subset in (('test', data.eval_subset), ('train_eval', 'train')):
    eval_options = input_pipeline.EvalOptions.from_data_config(data, data.eval_batch_size)
    batches = list(
      input_pipeline.create_eval_iterator(str(shards), eval_options, subset=subset, host=host)
    )
    assert len(batches) == len({k.split('/')[1] for k in got.files if k.startswith(name + '/')})
    for i, want in enumerate(batches):
      prefix = f'{name}/{i}'
      keys = {k[len(prefix) + 1 :] for k in got.files if k.startswith(prefix + '/')}
      _assert_bitwise(prefix, {k: got[f'{prefix}/{k}'] for k in keys}, want)


def test_device_run_dry_run(tmp_path):
  """The GPU machine's command: wheels installed with --no-index --target, PYTHONPATH set, the
  recipe under a time limit, its JSON into $OUT; --dry_run prints it and runs nothing."""
  env = dict(os.environ, OUT=str(tmp_path / 'out'))
  proc = subprocess.run(
    ['bash', 'benchmarks/device_run.sh', '--dry_run'], cwd=REPO_DIR, env=env,
    capture_output=True, text=True, timeout=60,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  pip = next(line for line in lines if ' pip install ' in line)
  assert '--no-index' in pip and '--target' in pip and 'benchmarks/wheels/' in pip
  run = next(line for line in lines if '-m benchmarks.gpu_recipe' in line)
  assert run.split()[0] == 'timeout' and f'--json {tmp_path}/out/' in run
  limit = int(run.split()[1].rstrip('s'))
  assert 0 < limit <= 420  # leaves room for a rerun in the 10 minutes of a device call
  assert any(line.startswith('export PYTHONPATH=') for line in lines)
  assert not (tmp_path / 'out').exists()  # a dry run writes nothing


def test_metrics_writer_without_tensorflow_resumes_its_events(tmp_path, monkeypatch):
  """The TensorBoard events written without TensorFlow: read by TensorFlow's own reader (its
  crcs checked), rebuilt on resume from the records kept, like tf.summary's."""
  from issf_common import tensorflow_optional
  from issf_common.tensorflow_cpu import tf
  from issf_jax.train import metrics_writer

  def points():
    out = []
    for path in sorted((tmp_path / 'tensorboard').glob('events.out.tfevents.*')):
      for event in tf.compat.v1.train.summary_iterator(str(path)):
        out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out

  monkeypatch.setattr(tensorflow_optional, 'tensorflow', lambda: None)
  writer = metrics_writer.MetricsWriter(str(tmp_path), resume_step=0)
  for step in (1, 2, 3):
    writer.write(step, {'train/loss': 1.0 / step, 'train/nan': float('nan')})
  writer.close()
  assert [(t, s) for t, s, _ in points() if t == 'train/loss'] == [
    ('train/loss', s) for s in (1, 2, 3)
  ]
  writer = metrics_writer.MetricsWriter(str(tmp_path), resume_step=2)  # step 3 is redone
  writer.write(3, {'train/loss': 0.25, 'train/nan': 0.0})
  writer.close()
  got = points()
  assert [(t, s, v) for t, s, v in got if t == 'train/loss'] == [
    ('train/loss', 1, 1.0), ('train/loss', 2, 0.5), ('train/loss', 3, 0.25)
  ]  # fmt: skip
  assert [np.isnan(v) for t, s, v in got if t == 'train/nan'] == [True, True, False]


def test_the_training_path_does_not_import_tensorflow_at_import(jax_cache_dir):
  """Where TensorFlow is installed, importing the trainer, the evaluator, the checkpoints, the
  config check, the configs, the data modules they use and the recipe loads none of it."""
  code = """
import importlib, pkgutil, sys
import configs, issf_jax.train
names = ['issf_jax.train.' + m.name for m in pkgutil.iter_modules(issf_jax.train.__path__)]
names += ['configs.' + m.name for m in pkgutil.iter_modules(configs.__path__)]
names += ['issf_jax.checkpointing', 'issf_jax.config_validation', 'issf_jax.sharding',
          'data_pipelines.input_pipeline', 'data_pipelines.resident', 'data_pipelines.shards',
          'data_pipelines.numpy_pipeline', 'data_pipelines.pipelines', 'data_pipelines.prepare',
          'data_pipelines.synthetic', 'benchmarks.gpu_recipe']
for name in names:
  importlib.import_module(name)
  assert 'tensorflow' not in sys.modules, name
print(len(names), 'modules')
"""
  proc = run_python(['-c', code], subprocess_env(jax_cache_dir))
  assert int(proc.stdout.split()[0]) > 20
