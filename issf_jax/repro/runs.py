"""Run bookkeeping for the reproduction harness: configs, keys, run directories, results.

A run is one resolved config on one dataset. Its directory is `<workdir>/runs/<key>`, where
the key hashes the resolved config (minus the fields that cannot change a result,
`NON_RESULT_FIELDS`) together with the dataset's content fingerprint. So rows that resolve to
the same config share one run, across tables and invocations (Table 3's L1 row is Table 4's
ISSF row; Base is one run whatever the BRM, DEM or recipe options, which it does not read), and
a moved dataset keeps its runs.

A run is finished when its directory holds `result.json` with its key (written atomically,
last). An unfinished run directory holds the trainer's checkpoints, and training it again
resumes from the latest one (the trainer resumes bitwise).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.util
import json
import math
import os
import time
from typing import Any

from issf_common import paths
from issf_jax.train import run_dir

RESULT_FILE = 'result.json'
RUNS_DIR = 'runs'
# Fields (fnmatch patterns over dotted names) that record or steer bookkeeping but cannot
# change what a run learns or scores.
# `ablation` is the argument record: rows that differ only there (Base with recipe=authors or
# recipe=spec_v1) resolve to the same model and training, so they must share the run.
NON_RESULT_FIELDS = (
  'ablation.*',
  'data.shards_dir',  # replaced by the dataset's content fingerprint
  'data.synthetic_scale',  # a record; the fingerprint identifies the data
  'train.log_every_steps',
  'train.keep_last',
  'train.checkpoint_every_epochs',
)
# Fields read only by a module that is off cannot change the run (patterns over dotted names).
# Naming convention for new options: DEM-only ones in `memory.*` or named `*dem_*`, BRM-only
# ones named `brm_*` / `saliency_*`, so that they fall under these patterns.
# `test_shared_key_means_the_same_training` (slow) checks the rule against the trainer.
UNUSED_WHEN_OFF = {
  'model.use_dem': (
    'memory.*',
    'train.memory_*',
    'loss.lambda_s_after',
    '*.dem_*',
    '*_dem_weight',  # model.pseudo_label_dem_weight: T^ does not exist
  ),
  # Without BRM there is no saliency, no pseudo-label and so no distillation (nor DEM).
  'model.use_brm': (
    'memory.*',
    'train.memory_*',
    '*.dem_*',
    'model.brm_*',
    'model.saliency_*',
    'model.sigma',
    'model.attn_logits',
    'loss.brm_*',
    'loss.kd_*',
    'loss.lambda_s_*',
    'model.pseudo_label_*',
  ),  # fmt: skip
}
# The metrics the harness reports (fractions, as the evaluator writes them).
METRICS = ('average_mAP', 'mAP@0.5', 'classification_mAP')


def load_config_module(path: str):
  """Imports a `configs/*.py` experiment file by path (it must define `get_config(arg)`)."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: config file not found.')
  name = 'issf_repro_config_' + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'{path}: no get_config(arg) function.')
  return module


def load_manifest(shards_dir: str) -> dict:
  path = paths.join(shards_dir, 'manifest.json')
  if not paths.is_file(path):
    raise ValueError(f'{shards_dir}: no manifest.json (prepare the features with issf-prepare).')
  return json.loads(paths.read_text(path))


def dataset_fingerprint(manifest: dict) -> str:
  """A content hash of a shard directory: its shards' and ground truth's checksums, classes and
  feature width (not the paths the data was prepared from)."""
  identity = {
    'shards': manifest['shards'],
    'ground_truth': manifest['ground_truth'].get('sha256'),
    'classes': manifest['classes'],
    'feature_dim': manifest['feature_dim'],
  }
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def synthetic_shards_dir(data_root: str, scale: str, seed: int) -> str:
  return paths.join(data_root, f'synthetic_{scale}_seed{seed}_shards')


def synthetic_shards(data_root: str, scale: str, seed: int) -> str:
  """The synthetic benchmark (`scale`, draw `seed`) prepared into shards under `data_root`;
  generated on the first call, reused afterwards (the manifest is written last)."""
  from data_pipelines import synthetic

  if scale not in synthetic.SCALES:
    raise ValueError(f'Unknown synthetic scale {scale!r}; choose from {sorted(synthetic.SCALES)}.')
  shards = synthetic_shards_dir(data_root, scale, seed)
  raw = shards.removesuffix('_shards')
  if not paths.is_file(paths.join(shards, 'manifest.json')):
    from data_pipelines import prepare  # TensorFlow: only when there is something to write

    synthetic.generate(raw, scale=scale, seed=seed)
    prepare.convert('wtalc', raw, shards)
  return shards


def epoch_fields(config) -> list[str]:
  """Dotted names of the epoch-index fields: by convention every field named `*_epoch`
  (`train.memory_init_epoch`, ...); the `*_epochs` intervals are not indices."""
  return [
    f'{section}.{name}'
    for section, sub in config.items()
    if hasattr(sub, 'items')
    for name in sub
    if name.endswith('_epoch')
  ]


