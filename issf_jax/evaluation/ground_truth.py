"""Reading and checking ActivityNet-format ground truth and predictions.

Ground truth, as written by the data pipeline (missing keys tolerated where they are not needed):
  {"version", "taxonomy": [], "database": {video: {"subset": "train"|"test"|..., "duration": sec,
    "annotations": [{"segment": [s, e], "label": name}], "ambiguous": [[s, e], ...]}}}
Predictions: {"version", "results": {video: [{"label", "score", "segment": [s, e]}]},
  "external_data": {}}.

Subset names are matched tolerantly ('Test' = 'test' = 'testing', 'val' = 'validation',
'train' = 'training'), since the ActionFormer THUMOS14 json capitalises them and ActivityNet says
'validation'. Malformed input raises `FormatError` naming the offending entry; `launch/score.py`
prefixes the file name.
"""

import collections
import dataclasses
import itertools
import math
import operator
from collections.abc import Mapping

import numpy as np

from issf_common import errors, paths

_SUBSET_ALIASES = {
  'testing': 'test',
  'val': 'validation',
  'valid': 'validation',
  'training': 'train',
}


class FormatError(errors.InputError, ValueError):
  """A ground-truth or prediction dict that does not have the expected structure."""


def normalise_subset(name: str) -> str:
  """Canonical lower-case subset name: 'Test' -> 'test', 'training' -> 'train'."""
  name = str(name).strip().lower()
  return _SUBSET_ALIASES.get(name, name)


# Exact types accepted as numbers (JSON gives int/float; callers may pass numpy scalars); no bool.
_NUM = frozenset({int, float, np.float64, np.float32, np.int64, np.int32})


def _number(value, where: str) -> float:
  if type(value) not in _NUM:
    raise FormatError(f'{where}: expected a number, got {value!r}')
  return float(value)


def _segment(value, where: str) -> tuple[float, float]:
  if not isinstance(value, list | tuple) or len(value) != 2:
    raise FormatError(f'{where}: "segment" must be a [start, end] pair, got {value!r}')
  start, end = _number(value[0], where), _number(value[1], where)
  if math.isnan(start) or math.isnan(end):
    raise FormatError(f'{where}: segment {value!r} contains NaN')
  return start, end


@dataclasses.dataclass
class GroundTruth:
  """Flattened instances of one subset, in database order then annotation order.

  Attributes:
    videos: video ids of the subset, database order (including videos without annotations).
    class_names: labels of the subset in order of first appearance (the official evaluator's order).
    video: [G] int index into `videos`.
    label: [G] int index into `class_names`.
    start, end: [G] float64 seconds.
    ambiguous: video id -> [A, 2] float64 seconds (only for videos that have an 'ambiguous' key).
  """

  videos: list
  class_names: list
  video: np.ndarray
  label: np.ndarray
  start: np.ndarray
  end: np.ndarray
  ambiguous: dict

  @property
  def num_instances(self) -> int:
    return len(self.video)


