"""The fast (msgspec) and stdlib paths of reading a predictions file agree bit for bit."""

import json
import os
import threading

import numpy as np
import pytest

from issf_jax.evaluation import evaluate_official, prediction_file
from issf_jax.evaluation import ground_truth as gt_lib
from launch import cli, score

msgspec = pytest.importorskip('msgspec')

# Number spellings a JSON writer may produce; each must decode to the same float64 on both paths.
NUMBERS = [
  '0',
  '-0.0',
  '7',
  '1E2',
  '2.5e-3',
  '0.30000000000000004',
  '0.1',
  '123456789.123456789123',
  '1.7976931348623157e308',
  '4.9e-324',
  '2.2250738585072014e-308',
  '9007199254740993',
  '123456789012345678901234567890',
]


def _file_text(rng) -> str:
  """A predictions file as text: odd number spellings, unicode labels, empty videos."""
  labels = ['Rock climbing', 'Drinking beer', 'Tai chi', 'Café au lait', 'A']
  videos = []
  for v in range(40):
    items = []
    for _ in range(int(rng.integers(0, 6))):
      s, e, sc = (
        NUMBERS[int(rng.integers(len(NUMBERS)))] if rng.random() < 0.3 else repr(float(x))
        for x in rng.uniform(0, 300, 3)
      )
      label = labels[int(rng.integers(len(labels)))]
      extra = ', "extra": [1, {"k": null}]' if rng.random() < 0.1 else ''
      items.append(f'{{"label": {json.dumps(label)}, "score": {sc}, "segment": [{s}, {e}]{extra}}}')
    videos.append(f'"vid_{v}é": [{", ".join(items)}]')
  return '{"version": "x", "results": {' + ', '.join(videos) + '}, "external_data": {}}'


def _assert_same(a: gt_lib.Predictions, b: gt_lib.Predictions):
  assert a.videos == b.videos and a.labels == b.labels
  for name in ('video_index', 'label_index', 'start', 'end', 'score'):
    x, y = getattr(a, name), getattr(b, name)
    assert x.dtype == y.dtype and x.shape == y.shape, name
    assert np.array_equal(x.view(np.int64), y.view(np.int64)), name  # Bitwise, -0.0 included.


@pytest.mark.parametrize('fast', [True, False])
def test_a_video_listed_twice_is_refused(tmp_path, fast):
  """A JSON object keeps the last of two equal keys: the first list of a video listed twice
  was dropped without a word. Both readers name the key."""
  path = tmp_path / 'pred.json'
  path.write_text(_file_text(np.random.default_rng(0)).replace('"vid_7é"', '"vid_3é"'))
  with pytest.raises(gt_lib.FormatError, match="key 'vid_3é' appears twice"):
    prediction_file.load_predictions(path, fast=fast)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_fast_and_stdlib_paths_give_identical_arrays(tmp_path, seed):
  path = tmp_path / 'pred.json'
  path.write_text(_file_text(np.random.default_rng(seed)), encoding='utf-8')
  fast = prediction_file.load_predictions(path)
  assert isinstance(fast, gt_lib.Predictions)  # The typed decoder took it.
  stdlib = prediction_file.load_predictions(path, fast=False)
  assert isinstance(stdlib, dict)
  slow = gt_lib.parse_predictions(json.loads(path.read_text(encoding='utf-8')))
  _assert_same(fast, gt_lib.parse_predictions(stdlib))
  _assert_same(fast, slow)
  assert len(fast) == sum(len(v) for v in json.loads(path.read_text())['results'].values())
  # Per-prediction views agree with the file, in file order.
  results = json.loads(path.read_text())['results']
  want = [(v, p['label']) for v, items in results.items() for p in items]
  assert list(zip(fast.video, fast.label, strict=True)) == want


def test_known_labels_give_the_same_arrays_and_others_fall_back(tmp_path):
  path = tmp_path / 'pred.json'
  path.write_text(_file_text(np.random.default_rng(5)), encoding='utf-8')
  plain = prediction_file.load_predictions(path)
  all_labels = ['Rock climbing', 'Drinking beer', 'Tai chi', 'Café au lait', 'A', 'unused']
  shared = prediction_file.load_predictions(path, labels=all_labels)
  assert isinstance(shared, gt_lib.Predictions)
  _assert_same(shared, plain)
  # A label outside the set: the stdlib path's dict, which parses to the same arrays.
  missing = prediction_file.load_predictions(path, labels=all_labels[1:])
  assert isinstance(missing, dict)
  _assert_same(gt_lib.parse_predictions(missing), plain)