def scale_epochs(config, num_epochs: int) -> None:
  """Sets `train.num_epochs` to `num_epochs`, and keeps every epoch index (`*_epoch`) in step.

  An index the config derives from `train.num_epochs` (a lazy reference: the recipes' memory
  init and `merge_until_epoch`) follows by the config's own rule. A fixed one is scaled by
  num_epochs / old, rounded down (16 of 30 epochs -> 2 of 4); negative ones (off) stay.
  """
  old = config.train.num_epochs
  fields = [tuple(f.split('.')) for f in epoch_fields(config)]
  before = {f: config[f[0]][f[1]] for f in fields}
  # A probe epoch count tells derived indices from fixed ones (a derived one moves with it).
  config.train.num_epochs = 1000 * (old + num_epochs)
  fixed = [f for f in fields if config[f[0]][f[1]] == before[f]]
  config.train.num_epochs = num_epochs
  for section, name in fixed:
    value = before[(section, name)]
    if isinstance(value, int) and value >= 0:
      config[section][name] = value * num_epochs // old


def result_fields(config) -> dict:
  """The dotted fields that can change what the run learns or scores.

  Drops NON_RESULT_FIELDS, and the fields of a module that is off (`UNUSED_WHEN_OFF`), so that
  Base resolves to one run whatever the BRM, DEM or recipe settings say.
  """
  flat = run_dir.flatten(run_dir.config_dict(config))
  drop = list(NON_RESULT_FIELDS)
  for switch, patterns in UNUSED_WHEN_OFF.items():
    if not flat.get(switch, True):
      drop += patterns
  if flat.get('model.fusion') == 'base':
    drop.append('model.fusion_base_weight')
  return {k: v for k, v in flat.items() if not any(fnmatch.fnmatchcase(k, p) for p in drop)}


