"""The offline eval binary end to end (issue 5): `python -m launch.evaluate` on a tiny run's
checkpoints (latest, best, a given step) and the `score` dispatch on the predictions it wrote."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from issf_jax import checkpointing, evaluation
from issf_jax.train import run_dir
from tests.conftest import run_python, subprocess_env

TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


@pytest.fixture(scope='module')
def run_copy(tmp_path_factory, tiny_run):
  """A copy of the tiny run, with the trainer's own step-24 predictions kept aside."""
  workdir = tmp_path_factory.mktemp('eval_binary') / 'run'
  shutil.copytree(tiny_run, workdir)
  with open(workdir / 'predictions' / 'step_24.json') as f:
    trainer_predictions = json.load(f)
  return workdir, trainer_predictions


def _ground_truth(shards, subset='test'):
  with open(shards / 'ground_truth.json') as f:
    gt = json.load(f)
  videos = {k: v for k, v in gt['database'].items() if v['subset'] == subset}
  return gt, videos, sum(len(v['annotations']) for v in videos.values())


def _labels(videos: dict) -> set:
  return {a['label'] for v in videos.values() for a in v['annotations']}


def _trainer_eval(workdir, step: int) -> dict:
  """The eval metrics the trainer logged at `step` (metrics.jsonl)."""
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if r['step'] == step and 'eval/average_mAP' in r][-1]


@pytest.mark.parametrize('which', ['latest', 'best', '6'])
def test_evaluate_checkpoint(run_copy, tiny_shards, jax_cache_dir, which):
  workdir, trainer_predictions = run_copy
  ckpt = checkpointing.Checkpointer(str(workdir / 'checkpoints'), create=False,
                                    best_metric='average_mAP')  # fmt: skip
  best, steps = ckpt.best_step(), ckpt.all_steps()
  ckpt.close()
  assert steps == [6, 12, 18, 24]
  assert best in (12, 24)  # the evaluated steps
  step = {'latest': 24, 'best': best, '6': 6}[which]

  proc = run_python(
    ['-m', 'launch.evaluate', '--workdir', workdir, '--checkpoint', which],
    subprocess_env(jax_cache_dir),
  )
  out = proc.stdout
  _, gt_videos, num_instances = _ground_truth(tiny_shards)

  # The printed table: protocol, counts, mAP at each tIoU and the averages, classification mAP.
  label = 'best on eval' if which == 'best' else which
  assert f'Checkpoint step {step} ({label})' in out, out
  assert (
    f'protocol: rskp  subset: test  videos: {len(gt_videos)}  instances: {num_instances}' in out
  )
  assert ' tIoU ' in out and 'mAP (%)' in out
  table_row = next(line for line in out.splitlines() if line.strip().startswith('tIoU'))
  assert table_row.split()[1:] == ['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7', 'avg']
  assert 'averages (%): 0.1:0.5 ' in out and '0.3:0.7' in out and '0.1:0.7' in out
  assert 'classification mAP (%):' in out

  # predictions/step_N.json in the ActivityNet format, one entry per test video.
  with open(workdir / 'predictions' / f'step_{step}.json') as f:
    predictions = json.load(f)
  assert set(predictions) == {'version', 'results', 'external_data'}
  assert set(predictions['results']) == set(gt_videos)
  for detections in predictions['results'].values():
    for d in detections:
      assert set(d) == {'label', 'score', 'segment'}
      assert len(d['segment']) == 2 and d['segment'][0] <= d['segment'][1]
  if step == 24:  # the binary's restore + predict reproduces the trainer's final evaluation
    assert predictions == trainer_predictions

  # eval/step_N.json: the full result, with the checkpoint it came from.
  with open(workdir / 'eval' / f'step_{step}.json') as f:
    result = json.load(f)
  assert result['checkpoint'] == {'step': step, 'which': which}
  assert result['protocol'] == 'rskp' and result['subset'] == 'test'
  assert result['tiou_thresholds'] == pytest.approx(TIOU)
  assert len(result['mAP']) == len(TIOU)
  assert result['num_videos'] == len(gt_videos) and result['num_instances'] == num_instances
  assert result['average_mAP'] == pytest.approx(np.mean(result['mAP']))
  assert 'classification_mAP' in result
  if step in (12, 24):  # evaluated by the trainer too: the same numbers
    logged = _trainer_eval(workdir, step)
    assert logged['eval/average_mAP'] == pytest.approx(result['average_mAP'], abs=1e-6)


