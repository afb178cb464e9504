"""The `official` protocol against the official ActivityNet evaluator's goldens, plus its rules.

Cases come from $ISSF_OFFICIAL_GOLDEN_DIR, else tests/testdata/official_eval: every `pred_*.json`
and `handmade/pred_*.json` found (or its gzipped `.json.gz`) is checked against `expected.json`;
finding none is a failure.
"""

import gzip
import hashlib
import pathlib

import numpy as np
import pytest

from issf_jax.evaluation import FormatError, evaluate_official
from tests.conftest import golden_dir as _golden_dir
from tests.conftest import read_json

THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def golden_dir() -> pathlib.Path:
  return _golden_dir('official_eval', 'ISSF_OFFICIAL_GOLDEN_DIR')


def _cases():
  """(prediction file, expected entry, GT file, subset) for every prediction file found."""
  root = golden_dir()
  files = [f for p in ('pred_*.json', 'pred_*.json.gz') for f in root.glob(p)]
  files += [f for p in ('pred_*.json', 'pred_*.json.gz') for f in root.glob('handmade/' + p)]
  if not files:
    return []
  expected = read_json(root / 'expected.json')
  by_file = {}
  for case in expected['cases'].values():
    gt = expected['ground_truth']
    by_file[case['prediction_file']] = (case, gt['file'], gt['subset'])
  for case in expected.get('handmade_cases', {}).values():
    by_file[case['prediction_file']] = (case, case['ground_truth_file'], case['subset'])
  out = []
  for f in sorted(files):
    rel = f.relative_to(root).as_posix()
    case, gt_file, subset = by_file.get(rel.removesuffix('.gz'), (None, None, None))
    out.append((rel, case, gt_file, subset))
  return out


def _resolve_gt(gt_file: str) -> pathlib.Path:
  """The GT file named in expected.json: relative to the golden folder, or (the layout the goldens
  were made in, `<root>/golden/official_eval`) to the folder two levels up; plain or gzipped; in
  the in-repository copy, `thumos14.json.gz` in the golden folder."""
  root = golden_dir()
  name = pathlib.PurePath(gt_file).name
  up_two = [base / gt_file for base in root.resolve().parents[1:2]]
  for path in (root / gt_file, *up_two, root / name):
    for candidate in (path, path.with_name(path.name + '.gz')):
      if candidate.is_file():
        return candidate
  raise FileNotFoundError(gt_file)


_GT_CACHE = {}


def _load_gt(path: pathlib.Path):
  if path not in _GT_CACHE:
    _GT_CACHE[path] = read_json(path)
  return _GT_CACHE[path]


CASES = _cases()


@pytest.mark.parametrize('case', CASES or [None], ids=[c[0] for c in CASES] or ['none'])
def test_official_goldens(case):
  assert case is not None, f'no golden prediction files found in {golden_dir()}'
  rel, expected, gt_file, subset = case
  assert expected is not None, f'{rel} has no entry in expected.json'
  gt = _load_gt(_resolve_gt(gt_file))
  pred = read_json(golden_dir() / rel)
  tiou = read_json(golden_dir() / 'expected.json')['tiou_thresholds']
  got = evaluate_official(gt, pred, subset=subset, tiou_thresholds=tiou)
  np.testing.assert_allclose(got['mAP'], expected['mAP'], rtol=0, atol=1e-9)
  assert abs(got['average_mAP'] - expected['average_mAP']) <= 1e-9
  assert set(got['per_class_ap']) == set(expected['per_class_ap'])
  for name, ap in expected['per_class_ap'].items():
    np.testing.assert_allclose(got['per_class_ap'][name], ap, rtol=0, atol=1e-9, err_msg=name)
  if 'num_predictions' in expected:
    assert got['num_predictions'] == expected['num_predictions']
  assert got['protocol'] == 'official' and got['tiou_thresholds'] == tiou


def test_thumos_ground_truth_is_the_one_the_goldens_were_made_with():
  expected = read_json(golden_dir() / 'expected.json')['ground_truth']
  path = _resolve_gt(expected['file'])
  raw = path.read_bytes()
  if path.suffix == '.gz':
    raw = gzip.decompress(raw)
  assert hashlib.md5(raw).hexdigest() == expected['md5'], path