def test_a_pipe_is_read_like_a_file(tmp_path):
  """A FIFO cannot be memory-mapped; it is read instead, with the same result."""
  text = _file_text(np.random.default_rng(6))
  path = tmp_path / 'pred.json'
  path.write_text(text, encoding='utf-8')
  fifo = tmp_path / 'pred.fifo'
  os.mkfifo(fifo)
  writer = threading.Thread(target=lambda: fifo.write_text(text, encoding='utf-8'))
  writer.start()
  from_pipe = prediction_file.load_predictions(fifo)
  writer.join()
  _assert_same(from_pipe, prediction_file.load_predictions(path))


def test_without_msgspec_the_stdlib_path_is_taken(tmp_path, monkeypatch):
  path = tmp_path / 'pred.json'
  path.write_text(_file_text(np.random.default_rng(3)), encoding='utf-8')
  fast = prediction_file.load_predictions(path)
  monkeypatch.setattr(prediction_file, 'msgspec', None)
  assert isinstance(prediction_file.load_predictions(path), dict)
  _assert_same(fast, gt_lib.parse_predictions(prediction_file.load_predictions(path)))


def test_files_outside_the_typed_schema_fall_back_and_score_the_same(tmp_path):
  gt = {'database': {'v': {'subset': 'test', 'annotations': [{'segment': [0, 10], 'label': '3'}]}}}
  pred = {'v': [{'label': 3, 'score': 0.9, 'segment': [0, 10]}]}  # Bare results, numeric label.
  path = tmp_path / 'pred.json'
  path.write_text(json.dumps(pred))
  loaded = prediction_file.load_predictions(path)
  assert loaded == pred  # The stdlib dict, for parse_predictions.
  result = evaluate_official(gt, loaded, subset='test', tiou_thresholds=[0.5])
  assert result['mAP'] == [1.0]


def test_evaluate_official_takes_flattened_predictions(tmp_path):
  rng = np.random.default_rng(4)
  anns = [{'segment': [s, s + 20.0], 'label': 'AB'[i % 2]} for i, s in enumerate(range(0, 200, 25))]
  gt = {'database': {'v': {'subset': 'test', 'annotations': anns}}}
  items = [
    {'label': 'AB'[int(rng.integers(2))], 'score': float(rng.random()), 'segment': [s, s + 15.0]}
    for s in rng.uniform(0, 200, 50)
  ]
  path = tmp_path / 'pred.json'
  path.write_text(json.dumps({'results': {'v': items, 'other': items[:5]}}))
  fast = prediction_file.load_predictions(path)
  assert isinstance(fast, gt_lib.Predictions)
  thresholds = [0.1, 0.3, 0.5, 0.7]
  got = evaluate_official(gt, fast, subset='test', tiou_thresholds=thresholds)
  want = evaluate_official(
    gt, json.loads(path.read_text()), subset='test', tiou_thresholds=thresholds
  )
  assert got == want and 0 < got['average_mAP'] < 1


@pytest.mark.parametrize(
  'text, message',
  [
    ('{"results": {"v": [', 'invalid JSON'),
    ('{"results": {"v": [{"label": "A", "score": true, "segment": [0, 1]}]}}', "results['v'][0]"),
    ('{"results": {"v": [{"label": "A", "score": "0.5", "segment": [0, 1]}]}}', "results['v'][0]"),
    ('{"results": {"v": [{"label": "A", "score": 0.5, "segment": [0, NaN]}]}}', 'NaN'),
    ('{"results": {"v": [{"label": "A", "score": NaN, "segment": [0, 1]}]}}', 'NaN'),
    ('{"results": {"v": [{"label": "A", "score": 0.5, "segment": [1]}]}}', 'segment'),
    ('{"results": {"v": {"label": "A"}}}', "results['v']"),
    ('\xff\xfe', 'bad_pred.json'),
    ('', 'invalid JSON'),  # Empty: cannot be memory-mapped, read instead.
  ],
)
def test_malformed_file_gives_the_clear_error(tmp_path, capsys, text, message):
  """Files the typed decoder rejects still get the stdlib path's one-line error, exit status 2."""
  pred = tmp_path / 'bad_pred.json'
  pred.write_bytes(text.encode('latin-1'))
  gt = tmp_path / 'gt.json'
  video = {'subset': 'test', 'annotations': [{'segment': [0.0, 10.0], 'label': 'A'}]}
  gt.write_text(json.dumps({'database': {'v': video}}))
  rc = score.main(['--predictions', str(pred), '--ground_truth', str(gt), '--subset', 'test'])
  _, err = capsys.readouterr()
  assert rc == cli.EXIT_USER_ERROR
  assert 'bad_pred.json' in err and message in err
  assert 'Traceback' not in err and err.count('\n') == 1
