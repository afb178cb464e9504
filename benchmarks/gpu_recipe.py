"""One accelerator: the full THUMOS14-shaped recipe, timed, and what TF32 matmuls change.

  python -m benchmarks.gpu_recipe [--scale full|tiny] [--epochs auto|N] [--json OUT] \
      [--annotations W-TALC_ANNOTATION_DIR] [--parity_dir RSKP_PARITY_DIR] [--drift_steps 20]

Data: the synthetic generator (`data_pipelines/synthetic.py`) with the real THUMOS14 structure
when `--annotations` names a W-TALC annotation folder (default: the repository's copy under
`data_pipelines/annotations/thumos14` when it is there; else the parametric plan fitted to
THUMOS14), D = 2048, 200 train + 212 test videos at scale full, prepared by
`data_pipelines.prepare.convert` into a temporary folder. Its time is reported apart (setup).

Recipe: `configs/thumos14.py` (the paper's hyperparameters: batch 10, memory built after epoch
100 of 180, evaluation and a checkpoint every 5 epochs, `rskp` protocol) run by the project's
trainer (`issf_jax.train.loop.Trainer`: its train steps, memory-initialisation pass, evaluator
and checkpoints), timed through its `timer` hook: wall time per phase (train steps before / after
the memory, memory init, evaluations, checkpoints) and the JAX compile time (jax.monitoring's
trace, lowering and backend-compile events) of each phase, so that the steady step time excludes
compilation.
`--epochs auto` (the default) first runs a probe (4 epochs, memory after epoch 1, evaluated at 2
and 4), projects the 180-epoch recipe from it, and runs the real 180 epochs when the projection
fits what is left of `--time_limit_s` (450 s, less a `--reserve_s` of 90 s for the precision
and parity parts); otherwise it reports the projection, stated as an extrapolation. `--epochs N`
runs N epochs (memory at N * 100 // 180) and extrapolates to 180 when N < 180.

Precision: `jax_default_matmul_precision` 'float32' against 'tensorfloat32' (on recent NVIDIA
GPUs JAX's default for float32 matmuls is TF32; `config.train.matmul_precision` picks it for a
run). For each: the steady time of `--drift_steps` warm-up train steps from the same initial
state on the same batches, and the parameters they reach; the drift is the norm of the parameter
difference between the two, relative to the norm of the float32 run's total update (and a second
float32 run gives the run-to-run floor). With `--parity_dir` (the RSKP parity goldens,
`parity_case*.npz` + weights), the largest absolute error of the base branch's outputs against
RSKP's PyTorch float32 ones under each precision (the test tolerance is 1e-5).

`--scale tiny` (D = 64, 24 + 16 synthetic videos, batch 4) runs on a CPU in about a minute; the
test suite runs it (`--time_limit_s 0`: the probe, then the extrapolation). Prints one table;
`--json OUT` writes the same numbers (keys: see `main`), rewritten after each part.
The persistent compilation cache is the commands' (`--compilation_cache DIR|off`, default
$JAX_COMPILATION_CACHE_DIR or ~/.cache/issf-jax/xla: issf_jax/compile_cache.py); a warm one
turns the compile times into load times, and the JSON names the folder ('compilation_cache').

Install with the accelerator build of jax, one line (CUDA and cuDNN come as wheels; needs network):
  pip install -e '.[cuda12]'    # '.[cuda13]' with a CUDA 13 driver; '.[tpu]' on a Cloud TPU VM

On the GPU machine: the first thing to run there is `bash benchmarks/device_run.sh` from the
repository root (not yet run on a GPU). That machine's fixed image (Python 3.12, jax 0.11.2 with
its CUDA 13 plugin, flax, optax, orbax-checkpoint, chex, numpy, etils, absl-py, protobuf,
tensorboard, scipy, ...) has no TensorFlow, no tensorflow-datasets, no ml-collections and no
network, and the recipe runs there as it is: the shards are written and read without TensorFlow
(`data_pipelines/tfrecord.py`, the same bytes), the training features are resident on the GPU
(`data.resident` 'auto') and the evaluation and memory-initialisation batches come from
`data_pipelines/numpy_pipeline.py` (bitwise the tf.data pipeline's), TensorBoard events are
written with tensorboard's own protos. Wheels brought along (pure Python, kept in the git-ignored
benchmarks/wheels/, filled here by `bash benchmarks/device_run.sh --fetch_wheels` and carried to
the device): ml_collections-1.1.0-py3-none-any.whl (76,707 bytes; its needs absl-py and PyYAML
are in the image). msgspec, also absent there, is optional (predictions files are read by the
stdlib instead). Where TensorFlow is installed, tf.data stays the host input path
(`data_pipelines/pipelines.py` chooses). tests/test_gpu_recipe_no_tensorflow.py runs this script at
tiny scale where tensorflow, tensorflow_datasets and msgspec cannot be imported and compares the
batches it fed (`--dump_batches`) with the tf.data pipeline's, bitwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import platform
import statistics
import tempfile
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ANNOTATIONS = REPO / 'data_pipelines' / 'annotations' / 'thumos14'
DEFAULT_PARITY = REPO / 'tests' / 'testdata' / 'rskp_parity'
RECIPE_EPOCHS = 180
PRECISIONS = ('float32', 'tensorfloat32')
COMPILE_EVENTS = (
  '/jax/core/compile/jaxpr_trace_duration',
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
  '/jax/core/compile/backend_compile_duration',
)
# Scale: (synthetic scale, feature/embedding dim, probe and tiny-run overrides).
# The test suite's CPU runs: 'exact' batching pinned there (the default 'auto' is 'micro' on the
# CPU, more programs to compile); at full scale the config's 'auto' is 'exact' on a GPU.
TINY = {
  'data.bucket_size': 96, 'data.eval_batch_size': 16, 'train.batch_size': 4,
  'data.batching': 'exact',
}  # fmt: skip


# ------------------------------------------------------------------------------------- timing


class Clock:
  """Exclusive wall time per phase (a stack of phases), and JAX compile time per phase."""

  def __init__(self):
    self.stack = ['other']
    self.wall = collections.defaultdict(float)
    self.compile = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self._since = time.perf_counter()

  def _charge(self):
    now = time.perf_counter()
    self.wall[self.stack[-1]] += now - self._since
    self._since = now

  def on_event(self, event: str, duration: float, **_):
    if event in COMPILE_EVENTS:
      self.compile[self.stack[-1]] += duration

  def switch(self, phase: str):
    """Replaces the current (outermost running) phase."""
    self._charge()
    self.stack[-1] = phase

  @contextlib.contextmanager
  def phase(self, name: str):
    self._charge()
    self.stack.append(name)
    self.calls[name] += 1
    try:
      yield
    finally:
      self._charge()
      self.stack.pop()

  @contextlib.contextmanager
  def trainer_phase(self, name: str):
    """The trainer's timer (`loop.Trainer`, one of `loop.PHASES`): the training steps after the
    memory initialisation are charged to 'train_memory'."""
    with self.phase(name):
      yield
    if name == 'memory_init':
      self.switch('train_memory')


_CLOCK: Clock | None = None


def _clock() -> Clock:
  """The process's clock; the jax.monitoring listener is registered once."""
  global _CLOCK
  if _CLOCK is None:
    _CLOCK = Clock()
    jax.monitoring.register_event_duration_secs_listener(lambda *a, **k: _CLOCK.on_event(*a, **k))
  return _CLOCK


