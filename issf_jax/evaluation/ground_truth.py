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

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from issf_jax import errors

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
      label = str(ann['label'])
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


@dataclasses.dataclass
class Predictions:
  """Flattened predictions in file order. video: [P] str; label: [P] str; start, end, score: [P]."""

  video: list
  label: list
  start: np.ndarray
  end: np.ndarray
  score: np.ndarray


def parse_predictions(predictions: Mapping) -> Predictions:
  """Checks a predictions dict (the full file or just its "results" object) and flattens it."""
  if not isinstance(predictions, Mapping):
    raise FormatError('predictions must be an object with a "results" object')
  if 'results' not in predictions and {'version', 'external_data', 'database'} & set(predictions):
    raise FormatError('predictions must have a "results" object (video id -> list of predictions)')
  results = predictions.get('results', predictions)
  if not isinstance(results, Mapping):
    raise FormatError('"results" must be an object mapping video ids to lists of predictions')
  video, label, seg, score = [], [], [], []
  for video_id, items in results.items():
    if not isinstance(items, list):
      raise FormatError(f'results[{video_id!r}]: expected a list, got {type(items).__name__}')
    for k, p in enumerate(items):
      try:
        (s, e), sc, lb = p['segment'], p['score'], p['label']
        ok = (
          type(s) in _NUM
          and type(e) in _NUM
          and type(sc) in _NUM
          and s == s
          and e == e
          and sc == sc
        )
      except (KeyError, TypeError, ValueError):
        ok = False
      if not ok:
        here = f'results[{video_id!r}][{k}]'
        if not isinstance(p, Mapping) or not {'label', 'score', 'segment'} <= set(p):
          raise FormatError(f'{here}: expected {{"label", "score", "segment"}}, got {p!r}')
        _segment(p['segment'], here)
        _number(p['score'], here)
        raise FormatError(f'{here}: malformed prediction {p!r}')
      seg.append((s, e))
      score.append(sc)
      label.append(str(lb))
    video.extend([video_id] * len(items))
  seg = np.asarray(seg, np.float64).reshape(-1, 2)
  return Predictions(
    video=video,
    label=label,
    start=seg[:, 0].copy(),
    end=seg[:, 1].copy(),
    score=np.asarray(score, np.float64),
  )


def read_ambiguous_txt(path) -> dict:
  """W-TALC's `Ambiguous_test.txt` ('video  start end' per line) -> {video: [[start, end], ...]}.

  The file has a double space after the name; RSKP's `split(' ')` reads fields 2 and 3, which is
  the same as a whitespace split for every line of the real file.
  """
  out = {}
  with open(path) as f:
    for line in f:
      fields = line.split()
      if len(fields) < 3:
        continue
      out.setdefault(fields[0], []).append([float(fields[1]), float(fields[2])])
  return out