def _gt(*segments, subset='test'):
  """GT dict from (video, start, end, label) tuples."""
  db = {}
  for video, s, e, label in segments:
    entry = db.setdefault(video, {'subset': subset, 'duration': 100.0, 'annotations': []})
    entry['annotations'].append({'segment': [s, e], 'label': label})
  return {'version': 'x', 'taxonomy': [], 'database': db}


def _pred(*items):
  results = {}
  for video, s, e, label, score in items:
    results.setdefault(video, []).append({'label': label, 'score': score, 'segment': [s, e]})
  return {'version': 'x', 'results': results, 'external_data': {}}


def _ap(gt, pred, thr=0.5, subset='test'):
  return evaluate_official(gt, pred, subset=subset, tiou_thresholds=[thr])['mAP'][0]


def test_ap_oracles():
  gt = _gt(('v', 1.5, 3.5, 'A'))
  good, bad = ('v', 1.5, 3.5, 'A'), ('v', 10.0, 20.0, 'A')
  assert _ap(gt, _pred((*good, 0.9), (*bad, 0.8))) == 1.0
  assert _ap(gt, _pred((*bad, 0.9), (*good, 0.8))) == 0.5
  assert _ap(gt, _pred((*bad, 0.9))) == 0.0


def test_iou_equal_to_threshold_matches_and_best_gt_is_taken():
  gt = _gt(('v', 0.0, 10.0, 'A'), ('v', 4.0, 12.0, 'A'))
  # [0, 5] vs [0, 10]: IoU exactly 0.5 -> match at 0.5, not at 0.6.
  assert _ap(gt, _pred(('v', 0.0, 5.0, 'A', 0.9)), 0.5) == 0.5
  assert _ap(gt, _pred(('v', 0.0, 5.0, 'A', 0.9)), 0.6) == 0.0
  # [4, 11] prefers GT [4, 12] (IoU .875) over [0, 10] (.545); then [0, 10] is still free.
  pred = _pred(('v', 4.0, 11.0, 'A', 0.9), ('v', 0.0, 9.0, 'A', 0.8))
  assert _ap(gt, pred, 0.5) == 1.0


def test_false_positives_on_other_videos_and_empty_classes():
  gt = _gt(('v', 0.0, 10.0, 'A'), ('w', 0.0, 10.0, 'B'))
  pred = _pred(('absent', 0.0, 10.0, 'A', 0.9), ('v', 0.0, 10.0, 'A', 0.8))
  got = evaluate_official(gt, pred, subset='test', tiou_thresholds=[0.5])
  assert got['per_class_ap'] == {'A': [0.5], 'B': [0.0]}  # B has no prediction: AP 0, counted.
  assert got['mAP'] == [0.25] and got['classes_without_predictions'] == ['B']
  assert got['num_videos'] == 2 and got['num_instances'] == 2


def test_subset_names_are_tolerant_and_classes_come_from_the_subset():
  gt = _gt(('v', 0.0, 10.0, 'A'), subset='Test')
  gt['database']['t'] = {'subset': 'training', 'annotations': [{'segment': [0, 1], 'label': 'Z'}]}
  pred = _pred(('v', 0.0, 10.0, 'A', 0.9))
  for name in ('Test', 'test', 'TEST', 'testing'):
    assert _ap(gt, pred, subset=name) == 1.0
  with pytest.raises(FormatError, match="'Z'"):
    _ap(gt, _pred(('v', 0.0, 10.0, 'Z', 0.9)), subset='test')


def test_taxonomy_labels_without_gt_in_the_subset_are_not_scored():
  gt = _gt(('v', 0.0, 10.0, 'A'))
  gt['taxonomy'] = [{'nodeName': 'A', 'nodeId': 1}, {'nodeName': 'B', 'nodeId': 2}]
  pred = _pred(('v', 0.0, 10.0, 'A', 0.5), ('v', 0.0, 10.0, 'B', 0.9))
  with pytest.warns(UserWarning, match='not scored'):
    got = evaluate_official(gt, pred, subset='test', tiou_thresholds=[0.5])
  assert got['per_class_ap'] == {'A': [1.0]} and got['num_predictions'] == 1
  with pytest.raises(FormatError, match="'C'"):
    evaluate_official(gt, _pred(('v', 0.0, 10.0, 'C', 0.9)), subset='test', tiou_thresholds=[0.5])