# --------------------------------------------------------------------------------------- data


def prepare_data(scale: str, root: pathlib.Path, annotations: str | None) -> tuple[str, dict]:
  """Generates and prepares the synthetic THUMOS14-shaped set; (shards_dir, description)."""
  from data_pipelines import input_pipeline, prepare, synthetic

  real = annotations if scale == 'full' and annotations else None
  src = synthetic.generate(str(root / 'raw'), scale=scale, seed=0, real_annotations=real)
  shards = str(root / 'shards')
  prepare.convert('wtalc', src, shards)
  manifest = input_pipeline.load_manifest(shards)
  lengths = {
    subset: [int(v['num_snippets']) for v in videos if 'num_snippets' in v]
    for subset, videos in manifest['videos'].items()
  }
  info = {
    'lengths': 'real THUMOS14 (' + str(real) + ')' if real else f'synthetic scale {scale}',
    'feature_dim': manifest['feature_dim'],
    'videos': manifest['counts'],
    'snippets': {k: sum(v) for k, v in lengths.items()},
  }
  return shards, info


def find_annotations(path: str | None) -> str | None:
  """A W-TALC annotation folder (one holding videoname.npy) at or under `path`, else None."""
  if not path or not os.path.isdir(path):
    return None
  for folder, _, files in sorted(os.walk(path)):
    if 'videoname.npy' in files and 'duration.npy' in files:
      return folder
  return None


