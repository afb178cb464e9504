r"""Evaluates a trained run, or (subcommand `score`) scores a predictions file. With --workdir, it
restores a checkpoint of the run (--checkpoint latest, best or a step number) onto the devices
present, predicts the eval split of the run's shard folder, scores it with the run's protocol
(and config.eval.extra_protocols), prints the results table (mAP per tIoU, the range averages,
classification mAP, counts) and writes <workdir>/predictions/step_N.json and
<workdir>/eval/step_N.json, the same files the trainer writes at its evaluations.

usage:
  issf-eval --workdir runs/thumos14 [--checkpoint latest|best|STEP] [--config FILE]
  issf-eval score --predictions PRED.json --ground_truth GT.json --subset test \
    [--protocol official] [--tiou 0.1:0.7:0.1] [--output_json OUT.json]

`issf-eval score --help` describes the second form: it scores an ActivityNet-format
predictions file the way the official evaluator does.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config (default: the workdir config.json).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by issf-train.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_CHECKPOINT_DIR = flags.DEFINE_string(
  'checkpoint_dir', None, 'Checkpoint folder (default: <workdir>/checkpoints).'
)


def evaluate_checkpoint(config, workdir: str, which='latest', checkpoint_dir=None) -> dict:
  """Restores `which` checkpoint, predicts the eval split and scores it; returns the result."""
  import jax

  from issf_jax.train import evaluator, restore

  checkpoint_dir = checkpoint_dir or os.path.join(workdir, 'checkpoints')
  state, step = restore.restore_state(config, checkpoint_dir, which)
  key_data = jax.random.key_data(jax.random.key(config.train.seed))
  evaluate = evaluator.Evaluator(config, workdir)
  result = evaluate(state.params, step, key_data, checkpoint={'step': int(step), 'which': which})
  if jax.process_index() == 0:
    label = 'best on eval' if which == 'best' else str(which)
    print(f'Checkpoint step {step} ({label}); {config.data.shards_dir}')
    print(evaluator.format_result(result))
  return result


def main(argv):
  del argv
  from issf_jax.train import restore

  config = _CONFIG.value if _CONFIG.value is not None else restore.load_config(_WORKDIR.value)
  evaluate_checkpoint(config, _WORKDIR.value, _CHECKPOINT.value, _CHECKPOINT_DIR.value)


def run():
  if len(sys.argv) > 1 and sys.argv[1] == 'score':
    from launch import score

    sys.exit(score.main(sys.argv[2:]))
  flags.mark_flags_as_required(['workdir'])
  cli.run_absl(main, sys.modules[__name__], 'issf-eval')


if __name__ == '__main__':
  run()
