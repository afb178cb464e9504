r"""Evaluates a trained run, or (subcommand `score`) scores a predictions file. With --workdir, it
restores a checkpoint of the run (--checkpoint latest, best or a step number) onto the devices
present, predicts the eval split of the run's shard folder, scores it with the run's protocol
(and config.eval.extra_protocols), prints the results table (mAP per tIoU, the range averages,
classification mAP, counts) and writes <workdir>/predictions/step_N.json and
<workdir>/eval/step_N.json, the same files the trainer writes at its evaluations. With a config
other than the run's (--config FILE, or --config.a.b=v overrides, which apply to the run's own
config when --config is not given), it writes beside them instead, never over them:
step_N.config-XXXXXXXX.json, the tag naming the differences, which the eval file records with
the whole config.

With --sweep_scales, it sweeps the CAS threshold range of the proposals instead: the split named
by --subset (default train: its temporal annotations are never read by training) is predicted
once and scored with the configured range multiplied by each scale; it prints a table and the
--config overrides of the best range, and writes <workdir>/sweep/step_N_<subset>.json. ActivityNet
has no published range (its CAS spreads over 201 classes), so sweep before trusting its mAP.

usage:
  issf-eval --workdir runs/thumos14 [--checkpoint latest|best|STEP] [--config FILE]
  issf-eval --workdir runs/thumos14 --config.eval.proposals.thresholds_stop=0.5
  issf-eval --workdir runs/anet --sweep_scales 0.125,0.25,0.5,1,2 [--subset train]
  issf-eval score --predictions PRED.json --ground_truth GT.json --subset test \
    [--protocol official] [--tiou 0.1:0.7:0.1] [--output_json OUT.json]

`issf-eval score --help` describes the `score` form: it scores an ActivityNet-format
predictions file the way the official evaluator does.
"""

from __future__ import annotations

import copy
import sys

from absl import flags
from ml_collections import config_flags

from issf_common import errors, paths
from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config (default: the workdir config.json).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by issf-train.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_CHECKPOINT_DIR = flags.DEFINE_string(
  'checkpoint_dir', None, 'Checkpoint folder (default: <workdir>/checkpoints).'
)

_SWEEP_SCALES = flags.DEFINE_string(
  'sweep_scales', None, 'Comma-separated multipliers of the CAS threshold range to sweep.'
)
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', cli.COMPILATION_CACHE_HELP)
_SUBSET = flags.DEFINE_string('subset', 'train', 'With --sweep_scales: the split to sweep on.')


def _restore(config, workdir: str, which, checkpoint_dir):
  """(state, step, key_data): the checkpoint `which` and the evaluation key the trainer uses."""
  import jax

  from issf_jax.train import restore

  checkpoint_dir = checkpoint_dir or paths.join(workdir, 'checkpoints')
  state, step = restore.restore_state(config, checkpoint_dir, which)
  return state, step, jax.random.key_data(jax.random.key(config.train.seed))


def config_tag(config, workdir: str) -> tuple[str | None, dict]:
  """(tag, record) of an evaluation with `config` on the run in `workdir`.

  With the run's own config: (None, {}), and the files are the trainer's `step_N.json`. With
  any other (a --config file, --config.a.b=v overrides): the tag `config-<8 hex digits of the
  differences>` names files written beside the trainer's, never over them, and the record
  holds the differences {key: [run's value, this value]} and the whole config.
  """
  import hashlib
  import json

  from issf_jax.train import run_dir

  used = run_dir.config_dict(config)
  try:
    stored = run_dir.config_dict(run_dir.load_config(workdir))
  except errors.MissingFileError:  # no config.json (checkpoints alone): every key differs
    stored = {}
  changes = run_dir.config_changes(stored, used)
  if not changes:
    return None, {}
  text = json.dumps({k: list(v) for k, v in changes.items()}, sort_keys=True, default=str)
  tag = 'config-' + hashlib.sha256(text.encode()).hexdigest()[:8]
  return tag, {'config_changes': json.loads(text), 'config': used}