# ------------------------------------------------------------------------------------- recipe


def recipe_config(
  shards: str, scale: str, epochs: int, *, probe: bool = False, resident: str | None = None
):
  from configs import thumos14

  config = thumos14.get_config()
  config.data.shards_dir = shards
  if resident:
    config.data.resident = resident
  at_recipe = config.train.memory_init_epoch  # Its value for the 180 epochs.
  config.train.num_epochs = epochs
  if epochs != RECIPE_EPOCHS and config.train.memory_init_epoch == at_recipe >= 0:
    # A fixed epoch (not a reference that follows num_epochs): scale it with the run.
    config.train.memory_init_epoch = at_recipe * epochs // RECIPE_EPOCHS
  if probe:  # Both phases, two evaluations, as few epochs as possible.
    config.train.memory_init_epoch, config.train.eval_every_epochs = 1, 2
    config.train.checkpoint_every_epochs = 2
  if scale == 'tiny':  # Sizes (and the batching, TINY); the schedule is the recipe's.
    config.model.feature_dim = config.model.embed_dim = 64
    for key, value in TINY.items():
      section, field = key.split('.')
      config[section][field] = value
  config.train.log_every_steps = 10**9  # The epoch-end log line only.
  return config


def schedule_counts(config, steps_per_epoch: int) -> dict:
  """Steps per phase, evaluations and checkpoints of a run of `config` (as the loop does them)."""
  from issf_jax.train import schedules

  total = config.train.num_epochs * steps_per_epoch
  init = schedules.memory_init_step(config, steps_per_epoch)
  warm = total if init < 0 else min(init, total)
  evals = ckpts = 0
  for epoch in range(1, config.train.num_epochs + 1):
    last = epoch == config.train.num_epochs
    ev = last or epoch % config.train.eval_every_epochs == 0
    evals += ev
    ckpts += last or ev or epoch % config.train.checkpoint_every_epochs == 0
  return {'steps_warmup': warm, 'steps_memory': total - warm, 'memory_inits': int(init >= 0),
          'evals': evals, 'checkpoints': ckpts}  # fmt: skip


def run_recipe(config, workdir: str) -> dict:
  """Runs the trainer; per-phase wall and compile seconds, steady unit times, counts."""
  from issf_jax.train import loop

  clock = _clock()
  for table in (clock.wall, clock.compile, clock.calls):
    table.clear()
  trainer = loop.Trainer(config, workdir, timer=clock.trainer_phase)
  counts = schedule_counts(config, trainer.steps_per_epoch)

  t0 = time.perf_counter()
  clock.switch('train_warmup')
  with jax.default_matmul_precision(loop.matmul_precision(config)):
    out = trainer.run()
  clock.switch('other')
  total = time.perf_counter() - t0
  wall, comp = dict(clock.wall), dict(clock.compile)

  def steady(phase: str, units: int) -> float | None:
    if not units or phase not in wall:
      return None
    return max(wall[phase] - comp.get(phase, 0.0), 0.0) / units

  return {
    'epochs': config.train.num_epochs,
    'steps_per_epoch': trainer.steps_per_epoch,
    **counts,
    'wall_s': total,
    'phase_wall_s': {k: v for k, v in wall.items() if k != 'other'},
    'phase_compile_s': {k: v for k, v in comp.items() if k != 'other'},
    'compile_s': sum(v for k, v in comp.items() if k != 'other'),
    'step_s_warmup': steady('train_warmup', counts['steps_warmup']),
    'step_s_memory': steady('train_memory', counts['steps_memory']),
    'memory_init_s': steady('memory_init', counts['memory_inits']),
    'eval_s': steady('eval', counts['evals']),
    'checkpoint_s': steady('checkpoint', counts['checkpoints']),
    'final_average_mAP': float(out['eval'].get('average_mAP', float('nan'))),
    # The host input path (tf.data, or numpy without TensorFlow) and the resident features.
    'input': {
      'pipeline': trainer.input_pipeline.__name__.split('.')[-1],
      'resident': bool(trainer.resident),
    },  # fmt: skip
  }