def test_evaluate_missing_step_names_the_steps(run_copy, tiny_shards):
  """A step with no checkpoint fails before any prediction, naming the steps there are."""
  from launch import evaluate

  workdir, _ = run_copy
  config = run_dir.load_config(str(workdir))
  with pytest.raises(FileNotFoundError, match=r'No checkpoint for step 7 .*\[6, 12, 18, 24\]'):
    evaluate.evaluate_checkpoint(config, str(workdir), '7')


def test_score_dispatch_on_written_predictions(run_copy, tiny_shards, jax_cache_dir, tmp_path):
  """`python -m launch.evaluate score ...` (issf-eval score) on the model's predictions."""
  workdir, trainer_predictions = run_copy
  pred_path = tmp_path / 'pred.json'
  with open(pred_path, 'w') as f:
    json.dump(trainer_predictions, f)
  out_json = tmp_path / 'score.json'
  gt_path = tiny_shards / 'ground_truth.json'
  proc = run_python(
    ['-m', 'launch.evaluate', 'score', '--predictions', pred_path, '--ground_truth', gt_path,
     '--subset', 'test', '--protocol', 'official', '--tiou', '0.1:0.7:0.1',
     '--output_json', out_json],
    subprocess_env(jax_cache_dir),
  )  # fmt: skip
  gt, gt_videos, num_instances = _ground_truth(tiny_shards)
  assert 'protocol: official' in proc.stdout, proc.stdout
  with open(out_json) as f:
    scored = json.load(f)
  assert scored['protocol'] == 'official' and scored['subset'] == 'test'
  assert scored['tiou_thresholds'] == TIOU  # exact decimals, 0.3 is 0.3
  assert scored['num_videos'] == len(gt_videos) and scored['num_instances'] == num_instances
  # The model predicts classes that have no GT instance in the tiny test subset: scored as
  # taxonomy classes without GT (skipped with a warning), not rejected.
  assert gt['taxonomy'] and not set(gt['taxonomy']) <= _labels(gt_videos)
  assert 'not scored' in proc.stderr, proc.stderr
  with pytest.warns(UserWarning, match='not scored'):
    expected = evaluation.evaluate_official(gt, trainer_predictions, subset='test',
                                            tiou_thresholds=TIOU)  # fmt: skip
  np.testing.assert_allclose(scored['mAP'], expected['mAP'], rtol=0, atol=1e-12)
  assert scored['average_mAP'] == pytest.approx(expected['average_mAP'], abs=1e-12)
  assert 0 < scored['average_mAP'] <= 1  # the model found something (not all zero)


def test_evaluate_reports_both_protocols(tiny_run, tmp_path, capsys):
  """One Evaluator for the trainer and issf-eval: with eval.extra_protocols, the rskp result
  of a THUMOS-style run carries the official one, both are printed once, and eval/step_N.json
  holds both; the official numbers are those of scoring the written predictions file."""
  from issf_jax.train import evaluator
  from launch import evaluate

  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  config = run_dir.load_config(str(workdir))
  config.eval.extra_protocols = ('official',)
  result = evaluate.evaluate_checkpoint(config, str(workdir), '24')
  out = capsys.readouterr().out
  assert out.count('protocol: rskp') == 1 and out.count('protocol: official') == 1, out
  assert result['protocol'] == 'rskp' and result['extra']['official']['protocol'] == 'official'

  with open(workdir / 'predictions' / 'step_24.json') as f:
    predictions = json.load(f)
  with open(config.data.shards_dir + '/ground_truth.json') as f:
    gt = json.load(f)
  with pytest.warns(UserWarning, match='not scored'):
    expected = evaluation.evaluate_official(gt, predictions, subset='test', tiou_thresholds=TIOU)
  official = result['extra']['official']
  np.testing.assert_allclose(official['mAP'], expected['mAP'], rtol=0, atol=1e-12)

  with open(workdir / 'eval' / 'step_24.json') as f:
    written = json.load(f)
  assert written['extra']['official']['mAP'] == pytest.approx(official['mAP'], abs=1e-12)
  assert written['average_mAP'] == pytest.approx(result['average_mAP'], abs=1e-12)
  summary = evaluator.summary_metrics(result)
  assert summary['official/average_mAP'] == pytest.approx(official['average_mAP'])
  assert summary['average_mAP'] == pytest.approx(result['average_mAP'])


