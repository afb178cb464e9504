"""The `official` protocol: ActivityNet detection mAP in seconds (docs/design.md §7.3), vectorised.

Reproduces `ANETdetection` (activitynet/ActivityNet `Evaluation/eval_detection.py`) with
`check_status=False`:

  * classes = the labels of the ground-truth subset, in order of first appearance; a predicted
    label outside that set is an error (the official code raises KeyError), except a label of the
    GT's taxonomy that has no GT in the subset: such predictions are not scored (with a warning);
  * per class, predictions are ranked with the same `np.argsort(score)[::-1]` on the same array
    (the class's predictions in file order), so even score ties are broken as the official code
    does;
  * each prediction takes the highest-IoU untaken GT of its video with tIoU >= thr (continuous IoU
    in seconds, the official float expression); equal IoUs go to the later GT, as
    `argsort()[::-1]` does on small arrays;
  * a prediction on a video without GT of its class (or absent from the subset) is a false positive;
  * AP = VOC all-point interpolation; a class without predictions has AP 0 and still counts;
  * mAP = mean over classes, average_mAP = mean over thresholds. Everything is a fraction.

The official code iterates a pandas DataFrame row by row; here the IoUs of all same-video pairs of a
class are one numpy expression and only the greedy lock loop is Python (`matching.match_pairs`).
"""

import warnings

import numpy as np

from issf_jax.evaluation import ground_truth as gt_lib
from issf_jax.evaluation import matching

ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)


def _pairs_same_video(pred_video: np.ndarray, gt_video: np.ndarray, num_videos: int | None = None):
  """All (prediction, GT) index pairs that share a video (or block). Returns ([E], [E]) int64.

  Pairs come prediction by prediction (`pair_pred` ascending), each prediction's GT in ascending
  (video, GT index) order. With `num_videos` (every code in [0, num_videos)), each prediction
  finds its GT block by a lookup in per-video tables instead of two binary searches: at
  ActivityNet size (472,800 predictions) the searches were a fifth of the scoring time.
  """
  gt_order = np.argsort(gt_video, kind='stable')
  if num_videos is not None and num_videos <= _MAX_LOOKUP_TABLE:
    count_of_video = np.bincount(gt_video, minlength=num_videos)
    first_of_video = np.cumsum(count_of_video) - count_of_video
    lo, count = first_of_video[pred_video], count_of_video[pred_video]
  else:
    sorted_video = gt_video[gt_order]
    lo = np.searchsorted(sorted_video, pred_video, side='left')
    count = np.searchsorted(sorted_video, pred_video, side='right') - lo
  pair_pred = np.repeat(np.arange(len(pred_video)), count)
  # Position within each prediction's GT block: a running index minus the block's first offset.
  offsets = np.repeat(np.cumsum(count) - count, count)
  pair_gt = gt_order[np.repeat(lo, count) + np.arange(count.sum()) - offsets]
  return pair_pred, pair_gt


# Largest per-video lookup table (entries) `_pairs_same_video` builds: 8 M int64, 64 MB each.
_MAX_LOOKUP_TABLE = 1 << 23


def segment_iou(ps, pe, gs, ge) -> np.ndarray:
  """Continuous tIoU, with the official expression order (so exact ties stay exact). [E]."""
  inter = (np.minimum(pe, ge) - np.maximum(ps, gs)).clip(0)
  union = (ge - gs) + (pe - ps) - inter
  with np.errstate(invalid='ignore', divide='ignore'):
    return inter.astype(float) / union


def class_average_precision(
  gt_video, gt_start, gt_end, pred_video, pred_start, pred_end, pred_score, tiou_thresholds
) -> np.ndarray:
  """AP of one class at each threshold. GT arrays [G], prediction arrays [P] (file order) -> [K]."""
  k = len(tiou_thresholds)
  if len(pred_score) == 0:
    return np.zeros(k)
  rank = np.argsort(pred_score)[::-1]  # The official call, for identical tie-breaking.
  pv, ps, pe = pred_video[rank], pred_start[rank], pred_end[rank]
  pair_pred, pair_gt = _pairs_same_video(pv, gt_video)
  iou = segment_iou(ps[pair_pred], pe[pair_pred], gt_start[pair_gt], gt_end[pair_gt])
  matched = matching.match_pairs(pair_pred, pair_gt, iou, len(rank), tiou_thresholds, 'last')
  return matching.interpolated_ap(matched >= 0, len(gt_video))


