"""The `rskp` protocol: RSKP's THUMOS14 evaluator (`evaluation/detectionMAP.py`), quirks included.

`docs/design.md` §7.2 and `tests/testdata/rskp_parity/README.md` §3. What is reproduced on purpose:

  * proposals from the localisation map (`issf_jax.proposals`, with RSKP's float32 scores and NMS);
  * per class, the NMS survivors of all videos ranked with RSKP's own `np.argsort(-score)` (twice:
    `getActLoc` then `getLocMAP`), so score ties break as in RSKP;
  * the Ambiguous filter: a proposal is dropped when its snippet range meets any ambiguous range of
    its video, whatever the class;
  * IoU on integer snippet sets: GT = range(round(s * f), round(e * f)) with float64 products and
    half-to-even rounding (f = 25/16), prediction = range(start, end_stored); float64 |∩| / |∪|
    compared `>=` with the literal thresholds 0.1 ... 0.7;
  * each prediction takes the untaken same-video GT with the highest IoU (the first one on ties);
  * AP = VOC all-point interpolated, 0 without TP; mAP = mean over the classes of the GT;
  * `getLocMAP` returns 0 for an IoU as soon as one class has no proposal. The result says so
    (`early_return_zero`, `empty_classes`) and also gives the natural mAP (AP 0 for those classes).

All values in the result are fractions (RSKP prints percentages: multiply by 100).
Intentional difference: RSKP indexes its per-class proposal lists by class index although it
builds them in the order of the GT's sorted class names (equal only when every class occurs); here
each class is always scored on its own proposals.
"""

import warnings

import numpy as np

from issf_jax import proposals as proposals_lib
from issf_jax.evaluation import classification, matching
from issf_jax.evaluation import ground_truth as gt_lib

# RSKP's literal list. np.arange(0.1, 0.8, 0.1) would give 0.30000000000000004 and
# 0.7000000000000001 and move the IoU == threshold pairs (hundreds of them in the goldens).
RSKP_IOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def seconds_to_snippets(start, end, factor: float) -> tuple[np.ndarray, np.ndarray]:
  """GT seconds -> snippet range [round(start * f), round(end * f)), float64, half to even. [G]."""
  start = np.asarray(start, np.float64) * factor
  end = np.asarray(end, np.float64) * factor
  return np.round(start).astype(np.int64), np.round(end).astype(np.int64)


def snippet_iou(ps, pe, gs, ge) -> np.ndarray:
  """|∩| / |∪| of the integer sets range(ps, pe) and range(gs, ge), as float64. [E]."""
  p_len = np.maximum(pe - ps, 0)
  g_len = np.maximum(ge - gs, 0)
  inter = np.maximum(np.minimum(pe, ge) - np.maximum(ps, gs), 0)
  union = p_len + g_len - inter
  with np.errstate(invalid='ignore', divide='ignore'):
    return inter.astype(np.float64) / union.astype(np.float64)


def ambiguous_filter(props: np.ndarray, ambiguous: dict) -> np.ndarray:
  """Drops proposals that share a snippet with an ambiguous range of their video. [N, 4] -> [M, 4].

  Args:
    props: rows [video_index, start, end_stored, score].
    ambiguous: video_index -> [A, 2] int snippet ranges [start, end).
  """
  if len(props) == 0 or not ambiguous:
    return props
  drop = np.zeros(len(props), bool)
  video = props[:, 0].astype(np.int64)
  for v, ranges in ambiguous.items():
    rows = np.flatnonzero(video == v)
    if rows.size == 0 or len(ranges) == 0:
      continue
    s, e = props[rows, 1:2], props[rows, 2:3]
    a_s, a_e = ranges[None, :, 0], ranges[None, :, 1]
    # IoU > 0 of two integer ranges <=> a common snippet (an empty ambiguous range meets nothing).
    meets = (np.minimum(e, a_e) > np.maximum(s, a_s)) & (a_e > a_s)
    drop[rows] = meets.any(axis=1)
  return props[~drop]