def parse_ground_truth(ground_truth: Mapping, subset: str) -> GroundTruth:
  """Checks a ground-truth dict and flattens the instances of `subset`."""
  if not isinstance(ground_truth, Mapping) or not isinstance(ground_truth.get('database'), Mapping):
    raise FormatError('ground truth must be an object with a "database" object')
  want = normalise_subset(subset)
  videos, class_index = [], {}
  vid, lab, starts, ends, ambiguous = [], [], [], [], {}
  for video_id, entry in ground_truth['database'].items():
    where = f'database[{video_id!r}]'
    if not isinstance(entry, Mapping):
      raise FormatError(f'{where}: expected an object, got {type(entry).__name__}')
    if normalise_subset(entry.get('subset', '')) != want:
      continue
    annotations = entry.get('annotations', [])
    if not isinstance(annotations, list):
      raise FormatError(f'{where}: "annotations" must be a list')
    v = len(videos)
    videos.append(video_id)
    for k, ann in enumerate(annotations):
      here = f'{where}.annotations[{k}]'
      if not isinstance(ann, Mapping) or 'segment' not in ann or 'label' not in ann:
        raise FormatError(f'{here}: expected {{"segment": [s, e], "label": name}}, got {ann!r}')
      s, e = _segment(ann['segment'], here)
      if not (0 <= s <= e and math.isfinite(e)):  # as predictions are checked (official.py)
        raise FormatError(
          f'{here}: segment {ann["segment"]!r} is invalid (start > end, a negative or an '
          'infinite time)'
        )
      if not isinstance(ann['label'], str):  # 3 would become a class "3" of its own
        raise FormatError(f'{here}: label {ann["label"]!r} is not a string (a class name)')
      label = ann['label']
      vid.append(v)
      lab.append(class_index.setdefault(label, len(class_index)))
      starts.append(s)
      ends.append(e)
    if 'ambiguous' in entry:
      amb = entry['ambiguous'] or []
      pairs = [_segment(a, f'{where}.ambiguous[{k}]') for k, a in enumerate(amb)]
      ambiguous[video_id] = np.asarray(pairs, np.float64).reshape(-1, 2)
  return GroundTruth(
    videos=videos,
    class_names=list(class_index),
    video=np.asarray(vid, np.int64),
    label=np.asarray(lab, np.int64),
    start=np.asarray(starts, np.float64),
    end=np.asarray(ends, np.float64),
    ambiguous=ambiguous,
  )


def taxonomy_names(ground_truth: Mapping) -> list:
  """Class names of a GT's "taxonomy" (ActivityNet node dicts with "nodeName", or plain strings)."""
  names = []
  for node in ground_truth.get('taxonomy') or []:
    if isinstance(node, str):
      names.append(node)
    elif isinstance(node, Mapping) and 'nodeName' in node:
      names.append(str(node['nodeName']))
  return names


def known_labels(ground_truth: Mapping, parsed: GroundTruth) -> list:
  """Every label a prediction may carry: the subset's classes, then the taxonomy's names."""
  return [*parsed.class_names, *taxonomy_names(ground_truth)]


@dataclasses.dataclass
class Predictions:
  """Flattened predictions in file order, with videos and labels coded.

  Attributes:
    videos: [V] video ids, file order (a video with an empty list is kept).
    labels: [L] distinct labels, in order of first appearance.
    video_index: [P] int64 index into `videos`.
    label_index: [P] int64 index into `labels`.
    start, end, score: [P] float64.
  """

  videos: list
  labels: list
  video_index: np.ndarray
  label_index: np.ndarray
  start: np.ndarray
  end: np.ndarray
  score: np.ndarray

  def __len__(self) -> int:
    return len(self.score)

  @property
  def video(self) -> list:
    """[P] video id of each prediction."""
    return [self.videos[i] for i in self.video_index]

  @property
  def label(self) -> list:
    """[P] label of each prediction."""
    return [self.labels[i] for i in self.label_index]


def predictions_from_columns(videos, counts, labels, start, end, score) -> Predictions:
  """Builds `Predictions` from per-video counts and per-prediction columns, without a Python loop.

  Args:
    videos: [V] video ids; counts: [V] number of predictions of each video.
    labels: [P] label strings (any iterable); start, end, score: [P] float64 (array-likes).
  """
  counts = np.asarray(counts, np.int64).reshape(-1)
  # Codes in order of first appearance, assigned by the dict's C-level default factory.
  code = collections.defaultdict(itertools.count().__next__)
  label_index = np.fromiter(map(code.__getitem__, labels), np.int64, int(counts.sum()))
  return Predictions(
    videos=list(videos),
    labels=list(code),
    video_index=np.repeat(np.arange(len(counts), dtype=np.int64), counts),
    label_index=label_index,
    start=np.asarray(start, np.float64).reshape(-1),
    end=np.asarray(end, np.float64).reshape(-1),
    score=np.asarray(score, np.float64).reshape(-1),
  )