def project(measured: dict, target: dict) -> float:
  """Seconds of a run with `target` counts from `measured` steady unit times + its compiles."""
  step_memory = measured['step_s_memory'] or measured['step_s_warmup']
  parts = [
    measured['compile_s'],
    target['steps_warmup'] * measured['step_s_warmup'],
    target['steps_memory'] * step_memory,
    target['memory_inits'] * (measured['memory_init_s'] or 0.0),
    target['evals'] * (measured['eval_s'] or 0.0),
    target['checkpoints'] * (measured['checkpoint_s'] or 0.0),
  ]
  return float(sum(parts))


def input_batches(config, workdir: str, path: str, steps: int) -> None:
  """Writes to `path` (.npz) what the trainer is fed: its first `steps` training batches (keys
  'train/<step>/<key>', or 'train/<step>.<micro-batch>/<key>') and the batches of an evaluation
  ('test/<batch>/<key>') and of the memory initialisation ('train_eval/<batch>/<key>'), all on
  the host; tests/test_gpu_recipe_no_tensorflow.py compares them with the tf.data pipeline's."""
  from issf_jax import sharding
  from issf_jax.train import loop

  trainer = loop.Trainer(config, workdir)
  arrays = {}

  def put(prefix: str, batch: dict) -> None:
    for key, value in sharding.host_value(batch).items():
      arrays[f'{prefix}/{key}'] = np.asarray(value)

  iterator = trainer.train_iterator({'epoch': 0, 'batch': 0})
  for i in range(steps):
    batch = next(iterator)
    for j, group in enumerate(batch) if isinstance(batch, list) else [(None, batch)]:
      put(f'train/{i}' if j is None else f'train/{i}.{j}', group)
  iterator.close()
  pipeline, data = trainer.input_pipeline, config.data
  parts = (
    ('test', data.eval_subset, data.eval_batch_size),
    ('train_eval', 'train', data.eval_batch_size * jax.process_count()),
  )
  for name, subset, size in parts:
    options = pipeline.EvalOptions.from_data_config(data, size)
    batches = pipeline.create_eval_iterator(trainer.shards_dir, options, subset=subset)
    for i, batch in enumerate(batches):
      put(f'{name}/{i}', batch)
  np.savez(path, **arrays)


def environment() -> dict:
  """Versions of what the run imports (the GPU image's are fixed; record what it has)."""
  from importlib import metadata

  from issf_common import tensorflow_optional

  names = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy', 'ml-collections',
           'absl-py', 'etils', 'protobuf', 'tensorboard', 'scipy', 'msgspec', 'tensorflow',
           'tensorflow-cpu', 'jax-cuda13-plugin', 'jax-cuda12-plugin')  # fmt: skip
  versions = {}
  for name in names:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {'python': platform.python_version(), 'versions': versions,
          'tensorflow_importable': tensorflow_optional.available()}  # fmt: skip


# ---------------------------------------------------------------------------------- precision


def _host_tree(tree):
  from issf_jax import sharding

  return jax.tree.map(lambda x: np.asarray(x, np.float64), sharding.host_value(tree))


def _norm(tree) -> float:
  return math.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(tree)))


def _pad_time(batch: dict, length: int) -> dict:
  """Zero-pads the snippet axis of `features` [B, T, D], `mask` [B, T] (any [B, T, ...])."""
  b, t = batch['features'].shape[:2]
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.ndim >= 2 and value.shape[:2] == (b, t) and t < length:
      value = np.pad(value, [(0, 0), (0, length - t)] + [(0, 0)] * (value.ndim - 2))
    out[key] = value
  return out


