"""`issf-eval score` end to end (launch/score.py), --tiou parsing and the results table."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import pytest

from issf_jax.evaluation import format_results_table, range_averages
from launch import score
from tests.conftest import data_file

REPO = pathlib.Path(__file__).parents[1]
REPO_GOLDEN = REPO / 'tests' / 'testdata' / 'official_eval'
GOLDEN = pathlib.Path(os.environ.get('ISSF_OFFICIAL_GOLDEN_DIR') or REPO_GOLDEN)
KEYS = {
  'protocol',
  'subset',
  'tiou_thresholds',
  'mAP',
  'average_mAP',
  'per_class_ap',
  'num_videos',
  'num_instances',
}


def _write(path: pathlib.Path, obj) -> str:
  path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
  return str(path)


def _run(capsys, **flags):
  """score.main with --name value flags given as keywords; returns (rc, stdout, stderr)."""
  argv = [x for name, value in flags.items() for x in (f'--{name}', str(value))]
  rc = score.main(argv)
  out, err = capsys.readouterr()
  return rc, out, err


def _plain_copy(path: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  """`path` itself, or a decompressed copy in tmp_path when it is gzipped (the CLI reads JSON)."""
  if path.suffix != '.gz':
    return path
  out = tmp_path / path.name.removesuffix('.gz')
  out.write_bytes(gzip.decompress(path.read_bytes()))
  return out


def test_score_reproduces_the_official_golden(tmp_path, capsys):
  expected = json.loads((GOLDEN / 'expected.json').read_text())
  case = expected['cases']['shifted']
  gt_name = pathlib.PurePath(expected['ground_truth']['file']).name
  out_json = tmp_path / 'out.json'
  rc, out, err = _run(
    capsys,
    predictions=_plain_copy(data_file(GOLDEN, case['prediction_file']), tmp_path),
    ground_truth=_plain_copy(data_file(REPO_GOLDEN, gt_name), tmp_path),
    subset='Test',
    protocol='official',
    tiou='0.1:0.7:0.1',
    output_json=out_json,
  )
  assert rc == 0, err
  result = json.loads(out_json.read_text())
  assert KEYS <= set(result)
  assert result['protocol'] == 'official' and result['subset'] == 'Test'
  assert result['tiou_thresholds'] == expected['tiou_thresholds']
  assert result['num_videos'] == 212 and result['num_instances'] == 3358
  for got, want in zip(result['mAP'], case['mAP'], strict=True):
    assert abs(got - want) <= 1e-9
  assert abs(result['average_mAP'] - case['average_mAP']) <= 1e-9
  for name, ap in case['per_class_ap'].items():
    assert max(abs(a - b) for a, b in zip(result['per_class_ap'][name], ap, strict=True)) <= 1e-9
  # The printed table is in percent.
  assert f'{100 * case["mAP"][0]:.2f}' in out and 'official' in out and '0.3:0.7' in out


def _tiny_gt(tmp_path, subset='test') -> str:
  video = {'subset': subset, 'annotations': [{'segment': [0.0, 10.0], 'label': 'A'}]}
  return _write(tmp_path / 'gt.json', {'database': {'v': video}})


def test_standalone_module_run(tmp_path):
  gt = _tiny_gt(tmp_path, subset='validation')
  results = {'v': [{'label': 'A', 'score': 0.5, 'segment': [0.0, 10.0]}]}
  pred = _write(tmp_path / 'p.json', {'results': results})
  argv = [
    '--predictions',
    pred,
    '--ground_truth',
    gt,
    '--subset',
    'validation',
    '--tiou',
    '0.5,.75',
  ]
  proc = subprocess.run(
    [sys.executable, '-m', 'launch.score', *argv],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert '100.00' in proc.stdout


@pytest.mark.parametrize(
  'content, message',
  [
    ('{"results": {"v": [', 'invalid JSON'),
    ({'results': {'v': [{'label': 'A', 'score': 0.5}]}}, 'results'),
    ({'results': {'v': [{'label': 'A', 'score': 0.5, 'segment': [3.0]}]}}, 'segment'),
    ({'results': {'v': [{'label': 'Nope', 'score': 0.5, 'segment': [0, 1]}]}}, "'Nope'"),
  ],
)
def test_bad_predictions_give_a_clear_error(tmp_path, capsys, content, message):
  pred = _write(tmp_path / 'bad_pred.json', content)
  rc, _, err = _run(capsys, predictions=pred, ground_truth=_tiny_gt(tmp_path), subset='test')
  assert rc != 0
  assert 'bad_pred.json' in err and message in err
  assert 'Traceback' not in err and err.count('\n') == 1


def test_bad_ground_truth_and_missing_file(tmp_path, capsys):
  pred = _write(tmp_path / 'p.json', {'results': {}})
  gt = _tiny_gt(tmp_path, subset='train')
  rc, _, err = _run(capsys, predictions=pred, ground_truth=gt, subset='test')
  assert rc != 0 and 'gt.json' in err and "subset 'test'" in err
  rc, _, err = _run(capsys, predictions=pred, ground_truth=tmp_path / 'no.json', subset='test')
  assert rc != 0 and 'no.json' in err and 'not found' in err
  rc, _, err = _run(capsys, predictions=pred, ground_truth=gt, subset='train', protocol='rskp')
  assert rc != 0 and 'rskp' in err


def test_parse_tiou():
  assert score.parse_tiou('0.1:0.7:0.1') == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
  anet = score.parse_tiou('0.5:0.95:0.05')
  assert len(anet) == 10 and anet[1] == 0.55 and anet[-1] == 0.95
  assert score.parse_tiou('0.3, 0.5,0.7') == [0.3, 0.5, 0.7]
  for bad in ('0.7:0.1:0.1', 'a:b:c', '0.1:0.7', '1.5', '0.1:0.7:0'):
    with pytest.raises(score.InputError):
      score.parse_tiou(bad)


def test_results_table_thumos_rskp_note():
  result = {
    'protocol': 'rskp',
    'subset': 'test',
    'tiou_thresholds': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    'mAP': [0.0] * 7,
    'average_mAP': 0.0,
    'natural_mAP': [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    'natural_average_mAP': 0.4,
    'early_return_zero': True,
    'empty_classes': ['CleanAndJerk'],
    'classification_mAP': 0.8867528,
    'num_videos': 212,
    'num_instances': 3358,
  }
  text = format_results_table(result)
  for piece in (
    'rskp',
    'videos: 212',
    'instances: 3358',
    '0.1:0.5',
    'classification mAP (%): 88.68',
    "['CleanAndJerk']",
    '70.00',
    'average 40.00',
  ):
    assert piece in text
  assert range_averages({**result, 'mAP': result['natural_mAP']}) == pytest.approx(
    {'0.1:0.5': 0.5, '0.3:0.7': 0.3, '0.1:0.7': 0.4}
  )


def test_results_table_activitynet_average():
  thresholds = [0.5 + 0.05 * i for i in range(10)]
  result = {
    'protocol': 'official',
    'subset': 'validation',
    'tiou_thresholds': thresholds,
    'mAP': [0.5] * 10,
    'average_mAP': 0.5,
    'num_videos': 3,
    'num_instances': 4,
  }
  text = format_results_table(result)
  assert '0.5:0.95 50.00' in text and '0.1:0.5' not in text and '0.55' in text


@pytest.mark.parametrize(
  'segment, shown',
  [([5.0, 2.0], '[5, 2]'), ([-1.0, 2.0], '[-1, 2]'), ([0.0, float('inf')], '[0, inf]')],
)
def test_invalid_segment_is_rejected_naming_the_video(tmp_path, capsys, segment, shown):
  """start > end (tIoU 0/0 = NaN, which matched like a true segment), a negative or an infinite
  time: exit 2 and one line naming the file and the video."""
  results = {
    'v': [{'label': 'A', 'score': 0.9, 'segment': [0.0, 10.0]}],
    'w_bad': [{'label': 'A', 'score': 0.5, 'segment': segment}],
  }
  pred = _write(tmp_path / 'pred.json', json.dumps({'results': results}))
  rc, out, err = _run(capsys, predictions=pred, ground_truth=_tiny_gt(tmp_path), subset='test')
  assert rc == 2 and out == ''
  assert err.count('\n') == 1 and 'Traceback' not in err
  assert 'pred.json' in err and "video 'w_bad'" in err and shown in err


def test_predictions_outside_the_subset_count_as_false_positives(tmp_path, capsys):
  """As officially: scored as false positives, with a warning that gives their number."""
  hit = {'label': 'A', 'score': 0.5, 'segment': [0.0, 10.0]}
  above = {'label': 'A', 'score': 0.9, 'segment': [0.0, 10.0]}
  gt = _tiny_gt(tmp_path)
  pred = _write(tmp_path / 'p.json', {'results': {'v': [hit], 'x': [above], 'y': [above]}})
  out_json = tmp_path / 'out.json'
  rc, _, err = _run(capsys, predictions=pred, ground_truth=gt, subset='test',
                    tiou='0.5', output_json=out_json)  # fmt: skip
  assert rc == 0, err
  assert 'warning: 2 predictions on 2 videos that are not in the ground truth subset' in err
  result = json.loads(out_json.read_text())
  # Two false positives ranked above the one true positive: precision 1/3 at recall 1.
  assert result['mAP'] == [pytest.approx(1 / 3)]
  assert result['num_predictions_outside_subset'] == 2 and result['videos_outside_subset'] == 2
