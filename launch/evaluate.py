r"""The offline eval binary.

Score a trained model (restores an Orbax checkpoint onto the devices present):
  issf-eval --config configs/thumos14.py --workdir runs/thumos14 [--checkpoint latest|best|STEP]
It writes <workdir>/predictions/step_N.json and <workdir>/eval/step_N.json and prints the
results table (mAP per IoU, the range averages, classification mAP, protocol, counts).

Score a predictions file, the way users run the official evaluator:
  issf-eval score --predictions PRED.json --ground_truth GT.json --subset test \
    --protocol official --tiou 0.1:0.7:0.1 --output_json OUT.json
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config (default: the workdir config.json).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by issf-train.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_CHECKPOINT_DIR = flags.DEFINE_string(
  'checkpoint_dir', None, 'Checkpoint directory (default: <workdir>/checkpoints).'
)


def evaluate_checkpoint(config, workdir: str, which='latest', checkpoint_dir=None) -> dict:
  """Restores `which` checkpoint, predicts the eval split and scores it; returns the result."""
  import jax

  from issf_jax import evaluation
  from issf_jax.train import evaluator, restore

  checkpoint_dir = checkpoint_dir or os.path.join(workdir, 'checkpoints')
  state, step = restore.restore_state(config, checkpoint_dir, which)
  key_data = jax.random.key_data(jax.random.key(config.train.seed))
  out = evaluator.evaluate_params(config, state.params, config.data.shards_dir, key_data)
  result = out['result']
  result['checkpoint'] = {'step': int(step), 'which': str(which)}
  if jax.process_index() == 0:
    evaluator.write_predictions(workdir, step, out['predictions'])
    path = os.path.join(workdir, 'eval', f'step_{step}.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(_jsonable(result), f, indent=2)
    label = 'best on eval' if which == 'best' else str(which)
    print(f'Checkpoint step {step} ({label}); {config.data.shards_dir}')
    print(evaluation.format_results_table(result))
  return result


def _jsonable(x):
  import numpy as np

  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from issf_jax.train import restore
  from issf_jax.train.logs import quiet_libraries

  quiet_libraries()
  config = _CONFIG.value if _CONFIG.value is not None else restore.load_config(_WORKDIR.value)
  evaluate_checkpoint(config, _WORKDIR.value, _CHECKPOINT.value, _CHECKPOINT_DIR.value)


def run():
  if len(sys.argv) > 1 and sys.argv[1] == 'score':
    from launch import score

    sys.exit(score.main(sys.argv[2:]))
  flags.mark_flags_as_required(['workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