def all_classes_average_precision(
  gt, pred_video, pred_label, pred_start, pred_end, pred_score, thresholds, num_classes
) -> np.ndarray:
  """`class_average_precision` of every class in one pass. Prediction arrays [P] (label -1: not
  scored), GT from `parse_ground_truth` -> [K, C].

  Each class's predictions are ranked by the official call on that class's scores in file order
  (one argsort per class, for its tie-breaking); the ranked classes are then laid side by side
  and paired, matched and accumulated together: a GT belongs to one class, so the greedy
  matching of the classes stays independent, and `interpolated_ap_segments` gives each class's AP
  bit for bit.
  """
  k = len(thresholds)
  # File order within a class. A stable sort of 16-bit keys is a radix sort: a few times faster
  # than the int64 merge sort at ActivityNet size, and the same permutation.
  narrow = pred_label.astype(np.int16) if num_classes < np.iinfo(np.int16).max else pred_label
  pred_by_class = np.argsort(narrow, kind='stable')
  bounds = np.searchsorted(pred_label[pred_by_class], np.arange(num_classes + 1))
  ranked = np.empty(bounds[-1] - bounds[0], np.int64)
  for c in range(num_classes):  # Label -1 (not scored) sorts first, before bounds[0].
    p = pred_by_class[bounds[c] : bounds[c + 1]]
    ranked[bounds[c] - bounds[0] : bounds[c + 1] - bounds[0]] = p[np.argsort(pred_score[p])[::-1]]
  bounds = bounds - bounds[0]
  gt_by_class = np.argsort(gt.label, kind='stable')  # Database order within a class.
  if not len(ranked):
    return np.zeros((k, num_classes))
  # Videos of (class, video) blocks: a prediction pairs with the GT of its class in its video.
  # Videos without GT (prediction-only ones, coded from len(gt.videos) on) share one block code
  # per class: no GT pairs with them, and the block tables stay num_classes x (GT videos + 1).
  num_videos = len(gt.videos) + 1
  rank_block = pred_label[ranked] * num_videos + np.minimum(pred_video[ranked], num_videos - 1)
  gt_block = gt.label[gt_by_class] * num_videos + gt.video[gt_by_class]
  pair_pred, pair_gt = _pairs_same_video(rank_block, gt_block, num_classes * num_videos)
  g = gt_by_class[pair_gt]
  r = ranked[pair_pred]
  iou = segment_iou(pred_start[r], pred_end[r], gt.start[g], gt.end[g])
  matched = matching.match_pairs(pair_pred, pair_gt, iou, len(ranked), thresholds, 'last')
  num_positives = np.bincount(gt.label, minlength=num_classes)
  return matching.interpolated_ap_segments(matched >= 0, bounds, num_positives)