def precision_drift(config, workdir: str, steps: int) -> dict:
  """`steps` warm-up train steps under each precision from one state on the same batches (the
  first `steps` of the recipe's order, padded to their longest)."""
  from issf_jax import sharding
  from issf_jax.train import loop
  from issf_jax.train import step as step_lib

  if steps <= 0:
    return {'steps': 0}
  trainer = loop.Trainer(config, workdir)
  # One padded batch per step, whatever the config's batching.
  options = dataclasses.replace(loop.batching_options(config, 1), batching='exact')
  iterator = trainer.input_pipeline.create_train_iterator(trainer.shards_dir, options)
  raw = [next(iterator) for _ in range(steps)]
  iterator.close()
  # One length for all (masked padding): one program per precision, not one per bucket.
  longest = max(b['features'].shape[1] for b in raw)
  from issf_jax.sharding import place_batch

  batches = [place_batch(_pad_time(b, longest), trainer.mesh) for b in raw]
  initial = jax.device_get(sharding.host_value(trainer.initial_state()))
  start = _host_tree(initial.params)
  runs, out = {}, {}
  for name in (*PRECISIONS, 'float32_repeat'):
    precision = name.replace('_repeat', '')
    with jax.default_matmul_precision(precision):
      train_step = step_lib.make_train_step(
        config, trainer.mesh, memory_ready=False, steps_per_epoch=trainer.steps_per_epoch
      )
      state = sharding.replicate(initial, trainer.mesh)  # A fresh copy: the step donates it.
      times, losses = [], []
      for batch in batches:
        t0 = time.perf_counter()
        state, metrics = train_step(state, batch, trainer.key_data)
        losses.append(float(sharding.host_value(metrics)['loss']))  # Syncs the step.
        times.append(time.perf_counter() - t0)
    runs[name] = _host_tree(state.params)
    out[name] = {
      'first_step_s': times[0],  # Compile included.
      'step_s': statistics.median(times[1:]) if len(times) > 1 else None,
      'final_loss': losses[-1],
    }
  ref = runs['float32']
  update = _norm(jax.tree.map(np.subtract, ref, start))
  for name in ('tensorfloat32', 'float32_repeat'):
    diff = jax.tree.map(np.subtract, runs[name], ref)
    out[name]['param_drift_rel_update'] = _norm(diff) / max(update, 1e-300)
    out[name]['param_drift_rel_params'] = _norm(diff) / max(_norm(ref), 1e-300)
    out[name]['param_drift_max_abs'] = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(diff))
  out['steps'] = steps
  return out


def parity_errors(parity_dir: str | None) -> dict | None:
  """Max |ours - RSKP| of the base branch on each parity golden, per precision; None if absent."""
  if not parity_dir or not os.path.isdir(parity_dir):
    return None
  from configs import common
  from issf_jax import interop
  from issf_jax.model import build_model, init_params

  folder = pathlib.Path(parity_dir)
  index = (
    json.loads((folder / 'index.json').read_text()) if (folder / 'index.json').is_file() else {}
  )
  compared = {'embedded': None, 'ca_vid_pred': 'p_ca', 'cw_vid_pred': 'p_cw',
              'class_agno_att': 'attention', 'frm_scr': 'frame_logits'}  # fmt: skip
  errors = {p: {} for p in PRECISIONS}
  models = {}
  for case in sorted(folder.glob('parity_case*.npz')):
    golden = dict(np.load(case))
    x = golden['X']
    num_classes, dim = golden['label'].shape[0], x.shape[-1]
    weights = index.get('cases', {}).get(case.stem, {}).get('weights_file')
    weights = folder / (weights or f'weights_d{dim}_c{num_classes}.npz')
    if weights not in models:
      model = build_model(common.model_config(num_classes=num_classes, feature_dim=dim))
      params = jax.jit(lambda key, m=model: init_params(m, key))(jax.random.key(0))
      with np.load(weights) as state:
        models[weights] = (model, interop.import_rskp_state_dict(state, params))
    model, params = models[weights]
    for precision in PRECISIONS:
      with jax.default_matmul_precision(precision):
        apply = jax.jit(lambda p, v, m, model=model: model.apply({'params': p}, v, m, train=False))
        got = apply(params, x, np.ones(x.shape[:2], bool))
      for key, name in compared.items():
        ours = got['embedded'] if name is None else got['base'][name][0]
        err = float(np.max(np.abs(np.asarray(ours, np.float64) - golden[key])))
        errors[precision][key] = max(errors[precision].get(key, 0.0), err)
  return {'cases': len(list(folder.glob('parity_case*.npz'))), 'max_abs_error': errors}


