r"""The first command: synthetic benchmark -> shards -> train ISSF -> evaluate -> results table.

  make demo                                   # = python -m launch.demo --workdir runs/demo
  python -m launch.demo --workdir runs/demo --compare   # also Base and Base+BRM (Table 4)

Everything goes through the same path as real data: the generator writes the W-TALC format,
`issf-prepare` converts it to checksummed shards, `issf-train`'s loop trains and evaluates.
--workdir is a local folder (the demo is a first run on one machine); the commands it stands
for take URLs as well (`issf_common/paths.py`).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags, logging

from issf_common import outputs
from launch import cli

_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Where data and runs go.')
_SCALE = flags.DEFINE_enum('scale', 'small', ['tiny', 'small', 'full'], 'Synthetic scale.')
_SEED = flags.DEFINE_integer('seed', 0, 'Synthetic data seed.')
_COMPARE = flags.DEFINE_bool('compare', False, 'Also train Base and Base+BRM (Table 4).')
_EPOCHS = flags.DEFINE_integer('epochs', 0, 'Override train.num_epochs (0: the config).')
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', cli.COMPILATION_CACHE_HELP)

VARIANTS = {'ISSF': 'modules=full', 'Base+BRM': 'modules=base_brm', 'Base': 'modules=base'}


def prepare_data(workdir: str, scale: str, seed: int) -> str:
  from data_pipelines import prepare, synthetic

  # Absolute: the run's config.json names the shards, and is read from any folder.
  raw = os.path.join(os.path.abspath(workdir), 'data', f'synthetic_{scale}_{seed}')
  shards = raw + '_shards'
  if not os.path.exists(os.path.join(shards, 'manifest.json')):
    t0 = time.time()
    synthetic.generate(raw, scale=scale, seed=seed)
    prepare.convert('wtalc', raw, shards)
    print(f'synthetic benchmark ({scale}, seed {seed}) -> {shards} in {time.time() - t0:.0f}s')
  return shards


def train_variant(name: str, arg: str, shards: str, workdir: str, scale: str) -> dict:
  from configs import synthetic as synthetic_config
  from issf_jax.train import loop
  from launch import reporting

  with open(os.path.join(shards, 'manifest.json')) as f:
    feature_dim = json.load(f)['feature_dim']
  config = synthetic_config.get_config(f'{arg},scale={scale}')
  config.data.shards_dir = shards
  config.model.feature_dim = config.model.embed_dim = feature_dim
  if _EPOCHS.value:
    config.train.num_epochs = _EPOCHS.value  # the recipe's epoch events follow (lazily)
  run_dir = os.path.join(workdir, name.replace('+', '_').lower())
  print(f'\n=== {name} ({arg}) -> {run_dir}')
  t0 = time.time()
  out = loop.train_and_evaluate(config, run_dir, reporter=reporting.ConsoleReporter())
  if out['eval']:
    return {'eval': out['eval'], 'minutes': (time.time() - t0) / 60}
  # Nothing was trained (the run had finished): its last evaluation, as the trainer logged it.
  from issf_jax.train import metrics_writer

  step = int(out['state'].step)
  print(f'{run_dir} had finished (step {step}): its evaluation at step {step}, as logged.')
  return {
    'eval': metrics_writer.logged_evaluation(run_dir, step),
    'minutes': float('nan'),
    'finished_earlier': True,
  }


def earlier_minutes(workdir: str) -> dict:
  """{variant: minutes} of the results.json a previous invocation wrote (missing: {})."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      return {k: v['minutes'] for k, v in json.load(f).items() if v.get('minutes') is not None}
  except (OSError, ValueError, AttributeError, KeyError, TypeError):
    return {}


def comparison_table(results: dict) -> str:
  keys = ['mAP@0.1', 'mAP@0.2', 'mAP@0.3', 'mAP@0.4', 'mAP@0.5', 'mAP@0.6', 'mAP@0.7']
  avgs = ['0.1:0.5', '0.3:0.7', '0.1:0.7']
  head = f'{"method":<10}' + ''.join(f'{k[4:]:>7}' for k in keys) + ''.join(f'{a:>9}' for a in avgs)
  lines = [head + f'{"cls mAP":>9}{"min":>6}']
  for name, r in results.items():
    e = r['eval']
    row = f'{name:<10}' + ''.join(f'{100 * e.get(k, float("nan")):7.1f}' for k in keys)
    row += ''.join(f'{100 * e.get(a, float("nan")):9.1f}' for a in avgs)
    lines.append(row + f'{100 * e.get("classification_mAP", float("nan")):9.1f}{r["minutes"]:6.1f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from issf_jax import compile_cache

  compile_cache.configure(_COMPILATION_CACHE.value)
  workdir = _WORKDIR.value
  shards = prepare_data(workdir, _SCALE.value, _SEED.value)
  names = list(VARIANTS) if _COMPARE.value else ['ISSF']
  minutes = earlier_minutes(workdir)
  results = {n: train_variant(n, VARIANTS[n], shards, workdir, _SCALE.value) for n in names}
  for name, result in results.items():  # a run finished earlier keeps its training time
    if result.pop('finished_earlier', False) and name in minutes:
      result['minutes'] = minutes[name]
  table = comparison_table(results)
  print('\nSynthetic benchmark, last epoch, rskp protocol (mAP %, test split):\n' + table)
  outputs.write_json(os.path.join(workdir, 'results.json'), results)  # strict: NaN -> null
  outputs.write_text(os.path.join(workdir, 'results.txt'), table + '\n')


if __name__ == '__main__':
  cli.run_absl(main, sys.modules[__name__], 'python -m launch.demo')