def evaluate_official(
  ground_truth: dict,
  predictions: dict,
  *,
  subset: str,
  tiou_thresholds=ACTIVITYNET_TIOU,
  parsed_ground_truth: gt_lib.GroundTruth | None = None,
) -> dict:
  """ActivityNet detection mAP.

  Args:
    ground_truth: ActivityNet-format GT dict (needs only "database").
    predictions: ActivityNet-format predictions (the full dict or its "results" object), or
      `ground_truth.Predictions` already flattened.
    subset: the GT subset to score ('Test', 'test', 'validation', ...; case-insensitive).
    tiou_thresholds: [K] tIoU thresholds.
    parsed_ground_truth: `parse_ground_truth(ground_truth, subset)` when the caller has it
      already (it is not parsed twice).

  Returns:
    {'protocol': 'official', 'subset', 'tiou_thresholds': [K], 'mAP': [K], 'average_mAP',
     'per_class_ap': {class: [K]}, 'num_videos', 'num_instances', 'num_predictions',
     'classes_without_predictions': [...]}, all values fractions.
  """
  thresholds = np.asarray(tiou_thresholds, np.float64).reshape(-1)
  gt = parsed_ground_truth
  if gt is None:
    gt = gt_lib.parse_ground_truth(ground_truth, subset)
  if gt.num_instances == 0:
    raise gt_lib.FormatError(f'ground truth has no annotated video in subset {subset!r}')
  if isinstance(predictions, gt_lib.Predictions):
    pred = predictions  # Already flattened (`prediction_file.load_predictions`).
  else:
    pred = gt_lib.parse_predictions(predictions)
  # Labels and videos are coded per distinct value, then looked up for all predictions at once.
  _check_segments(pred)
  class_index = {name: i for i, name in enumerate(gt.class_names)}
  label_lut = np.array([class_index.get(x, -1) for x in pred.labels] + [-1], np.int64)
  pred_label = label_lut[pred.label_index]
  ignored = 0
  if np.any(pred_label < 0):
    # The class set is the GT's taxonomy when it has one, else the labels of the subset. A taxonomy
    # class without GT in this subset is not scored (the official code would raise a KeyError).
    taxonomy = set(gt_lib.taxonomy_names(ground_truth))
    for j in np.flatnonzero(label_lut[:-1] < 0):
      label = pred.labels[j]
      if label not in taxonomy:
        i = np.argmax(pred.label_index == j)  # Its first prediction, for the message.
        raise gt_lib.FormatError(
          f'prediction label {label!r} (video {pred.videos[pred.video_index[i]]!r}) is not a '
          f'class of the ground truth subset {subset!r}; its classes are {sorted(gt.class_names)}'
        )
    ignored = int(np.sum(pred_label < 0))
    warnings.warn(
      f'{ignored} predictions have taxonomy labels without GT in subset {subset!r}: not scored',
      stacklevel=2,
    )
  # Video codes: GT videos first, then videos that only have predictions (always false positives).
  video_code = {v: i for i, v in enumerate(gt.videos)}
  video_lut = np.array([video_code.setdefault(v, len(video_code)) for v in pred.videos] + [-1])
  pred_video = video_lut[pred.video_index].astype(np.int64)
  outside = pred_video >= len(gt.videos)
  num_classes = len(gt.class_names)
  ap = all_classes_average_precision(
    gt, pred_video, pred_label, pred.start, pred.end, pred.score, thresholds, num_classes
  )
  counts = np.bincount(pred_label[pred_label >= 0], minlength=num_classes)
  empty = [gt.class_names[c] for c in np.flatnonzero(counts == 0)]
  m_ap = ap.mean(axis=1)
  return {
    'protocol': 'official',
    'subset': subset,
    'tiou_thresholds': thresholds.tolist(),
    'mAP': m_ap.tolist(),
    'average_mAP': float(m_ap.mean()),
    'per_class_ap': {name: ap[:, c].tolist() for c, name in enumerate(gt.class_names)},
    'num_videos': len(gt.videos),
    'num_instances': gt.num_instances,
    'num_predictions': len(pred) - ignored,
    'classes_without_predictions': empty,
    # Predictions on videos outside the GT subset: scored as false positives (as officially).
    'num_predictions_outside_subset': int(outside.sum()),
    'videos_outside_subset': len(video_code) - len(gt.videos),
  }


def _count(n: int, noun: str) -> str:
  """'1 such segment', '3 such segments'."""
  return f'{n} {noun}' + ('' if n == 1 else 's')


def _check_segments(pred: gt_lib.Predictions) -> None:
  """Rejects a segment with start > end, a negative time or an infinite one (its tIoU would be
  NaN or negative, and a NaN tIoU would match), naming the video. Vectorised: [P] checks."""
  bad = (pred.start > pred.end) | (pred.start < 0) | ~np.isfinite(pred.start + pred.end)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    count = _count(int(bad.sum()), 'such segment')
    raise gt_lib.FormatError(
      f'video {pred.video[i]!r}: prediction segment [{pred.start[i]:g}, {pred.end[i]:g}] is '
      f'invalid (start > end, a negative or an infinite time); {count}'
    )