def test_evaluate_with_a_config_of_another_shape_is_one_line(run_copy, tiny_shards, jax_cache_dir):
  """A checkpoint that does not match the config: exit 2, one line naming the field."""
  workdir, _ = run_copy
  proc = run_python(
    ['-m', 'launch.evaluate', '--workdir', workdir, '--config', 'configs/synthetic.py',
     f'--config.data.shards_dir={tiny_shards}', '--config.model.feature_dim=64',
     '--config.model.embed_dim=32'],
    subprocess_env(jax_cache_dir), check=False,
  )  # fmt: skip
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  [line] = [line for line in proc.stderr.splitlines() if 'error:' in line]
  assert line.startswith('issf-eval: error: ') and 'embed_dim: checkpoint 64 vs config 32' in line


# ---- CAS threshold sweep (--sweep_scales) -------------------------------------------------------


def test_sweep_scale_one_is_the_trainers_evaluation(run_copy, jax_cache_dir):
  """The sweep on the test split: scale 1 is the configured range, so its average mAP is the one
  the trainer logged for the latest step; every row is written and the best is the maximum."""
  workdir, _ = run_copy
  proc = run_python(
    ['-m', 'launch.evaluate', '--workdir', workdir, '--sweep_scales', '2,1,0.5', '--subset',
     'test'],
    subprocess_env(jax_cache_dir),
  )  # fmt: skip
  with open(workdir / 'sweep' / 'step_24_test.json') as f:
    result = json.load(f)
  rows = {r['scale']: r for r in result['rows']}
  assert list(rows) == [2.0, 1.0, 0.5] and result['subset'] == 'test'
  assert result['protocol'] == 'rskp' and result['checkpoint'] == {'step': 24, 'which': 'latest'}
  logged = _trainer_eval(workdir, 24)['eval/average_mAP']
  assert rows[1.0]['average_mAP'] == pytest.approx(logged, abs=1e-12)
  assert rows[1.0]['thresholds_start'] == 0.001 and rows[2.0]['thresholds_step'] == 0.004
  assert all(r['num_thresholds'] == 20 for r in rows.values())
  assert result['best']['average_mAP'] == max(r['average_mAP'] for r in rows.values())
  best = result['best']['scale']
  overrides = '--config.eval.proposals.thresholds_start='
  assert f'best: scale {best:g}; to use it: {overrides}' in proc.stdout
  assert proc.stdout.count('<- best') == 1


@pytest.mark.parametrize(
  'args, message',
  [
    (['--sweep_scales', '1', '--subset', 'validation'], "--subset 'validation'"),
    (['--sweep_scales', '1,-2'], 'scales must be positive'),
    (['--sweep_scales', 'a,b'], 'not a comma-separated list'),
    (['--subset', 'train'], '--subset goes with --sweep_scales'),
  ],
)
def test_sweep_bad_input_is_one_line(run_copy, jax_cache_dir, args, message):
  workdir, _ = run_copy
  proc = run_python(
    ['-m', 'launch.evaluate', '--workdir', workdir, *args], subprocess_env(jax_cache_dir),
    check=False,
  )  # fmt: skip
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert message in proc.stderr and proc.stderr.strip().count('\n') == 0, proc.stderr


def test_scaled_proposals_multiplies_the_range_only():
  from configs.common import proposal_config
  from issf_jax.train import sweep

  base = proposal_config('activitynet')
  same = sweep.scaled_proposals(base, 1.0)
  assert same.to_dict() == base.to_dict() and same is not base
  half = sweep.scaled_proposals(base, 0.5)
  scaled = (half.thresholds_start, half.thresholds_stop, half.thresholds_step)
  assert scaled == (0.0005, 0.02, 0.001)
  assert half.nms_threshold == base.nms_threshold and base.thresholds_start == 0.001
  assert sweep.parse_scales('1, 0.5,1') == [1.0, 0.5]  # Repeats once, in the given order.