def parse_predictions(predictions: Mapping) -> Predictions:
  """Checks a predictions dict (the full file or just its "results" object) and flattens it.

  The common case is checked and flattened column-wise (C-level `map`s, no per-prediction Python
  code); any entry that fails the column checks sends the file to `_check_items`, which walks it
  and raises a `FormatError` naming the first bad entry.
  """
  if not isinstance(predictions, Mapping):
    raise FormatError('predictions must be an object with a "results" object')
  if 'results' not in predictions and {'version', 'external_data', 'database'} & set(predictions):
    raise FormatError('predictions must have a "results" object (video id -> list of predictions)')
  results = predictions.get('results', predictions)
  if not isinstance(results, Mapping):
    raise FormatError('"results" must be an object mapping video ids to lists of predictions')
  for video_id, items in results.items():
    if not isinstance(items, list):
      raise FormatError(f'results[{video_id!r}]: expected a list, got {type(items).__name__}')
  columns = _columns(results)
  if columns is None:
    _check_items(results)
    raise AssertionError('unreachable: _check_items accepted what _columns rejected')
  return columns


_SEQUENCE = frozenset({list, tuple})


def _columns(results: Mapping) -> Predictions | None:
  """Column-wise flattening of checked-shape results, or None if any entry is malformed."""
  items = list(itertools.chain.from_iterable(results.values()))
  try:
    segments = list(map(operator.itemgetter('segment'), items))
    scores = list(map(operator.itemgetter('score'), items))
    labels = list(map(str, map(operator.itemgetter('label'), items)))
    if not set(map(type, segments)) <= _SEQUENCE or not set(map(len, segments)) <= {2}:
      return None
    bounds = list(itertools.chain.from_iterable(segments))
    if not set(map(type, bounds)) <= _NUM or not set(map(type, scores)) <= _NUM:
      return None
    seg = np.array(bounds, np.float64).reshape(-1, 2)
    score = np.array(scores, np.float64)
  except (KeyError, TypeError, ValueError, OverflowError):
    return None
  if np.isnan(seg).any() or not np.isfinite(score).all():
    return None  # _check_items names the entry
  counts = np.fromiter(map(len, results.values()), np.int64, len(results))
  return predictions_from_columns(results, counts, labels, seg[:, 0], seg[:, 1], score)


def _check_items(results: Mapping) -> None:
  """Walks every prediction and raises a FormatError naming the first malformed one."""
  for video_id, items in results.items():
    for k, p in enumerate(items):
      here = f'results[{video_id!r}][{k}]'
      if not isinstance(p, Mapping) or not {'label', 'score', 'segment'} <= set(p):
        raise FormatError(f'{here}: expected {{"label", "score", "segment"}}, got {p!r}')
      _segment(p['segment'], here)
      score = _number(p['score'], here)
      if not math.isfinite(score):  # an infinite score would rank first whatever its segment
        raise FormatError(f'{here}: score is {score} (NaN and Infinity are not scores)')
      try:
        str(p['label'])
        float(p['segment'][0]), float(p['segment'][1]), float(p['score'])
      except (TypeError, ValueError, OverflowError) as err:
        raise FormatError(f'{here}: malformed prediction {p!r} ({err})') from None


def read_ambiguous_txt(path) -> dict:
  """W-TALC's `Ambiguous_test.txt` ('video  start end' per line) -> {video: [[start, end], ...]}.

  The file has a double space after the name; RSKP's `split(' ')` reads fields 2 and 3, which is
  the same as a whitespace split for every line of the real file.
  """
  out = {}
  with paths.open_file(path) as f:  # local or a URL (issf_common/paths.py)
    for line in f:
      fields = line.split()
      if len(fields) < 3:
        continue
      out.setdefault(fields[0], []).append([float(fields[1]), float(fields[2])])
  return out