def test_score_ties_follow_the_official_argsort():
  # Equal scores: the official code ranks a class's predictions (file order) with
  # argsort()[::-1]. With numpy's stable small-array sort the later (false) one goes first.
  gt = _gt(('v', 0.0, 10.0, 'A'))
  pred = _pred(('v', 0.0, 10.0, 'A', 0.5), ('v', 50.0, 60.0, 'A', 0.5))
  false_first = np.argsort(np.array([0.5, 0.5]))[::-1][0] == 1
  assert _ap(gt, pred) == (0.5 if false_first else 1.0)


def test_malformed_inputs_raise_format_error():
  gt = _gt(('v', 0.0, 10.0, 'A'))
  for bad in (
    {'results': {'v': [{'label': 'A', 'score': 0.5}]}},
    {'results': {'v': [{'label': 'A', 'score': 'high', 'segment': [0, 1]}]}},
    {'results': {'v': [{'label': 'A', 'score': 0.5, 'segment': [0, 1, 2]}]}},
    {'results': {'v': {'label': 'A'}}},
    {'results': []},
    {'version': 'x', 'external_data': {}},
  ):
    with pytest.raises(FormatError):
      evaluate_official(gt, bad, subset='test', tiou_thresholds=[0.5])
  with pytest.raises(FormatError):
    evaluate_official({'no_database': 1}, _pred(), subset='test', tiou_thresholds=[0.5])


@pytest.mark.parametrize('lookup_limit', [1 << 23, 0])  # 0: binary searches, no lookup table.
def test_one_pass_equals_per_class_ap_bit_for_bit(lookup_limit, monkeypatch):
  """All classes at once (evaluate_official) against class_average_precision per class, on
  detector-like predictions with score ties, several GT per video and videos without GT."""
  from issf_jax.evaluation import ground_truth as gt_lib
  from issf_jax.evaluation import official

  monkeypatch.setattr(official, '_MAX_LOOKUP_TABLE', lookup_limit)
  rng = np.random.default_rng(0)
  names = ['A', 'B', 'C', 'D']
  database, results = {}, {}
  for v in range(30):
    anns = [
      {'segment': [s, s + float(rng.uniform(1, 30))], 'label': names[int(rng.integers(4))]}
      for s in rng.uniform(0, 100, int(rng.integers(0, 5)))
    ]
    database[f'v{v}'] = {'subset': 'test', 'annotations': anns}
    preds = []
    for _ in range(int(rng.integers(0, 40))):
      s = float(rng.uniform(0, 110))
      score = float(np.round(rng.random(), 1))  # Many ties.
      label = names[int(rng.integers(4))]
      preds.append({'label': label, 'score': score, 'segment': [s, s + float(rng.uniform(1, 30))]})
    results[f'v{v}' if v < 27 else f'only_pred{v}'] = preds
  gt = {'database': database}
  thresholds = np.linspace(0.1, 0.9, 9)
  got = evaluate_official(gt, {'results': results}, subset='test', tiou_thresholds=thresholds)
  parsed = gt_lib.parse_ground_truth(gt, 'test')
  pred = gt_lib.parse_predictions({'results': results})
  video = {v: i for i, v in enumerate(parsed.videos)}
  pv = np.array([video.setdefault(x, len(video)) for x in pred.video])
  pl = np.array([parsed.class_names.index(x) for x in pred.label])
  for c, name in enumerate(parsed.class_names):
    g, p = parsed.label == c, pl == c
    want = official.class_average_precision(
      parsed.video[g], parsed.start[g], parsed.end[g], pv[p], pred.start[p], pred.end[p],
      pred.score[p], thresholds,
    )  # fmt: skip
    assert np.array_equal(np.array(got['per_class_ap'][name]).view(np.int64), want.view(np.int64))
  assert 0 < got['average_mAP'] < 1