# --------------------------------------------------------------------------------------- main


def _device() -> str:
  d = jax.devices()[0]
  return f'{d.platform}: {getattr(d, "device_kind", "")} x{jax.device_count()}'


def _fmt(x, unit: str = 's', scale: float = 1.0) -> str:
  return '-' if x is None else f'{x * scale:.3f} {unit}'


def print_report(report: dict) -> None:
  print(f'device: {report["device"]}; jax {report["jax"]}; scale {report["scale"]}')
  inp = report['input']
  tf_ok = report['env']['tensorflow_importable']
  print(f'input: {inp["pipeline"]} pipeline, training features resident on the devices: '
        f'{inp["resident"]}; TensorFlow importable: {tf_ok}')  # fmt: skip
  data = report['data']
  print(
    f'data: {data["lengths"]}, D = {data["feature_dim"]}, videos {data["videos"]}, snippets '
    f'{data["snippets"]}; setup {report["setup_s"]:.1f} s (not in the recipe)'
  )
  for name in ('probe', 'recipe'):
    r = report.get(name)
    if not r:
      continue
    print(f'{name}: {r["epochs"]} epochs x {r["steps_per_epoch"]} steps, wall {r["wall_s"]:.1f} s, '
          f'compile {r["compile_s"]:.1f} s (per phase {_round(r["phase_compile_s"])})')  # fmt: skip
    print(f'  steady step {_fmt(r["step_s_warmup"], "ms", 1e3)} (warm-up), '
          f'{_fmt(r["step_s_memory"], "ms", 1e3)} (memory phase); memory init '
          f'{_fmt(r["memory_init_s"])}; per evaluation {_fmt(r["eval_s"])} x {r["evals"]}; per '
          f'checkpoint {_fmt(r["checkpoint_s"])} x {r["checkpoints"]}')  # fmt: skip
  total = report['recipe_180_epochs_s']
  how = 'measured' if not report['extrapolated'] else 'EXTRAPOLATED from ' + report['basis']
  print(f'180-epoch recipe: {total:.1f} s = {total / 60:.2f} min ({how})')
  drift = report['precision']
  print(f'matmul precision ({drift["steps"]} warm-up steps, same start and batches):')
  for name in (*PRECISIONS, 'float32_repeat') if drift['steps'] else ():
    d = drift[name]
    line = f'  {name:15s} step {_fmt(d["step_s"], "ms", 1e3)}, first step {d["first_step_s"]:.2f} s'
    line += f', final loss {d["final_loss"]:.6f}'
    if 'param_drift_rel_update' in d:
      line += (
        f', drift vs float32 {d["param_drift_rel_update"]:.2e} of the update '
        f'({d["param_drift_rel_params"]:.2e} of |params|, max {d["param_drift_max_abs"]:.1e})'
      )
    print(line)
  parity = report['parity']
  if parity:
    print(f'RSKP parity goldens ({parity["cases"]} cases), max abs error (test atol 1e-5):')
    for precision, errs in parity['max_abs_error'].items():
      print(f'  {precision:15s} ' + ', '.join(f'{k} {v:.1e}' for k, v in errs.items()))
  else:
    print('RSKP parity goldens: not given (--parity_dir)')