def config_key(config, fingerprint: str) -> str:
  """sha256 of the config's `result_fields` and the dataset fingerprint."""
  payload = json.dumps({'config': result_fields(config), 'data': fingerprint}, sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()


def check_schedule(config, label: str) -> None:
  """A DEM row whose memory would be built after the last epoch would silently be Base+BRM."""
  init = config.train.memory_init_epoch
  if config.model.use_dem and init >= 0 and init + 1 >= config.train.num_epochs:
    raise ValueError(
      f'Row {label!r}: the memory is built at the end of epoch {init + 1} of '
      f'{config.train.num_epochs}, so DEM would never train; use more epochs or set '
      '--config.train.memory_init_epoch.'
    )


def check_data(config, data) -> None:
  """The trainer's own checks, made before anything trains."""
  m = data.manifest
  if m['feature_dim'] != config.model.feature_dim:
    raise ValueError(
      f'{data.shards_dir} holds {m["feature_dim"]}-d features but model.feature_dim is '
      f'{config.model.feature_dim}; add --config.model.feature_dim={m["feature_dim"]} '
      f'(and --config.model.embed_dim).'
    )
  if len(m['classes']) != config.model.num_classes:
    raise ValueError(
      f'{data.shards_dir} has {len(m["classes"])} classes but model.num_classes is '
      f'{config.model.num_classes}.'
    )


@dataclasses.dataclass
class RunSpec:
  """One (row, seed) of a table, resolved."""

  row_key: str
  row_label: str
  args: str  # the row's config arguments, harness-wide ones merged in
  seed_index: int
  seed: int  # config.train.seed: initialisation, dropout and batch order
  data_seed: int  # the synthetic draw (-1: real shards)
  shards_dir: str
  config: Any
  key: str


def resolve_config(module, args: str, *, shards_dir: str, manifest: dict,
                   synthetic_scale: str | None, epochs: int, overrides: dict,
                   seed_index: int):  # fmt: skip
  """The config of one (row, seed): get_config(args), the data, the epoch scaling, the
  `--config.x=y` overrides, then train.seed = (its value) + seed_index."""
  config = module.get_config(args or None)
  config.data.shards_dir = shards_dir
  if synthetic_scale:
    if 'synthetic_scale' in config.data:
      config.data.synthetic_scale = synthetic_scale
    if manifest['feature_dim'] != config.model.feature_dim:
      # The synthetic scales have their own D (tiny 64, small 256); the model follows the data.
      config.model.feature_dim = config.model.embed_dim = manifest['feature_dim']
  if epochs:
    scale_epochs(config, epochs)
  if overrides:
    config.update_from_flattened_dict(dict(overrides))
  config.train.seed = int(config.train.seed) + seed_index
  return config


def run_directory(workdir: str, key: str) -> str:
  return paths.join(workdir, RUNS_DIR, key[:16])


def load_result(directory: str, key: str) -> dict | None:
  """The finished run's result, or None when the run is not finished (or is another run's)."""
  path = paths.join(directory, RESULT_FILE)
  if not paths.is_file(path):
    return None
  result = json.loads(paths.read_text(path))
  return result if result.get('key') == key else None


def latest_checkpoint_step(directory: str) -> int:
  ckpt = paths.path(directory) / 'checkpoints'
  steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
  return max(steps, default=0)


def read_eval_history(directory: str) -> dict[int, dict]:
  """{step: {metric: value}} of the evaluations in `metrics.jsonl` (a step evaluated twice,
  by a resumed run, keeps its last record)."""
  path = paths.join(directory, 'metrics.jsonl')
  history: dict[int, dict] = {}
  if not paths.is_file(path):
    return history
  with paths.path(path).open('r') as f:
    for line in f:
      record = json.loads(line)
      evals = {k[5:]: v for k, v in record.items() if k.startswith('eval/')}
      if evals:
        history[int(record['step'])] = evals
  return history


def summarize_history(history: dict[int, dict], steps_per_epoch: int) -> dict:
  """{'last': metrics at the last evaluated step, 'best': metrics at the step with the highest
  average mAP (the earliest on ties)}, each with 'step' and 'epoch'."""
  if not history:
    raise ValueError('the run has no evaluation record (metrics.jsonl).')

  def at(step):
    return {**history[step], 'step': step, 'epoch': step // steps_per_epoch}

  steps = sorted(history)
  best = max(steps, key=lambda s: (history[s]['average_mAP'], -s))
  return {'last': at(steps[-1]), 'best': at(best)}


def execute(spec: RunSpec, directory: str) -> dict:
  """Trains (or resumes) the run in `directory` through the project's trainer, then writes
  its `result.json`; returns that result."""
  from issf_jax.train import loop

  paths.makedirs(directory)
  resumed_from = latest_checkpoint_step(directory)
  t0 = time.time()
  out = loop.train_and_evaluate(spec.config, directory)
  minutes = (time.time() - t0) / 60
  steps_per_epoch = int(out['steps_per_epoch'])
  metrics = summarize_history(read_eval_history(directory), steps_per_epoch)
  revision_path = paths.join(directory, 'git_revision.txt')
  revision = paths.read_text(revision_path).strip() if paths.is_file(revision_path) else ''
  result = {
    'key': spec.key,
    'first_args': spec.args,
    'seed': spec.seed,
    'data_seed': spec.data_seed,
    'steps_per_epoch': steps_per_epoch,
    'num_epochs': int(spec.config.train.num_epochs),
    'metrics': metrics,
    'minutes': minutes,
    'resumed_from_step': resumed_from,
    'git_revision': revision,
    'finished_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  write_json_atomic(paths.join(directory, RESULT_FILE), result)
  return result


def _json_safe(value):
  """NaN/Inf (e.g. a classification mAP with no positive video) -> None: strict JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_json_safe(v) for v in value]
  return value


def write_json_atomic(path: str, payload) -> None:
  """Writes strict JSON (non-finite floats as null) to `path` via a rename."""
  paths.write_atomic(path, json.dumps(_json_safe(payload), indent=2, allow_nan=False))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """The data of one seed: a shard directory, its manifest, and the synthetic draw (-1: real)."""

  shards_dir: str
  manifest: dict
  data_seed: int
  synthetic_scale: str | None  # None: real shards

  @property
  def fingerprint(self) -> str:
    return dataset_fingerprint(self.manifest)


def plan_table(table, module, datasets: list[Dataset], *, extra_args: str = '', epochs: int = 0,
               overrides: dict | None = None) -> list[RunSpec]:  # fmt: skip
  """Every (row, seed) of `table` resolved to a RunSpec; `datasets[i]` is seed i's data;
  `extra_args`: harness-wide config arguments, or several sets separated by ';'
  (`tables.expand`).

  Raises ValueError (bad arguments, a schedule under which DEM never trains) before anything
  trains.
  """
  from issf_jax.repro import tables

  specs = []
  for row in tables.expand(table, extra_args).rows:
    args = row.args
    for i, data in enumerate(datasets):
      config = resolve_config(
        module, args, shards_dir=data.shards_dir, manifest=data.manifest,
        synthetic_scale=data.synthetic_scale, epochs=epochs, overrides=overrides or {},
        seed_index=i,
      )  # fmt: skip
      check_schedule(config, row.label)
      check_data(config, data)
      key = config_key(config, data.fingerprint)
      specs.append(RunSpec(row.key, row.label, args, i, int(config.train.seed), data.data_seed,
                           data.shards_dir, config, key))  # fmt: skip
  return specs


def unique_runs(specs: list[RunSpec]) -> dict[str, RunSpec]:
  """key -> the first spec with that key: the runs to train (identical configs train once)."""
  out: dict[str, RunSpec] = {}
  for spec in specs:
    out.setdefault(spec.key, spec)
  return out