def _class_ap(final: np.ndarray, gt_video, gt_s, gt_e, iou_thresholds):
  """AP of one class. final: [P, 4] rows in getActLoc order. Returns ([K] AP, [P, K] matched GT)."""
  rank = np.argsort(-final[:, 3])  # getLocMAP sorts again, with the same unstable argsort.
  ranked = final[rank]
  pv = ranked[:, 0].astype(np.int64)
  ps, pe = ranked[:, 1].astype(np.int64), ranked[:, 2].astype(np.int64)
  pair_pred, pair_gt = [], []
  for v in np.unique(pv):
    p_idx, g_idx = np.flatnonzero(pv == v), np.flatnonzero(gt_video == v)
    pair_pred.append(np.repeat(p_idx, len(g_idx)))
    pair_gt.append(np.tile(g_idx, len(p_idx)))
  pair_pred = np.concatenate(pair_pred) if pair_pred else np.zeros(0, np.int64)
  pair_gt = np.concatenate(pair_gt) if pair_gt else np.zeros(0, np.int64)
  iou = snippet_iou(ps[pair_pred], pe[pair_pred], gt_s[pair_gt], gt_e[pair_gt])
  matched = matching.match_pairs(pair_pred, pair_gt, iou, len(rank), iou_thresholds, 'first')
  tp = matched >= 0
  ap = matching.interpolated_ap(tp, len(gt_video))
  ap[~tp.any(axis=1)] = 0.0  # RSKP: `if sum(tp) == 0: prc = 0.`
  matched_final = np.empty_like(matched.T)
  matched_final[rank] = matched.T
  return ap, matched_final