def evaluate_checkpoint(config, workdir: str, which='latest', checkpoint_dir=None,
                        tag: str | None = None, record: dict | None = None) -> dict:  # fmt: skip
  """Restores `which` checkpoint, predicts the eval split and scores it; returns the result.
  `tag` and `record` (`config_tag`): where the files go and what they record."""
  import jax

  from issf_jax.train import evaluator

  state, step, key_data = _restore(config, workdir, which, checkpoint_dir)
  evaluate = evaluator.Evaluator(config, workdir)
  result = evaluate(state.params, step, key_data, checkpoint={'step': int(step), 'which': which},
                    tag=tag, record=record)  # fmt: skip
  if jax.process_index() == 0:
    label = 'best on eval' if which == 'best' else str(which)
    print(f'Checkpoint step {step} ({label}); {config.data.shards_dir}')
    print(evaluator.format_result(result))
    if tag:
      changed = ', '.join(f'{k}={v[1]!r}' for k, v in record['config_changes'].items())
      print(
        f"The config differs from the run's ({changed}): wrote "
        f'{evaluator.step_file(workdir, "predictions", step, tag)} and '
        f'{evaluator.step_file(workdir, "eval", step, tag)} (the config is recorded there)'
      )
  return result


def main(argv):
  del argv
  from issf_jax.train import run_dir

  if flags.FLAGS['config'].present and _CONFIG.value is None:
    raise errors.InputError(
      f'--config {flags.FLAGS["config"].config_filename}: get_config() returned None '
      '(a missing return?)'
    )
  config = _CONFIG.value if _CONFIG.value is not None else run_dir.load_config(_WORKDIR.value)
  from issf_common import outputs

  outputs.check_writable(_WORKDIR.value, '--workdir')  # it writes predictions/ and eval/ there
  from issf_jax import compile_cache  # JAX, imported once the inputs above are checked

  compile_cache.configure(_COMPILATION_CACHE.value, announce=False)
  if _SWEEP_SCALES.value is not None:
    sweep_checkpoint(
      config, _WORKDIR.value, _SWEEP_SCALES.value, _SUBSET.value, _CHECKPOINT.value,
      _CHECKPOINT_DIR.value,
    )  # fmt: skip
    return
  if flags.FLAGS['subset'].present:
    raise errors.InputError('--subset goes with --sweep_scales (an evaluation scores the '
                                "config's data.eval_subset)")  # fmt: skip
  tag, record = config_tag(config, _WORKDIR.value) if _CONFIG.value is not None else (None, {})
  evaluate_checkpoint(config, _WORKDIR.value, _CHECKPOINT.value, _CHECKPOINT_DIR.value, tag, record)


def sweep_checkpoint(config, workdir, scales_text, subset, which='latest', checkpoint_dir=None):
  """Restores `which` checkpoint and sweeps the CAS threshold range on `subset`; writes and
  returns the sweep (issf_jax/train/sweep.py)."""
  import jax

  from data_pipelines import manifest
  from issf_jax.train import evaluator, sweep

  scales = sweep.parse_scales(scales_text)
  shards = config.data.shards_dir
  subsets = list(manifest.load_manifest(shards)['videos'])
  if subset not in subsets:
    raise errors.InputError(f'--subset {subset!r}: {shards} has the splits {subsets}')
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.eval_subset = subset
  state, step, key_data = _restore(config, workdir, which, checkpoint_dir)
  result = sweep.sweep(evaluator.Evaluator(config, workdir), state.params, key_data, scales)
  result['checkpoint'] = {'step': int(step), 'which': which}
  if jax.process_index() == 0:
    print(f'Checkpoint step {step} ({which}); {shards}')
    print(sweep.format_sweep(result))
    path = paths.join(workdir, 'sweep', f'step_{step}_{subset}.json')
    print(f'wrote {evaluator.write_json(path, result)}')
  return result


def run():
  if len(sys.argv) > 1 and sys.argv[1] == 'score':
    from launch import score

    sys.exit(score.main(sys.argv[2:]))
  sys.argv = cli.with_run_config(sys.argv)
  flags.mark_flags_as_required(['workdir'])
  cli.run_absl(main, sys.modules[__name__], 'issf-eval')


if __name__ == '__main__':
  run()