def _round(d: dict) -> dict:
  return {k: round(v, 2) for k, v in d.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--scale', default='full', choices=('full', 'tiny'))
  p.add_argument('--epochs', default='auto', help="'auto' (probe, then 180 if it fits) or N")
  p.add_argument(
    '--time_limit_s',
    type=float,
    default=450.0,
    help='--epochs auto: run the 180 epochs only if the whole call fits this',
  )
  p.add_argument(
    '--reserve_s', type=float, default=90.0, help='time kept for the precision and parity parts'
  )
  p.add_argument('--annotations', default=str(DEFAULT_ANNOTATIONS), help='W-TALC annotations')
  p.add_argument('--parity_dir', default=str(DEFAULT_PARITY))
  p.add_argument('--drift_steps', type=int, default=20)
  p.add_argument('--workdir', default=None, help='scratch folder (default: a temporary one)')
  p.add_argument('--json', default=None, help='write the report here')
  p.add_argument(
    '--resident',
    default=None,
    choices=('auto', 'on', 'off'),
    help="config.data.resident (default: the config's, 'auto')",
  )
  p.add_argument(
    '--dump_batches', default=None, help='.npz: the batches the trainer is fed (input_batches)'
  )
  p.add_argument('--dump_steps', type=int, default=12, help='training steps in --dump_batches')
  from launch import cli

  p.add_argument('--compilation_cache', default='', help=cli.COMPILATION_CACHE_HELP)
  args = p.parse_args(argv)

  from issf_jax import compile_cache

  cli.quiet_libraries()
  cache = compile_cache.configure(args.compilation_cache)
  tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
  root = pathlib.Path(args.workdir or tmp.name)
  t0 = time.perf_counter()
  shards, data = prepare_data(args.scale, root / 'data', find_annotations(args.annotations))
  report = {
    'device': _device(), 'jax': jax.__version__, 'scale': args.scale, 'data': data,
    'setup_s': time.perf_counter() - t0, 'cpu': platform.processor() or platform.machine(),
  }  # fmt: skip
  report['env'] = environment()
  report['compilation_cache'] = cache  # a warm one turns compile times into load times

  def save() -> None:
    """The report so far (a run stopped by its time limit keeps the parts already done)."""
    if args.json:
      with open(args.json + '.partial', 'w') as f:
        json.dump(report, f, indent=1, default=_jsonable)
      os.replace(args.json + '.partial', args.json)

  save()
  res = args.resident
  full_config = recipe_config(shards, args.scale, RECIPE_EPOCHS, resident=res)
  if args.dump_batches:
    input_batches(full_config, str(root / 'input'), args.dump_batches, args.dump_steps)
  if args.epochs == 'auto':
    probe_config = recipe_config(shards, args.scale, 4, probe=True, resident=res)
    probe = run_recipe(probe_config, str(root / 'probe'))
    report['probe'], report['input'] = probe, probe.pop('input')
    save()
    target = schedule_counts(full_config, probe['steps_per_epoch'])
    projected = project(probe, target)
    budget = args.time_limit_s - (time.perf_counter() - t0) - args.reserve_s
    epochs = RECIPE_EPOCHS if projected <= budget else None
  else:
    epochs = int(args.epochs)
  if epochs:
    recipe_cfg = recipe_config(shards, args.scale, epochs, resident=res)
    recipe = run_recipe(recipe_cfg, str(root / 'recipe'))
    report['recipe'], report['input'] = recipe, recipe.pop('input')
    target = schedule_counts(full_config, recipe['steps_per_epoch'])
    measured_full = epochs == RECIPE_EPOCHS
    report['recipe_180_epochs_s'] = recipe['wall_s'] if measured_full else project(recipe, target)
    report['extrapolated'] = not measured_full
    report['basis'] = f'a {epochs}-epoch run'
  else:
    report['recipe_180_epochs_s'] = projected
    report['extrapolated'] = True
    report['basis'] = f'the 4-epoch probe (180 epochs: {projected:.0f} s > {budget:.0f} s left)'
  save()
  report['precision'] = precision_drift(full_config, str(root / 'drift'), args.drift_steps)
  save()
  report['parity'] = parity_errors(args.parity_dir)
  report['total_s'] = time.perf_counter() - t0
  print_report(report)
  print(f'benchmark wall time: {report["total_s"]:.1f} s')
  save()
  if tmp is not None:
    tmp.cleanup()
  return report


def _jsonable(x):
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  if isinstance(x, np.generic):
    return x.item()
  return str(x)


if __name__ == '__main__':
  main()