def evaluate_rskp(
  video_scores,
  cas_maps,
  video_ids,
  ground_truth: dict,
  class_names,
  *,
  subset: str = 'test',
  config,
  factor: float | None = None,
  video_labels=None,
  iou_thresholds=RSKP_IOU,
  return_proposals: bool = False,
) -> dict:
  """RSKP's detection mAP (and classification mAP) from video scores and localisation maps.

  Args:
    video_scores: [N, C+1] fused video scores (background last), as a list or an array.
    cas_maps: N maps [T_i, C+1], each at the video's true length.
    video_ids: N video ids, in evaluation order.
    ground_truth: ActivityNet-format GT; a video's optional "ambiguous" [[s, e], ...] (seconds)
      is the Ambiguous filter, and an optional "labels_all" (names) gives its classification
      labels.
    class_names: C names; column c of the maps is class_names[c].
    subset: GT subset to evaluate. Videos outside it, or without annotations, are ignored (RSKP only
      sees the annotated test videos).
    config: the proposals config section (`config.eval.proposals`; configs/common.py's
      `proposal_config('thumos14')` holds RSKP's settings). `upsample` must be 1.
    factor: seconds -> snippets (default config.fps / config.stride = 25/16).
    video_labels: [N, C] multi-hot classification labels (RSKP's `labels_all`). Default: the GT's
      "labels_all" if present, else the annotated classes of each video.
    iou_thresholds: the snippet-IoU thresholds.
    return_proposals: also return the per-class proposal lists (prefilter and final) and matches.

  Returns:
    {'protocol': 'rskp', 'subset', 'tiou_thresholds', 'mAP' (RSKP's, [K]), 'average_mAP',
     'natural_mAP' ([K], AP 0 for empty classes), 'natural_average_mAP', 'early_return_zero',
     'empty_classes', 'per_class_ap' ({class: [K]}, natural), 'classification_mAP', 'num_videos',
     'num_instances', 'num_final_proposals_per_class', 'num_prefilter_proposals_per_class'}.
  """
  if config.get('upsample', 1) != 1:
    raise ValueError('the rskp protocol scores on the snippet grid: config.upsample must be 1')
  factor = float(config.fps) / float(config.stride) if factor is None else float(factor)
  class_names = [str(c) for c in class_names]
  class_col = {name: c for c, name in enumerate(class_names)}
  video_ids = [str(v) for v in video_ids]
  if not len(video_ids) == len(cas_maps) == len(video_scores):
    raise ValueError('video_scores, cas_maps and video_ids must have the same length')
  gt = gt_lib.parse_ground_truth(ground_truth, subset)
  unknown = sorted(set(gt.class_names) - set(class_names))
  if unknown:
    raise gt_lib.FormatError(f'ground-truth labels {unknown} are not in class_names')

  # Videos: RSKP evaluates the annotated videos of the subset, in the prediction order.
  position = {v: i for i, v in enumerate(video_ids)}
  annotated = {gt.videos[v] for v in np.unique(gt.video)}
  subset_videos = set(gt.videos)
  in_subset = [v for v in video_ids if v in subset_videos]
  ignored = [v for v in video_ids if v not in annotated]
  missing = sorted(annotated - set(video_ids))
  if ignored:
    warnings.warn(
      f'rskp: {len(ignored)} videos without GT in subset {subset!r} are ignored', stacklevel=2
    )
  if missing:
    warnings.warn(
      f'rskp: {len(missing)} annotated videos have no prediction; their GT is missed', stacklevel=2
    )
  # GT in prediction-video indices (videos without prediction get index -1: never matched).
  gt_video = np.array([position.get(gt.videos[v], -1) for v in gt.video], np.int64)
  gt_class = np.array([class_col[gt.class_names[c]] for c in gt.label], np.int64)
  gt_s, gt_e = seconds_to_snippets(gt.start, gt.end, factor)
  ambiguous = {}
  for name, secs in gt.ambiguous.items():
    if name in position and len(secs):
      a_s, a_e = seconds_to_snippets(secs[:, 0], secs[:, 1], factor)
      ambiguous[position[name]] = np.stack([a_s, a_e], axis=1)

  # Proposals of every evaluated video, regrouped per class in video order.
  eval_classes = sorted({gt.class_names[c] for c in gt.label})  # RSKP's sorted name order.
  per_class = {class_col[name]: [] for name in eval_classes}
  for name in video_ids:
    if name not in annotated:
      continue
    i = position[name]
    props = proposals_lib.video_proposals(np.asarray(video_scores[i]), cas_maps[i], config)
    for c in per_class:
      rows = props[props[:, 0] == c]
      if len(rows):
        per_class[c].append(np.concatenate([np.full((len(rows), 1), float(i)), rows[:, 1:]], 1))

  thresholds = np.asarray(iou_thresholds, np.float64)
  ap = np.zeros((len(eval_classes), len(thresholds)))
  empty, n_final, n_prefilter, lists = [], {}, {}, {}
  for k, name in enumerate(eval_classes):
    c = class_col[name]
    rows = np.concatenate(per_class[c]) if per_class[c] else np.zeros((0, 4))
    prefilter = rows[np.argsort(-rows[:, 3])]  # getActLoc's ranking.
    final = ambiguous_filter(prefilter, ambiguous)
    n_prefilter[name], n_final[name] = len(prefilter), len(final)
    in_class = gt_class == c
    if len(final) == 0:
      empty.append(name)
      matched = np.zeros((0, len(thresholds)), np.int64)
    else:
      ap[k], matched = _class_ap(
        final, gt_video[in_class], gt_s[in_class], gt_e[in_class], thresholds
      )
    if return_proposals:
      lists[name] = {'prefilter': prefilter, 'final': final, 'matched_gt': matched}

  natural = ap.mean(axis=0) if len(eval_classes) else np.zeros(len(thresholds))
  early = bool(empty)
  m_ap = np.zeros(len(thresholds)) if early else natural
  if early:
    warnings.warn(
      f'rskp: classes {empty} have no proposal; RSKP returns mAP 0 at every IoU (natural mAP '
      'with AP 0 for them is in natural_mAP)',
      stacklevel=2,
    )
  result = {
    'protocol': 'rskp',
    'subset': subset,
    'tiou_thresholds': thresholds.tolist(),
    'mAP': m_ap.tolist(),
    'average_mAP': float(np.mean(m_ap)),
    'natural_mAP': natural.tolist(),
    'natural_average_mAP': float(np.mean(natural)),
    'early_return_zero': early,
    'empty_classes': empty,
    'per_class_ap': {name: ap[k].tolist() for k, name in enumerate(eval_classes)},
    'num_videos': len(annotated & set(video_ids)),
    'num_instances': gt.num_instances,
    'num_final_proposals_per_class': n_final,
    'num_prefilter_proposals_per_class': n_prefilter,
  }
  result['classification_mAP'] = _classification(
    video_scores, video_ids, in_subset, position, gt, ground_truth, class_names, video_labels
  )
  if return_proposals:
    result['proposals'] = lists
  return result


def _classification(video_scores, video_ids, in_subset, position, gt, gt_dict, class_names, labels):
  """Classification mAP (fraction) over the subset's predicted videos, RSKP semantics."""
  num_classes = len(class_names)
  rows = [position[v] for v in in_subset]
  if not rows:
    return float('nan')
  scores = np.stack([np.asarray(video_scores[i])[:num_classes] for i in rows])
  if labels is not None:
    labels = np.asarray(labels)[rows]
  else:
    col = {name: c for c, name in enumerate(class_names)}
    labels = np.zeros((len(rows), num_classes), np.float32)
    video_index = {v: i for i, v in enumerate(gt.videos)}
    for r, v in enumerate(in_subset):
      entry = gt_dict['database'][v]
      if 'labels_all' in entry:
        names = entry['labels_all']
      else:
        names = [gt.class_names[c] for c in gt.label[gt.video == video_index[v]]]
      for name in names:
        labels[r, col[name]] = 1.0
  return classification.classification_map(scores, labels) / 100.0
