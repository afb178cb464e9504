"""Greedy prediction-to-GT matching and VOC all-point AP, shared by both detection protocols.

Both the official ActivityNet evaluator and RSKP's `getLocMAP` walk the predictions of one class in
descending score order; each takes the not-yet-taken GT of its video with the highest IoU >= thr.
They differ only in how equal IoUs are ordered (official: `argsort()[::-1]`, i.e. the later GT
first for small arrays; RSKP: the first GT in list order) and in what an IoU is (seconds vs snippet
sets). The callers build the sparse (prediction, GT) IoU pairs of the same video; this module does
the rest.

The greedy loop is inherently sequential (a taken GT changes later decisions), so it stays a Python
loop, but only over predictions that have at least one GT candidate with IoU >= the lowest
threshold, over plain lists, and with all thresholds handled in one pass.
"""

import numpy as np


def match_pairs(
  pair_pred: np.ndarray,
  pair_gt: np.ndarray,
  pair_iou: np.ndarray,
  num_pred: int,
  thresholds,
  gt_tie: str = 'last',
) -> np.ndarray:
  """Greedy matching at every threshold.

  Args:
    pair_pred: [E] int, prediction index = rank in descending score order (0 = best).
    pair_gt: [E] int, GT index of the candidate (same video and class).
    pair_iou: [E] float64 IoU of the pair; NaN (0/0) counts as a match at any threshold, as in
      the official `if tiou < thr: fp` test.
    num_pred: P.
    thresholds: [K] IoU thresholds; a pair matches when IoU >= thr.
    gt_tie: order of equal-IoU candidates: 'last' (official) or 'first' (RSKP).

  Returns:
    [K, P] int64: the matched GT index of each prediction, or -1 (false positive).
  """
  thresholds = [float(t) for t in np.asarray(thresholds, np.float64).reshape(-1)]
  matched = np.full((len(thresholds), num_pred), -1, np.int64)
  if num_pred == 0 or len(pair_pred) == 0 or not thresholds:
    return matched
  pair_iou = np.asarray(pair_iou, np.float64)
  nan = np.isnan(pair_iou)
  useful = nan | (pair_iou >= min(thresholds))  # A pair below every threshold never matches.
  pair_pred, pair_gt, pair_iou, nan = (
    pair_pred[useful],
    pair_gt[useful],
    pair_iou[useful],
    nan[useful],
  )
  if not len(pair_pred):
    return matched
  # Candidates of one prediction: by descending IoU (NaN first, as argsort()[::-1] puts it), then
  # by the GT tie rule.
  iou_key = np.where(nan, np.inf, pair_iou)
  tie_key = -pair_gt if gt_tie == 'last' else pair_gt
  order = np.lexsort((tie_key, -iou_key, pair_pred))
  preds = pair_pred[order]
  gts = pair_gt[order].tolist()
  ious = pair_iou[order].tolist()
  bounds = np.flatnonzero(np.diff(preds)) + 1
  lo_list = np.concatenate([[0], bounds]).tolist()
  hi_list = np.concatenate([bounds, [len(preds)]]).tolist()
  pred_list = preds[lo_list].tolist()
  num_gt = int(pair_gt.max()) + 1
  taken = [bytearray(num_gt) for _ in thresholds]
  out = [[] for _ in thresholds]
  thr_items = list(enumerate(thresholds))
  for p, lo, hi in zip(pred_list, lo_list, hi_list, strict=True):
    cand_gt = gts[lo:hi]
    cand_iou = ious[lo:hi]
    for k, thr in thr_items:
      lock = taken[k]
      for g, v in zip(cand_gt, cand_iou, strict=True):
        if v < thr:  # Sorted: every later candidate is below thr too.
          break
        if lock[g]:
          continue
        lock[g] = 1
        out[k].append((p, g))
        break
  for k, pairs in enumerate(out):
    if pairs:
      pg = np.asarray(pairs, np.int64)
      matched[k, pg[:, 0]] = pg[:, 1]
  return matched


def interpolated_ap(tp: np.ndarray, num_positives: int) -> np.ndarray:
  """VOC-2011 all-point interpolated AP of each row. [K, P] bool (score order) -> [K] float64.

  Same arithmetic as the official `interpolated_prec_rec` and RSKP's `_ap_from_pr`: monotone
  precision envelope, summed over the recall steps.
  """
  tp = np.asarray(tp, bool)
  k, p = tp.shape
  ap = np.zeros(k, np.float64)
  if p == 0 or num_positives == 0:
    return ap
  tp_cumsum = np.cumsum(tp, axis=1).astype(np.float64)
  fp_cumsum = np.cumsum(~tp, axis=1).astype(np.float64)
  recall = tp_cumsum / float(num_positives)
  precision = tp_cumsum / (tp_cumsum + fp_cumsum)
  zero, one = np.zeros((k, 1)), np.ones((k, 1))
  mprec = np.concatenate([zero, precision, zero], axis=1)
  mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
  mrec = np.concatenate([zero, recall, one], axis=1)
  for row in range(k):
    idx = np.flatnonzero(mrec[row, 1:] != mrec[row, :-1]) + 1
    ap[row] = np.sum((mrec[row, idx] - mrec[row, idx - 1]) * mprec[row, idx])
  return ap
