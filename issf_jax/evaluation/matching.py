"""Greedy prediction-to-GT matching and VOC all-point AP, shared by both detection protocols.

Both the official ActivityNet evaluator and RSKP's `getLocMAP` walk the predictions of one class in
descending score order; each takes the not-yet-taken GT of its video with the highest IoU >= thr.
They differ only in how equal IoUs are ordered (official: `argsort()[::-1]`, i.e. the later GT
first for small arrays; RSKP: the first GT in list order) and in what an IoU is (seconds vs snippet
sets). The callers build the sparse (prediction, GT) IoU pairs of the same video; this module does
the rest.

The greedy matching looks sequential (a taken GT changes later decisions) but is resolved in a few
vectorised rounds over all (threshold, prediction, GT) candidate triples at once. In a round, a
prediction takes its best still-free GT g when it is the best-ranked unresolved prediction that has
g among its candidates at all: no prediction ranked above it can still take g, so the sequential
greedy would decide the same. The best-ranked unresolved prediction always qualifies, so every
round makes progress; detector-like inputs need a handful of rounds. A round cap hands pathological
chains to the plain sequential loop, which continues from the same state.
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
  order = _candidate_order(pair_pred, iou_key, tie_key)
  preds, gts = pair_pred[order], pair_gt[order]
  # One triple per (threshold, pair) that passes it, keyed so that all thresholds are independent
  # problems in one array: key_p = k * P + rank, key_g = k * G + gt. Row-major nonzero keeps the
  # (threshold, rank, preference) order.
  num_gt = int(gts.max()) + 1
  passes = nan[order][None, :] | (pair_iou[order][None, :] >= np.asarray(thresholds)[:, None])
  k_idx, e_idx = np.nonzero(passes)
  key_p = k_idx * num_pred + preds[e_idx]
  key_g = k_idx * num_gt + gts[e_idx]
  flat = matched.reshape(-1)  # A view: [K * P].
  taken = np.zeros(len(thresholds) * num_gt, bool)
  unclaimed = np.iinfo(np.int64).max
  for _ in range(_MAX_ROUNDS):
    if not key_p.size:
      break
    first = np.ones(key_p.size, bool)  # Each prediction's best free candidate.
    first[1:] = key_p[1:] != key_p[:-1]
    best = np.full(taken.size, unclaimed, np.int64)  # Best-ranked claimant of each GT.
    np.minimum.at(best, key_g, key_p)
    win = first & (best[key_g] == key_p)
    taken[key_g[win]] = True
    flat[key_p[win]] = key_g[win] % num_gt
    live = ~taken[key_g] & (flat[key_p] < 0)  # A prediction is resolved once it has a GT.
    key_p, key_g = key_p[live], key_g[live]
  if key_p.size:
    _sequential(key_p.tolist(), key_g.tolist(), taken, flat, num_gt)
  return matched


_MAX_ROUNDS = 32


def _candidate_order(pair_pred: np.ndarray, iou_key: np.ndarray, tie_key: np.ndarray):
  """`np.lexsort((tie_key, -iou_key, pair_pred))`, the same permutation, usually much cheaper.

  Callers that build the pairs prediction by prediction pass `pair_pred` already sorted; then
  only the predictions with two or more candidates need their entries ordered, and most
  predictions have at most one (at ActivityNet size, a lexsort of all pairs was a fifth of the
  scoring time). Whole groups keep their positions, and lexsort is stable, so sorting just the
  entries of the multi-candidate groups gives exactly the full sort. [E] -> [E] int64.
  """
  if np.any(pair_pred[1:] < pair_pred[:-1]):
    return np.lexsort((tie_key, -iou_key, pair_pred))
  order = np.arange(len(pair_pred))
  shared = pair_pred[1:] == pair_pred[:-1]  # Entry i + 1 shares its prediction with entry i.
  in_group = np.zeros(len(pair_pred), bool)
  in_group[1:] = shared
  in_group[:-1] |= shared
  idx = np.flatnonzero(in_group)
  if idx.size:
    order[idx] = idx[np.lexsort((tie_key[idx], -iou_key[idx], pair_pred[idx]))]
  return order


def _sequential(key_p: list, key_g: list, taken: np.ndarray, flat: np.ndarray, num_gt: int):
  """The plain greedy loop over (key_p, key_g) triples sorted by (key_p, preference)."""
  lock = bytearray(taken.tobytes())
  current, done = -1, False
  for p, g in zip(key_p, key_g, strict=True):
    if p != current:
      current, done = p, False
    if done or lock[g]:
      continue
    lock[g] = 1
    flat[p] = g % num_gt
    done = True


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


def interpolated_ap_segments(
  tp: np.ndarray, bounds: np.ndarray, num_positives: np.ndarray
) -> np.ndarray:
  """`interpolated_ap` of many classes at once, bit for bit, touching only the true positives.

  Args:
    tp: [K, N] bool, the predictions of all classes side by side: class c holds columns
      bounds[c]:bounds[c + 1], each in its own score order.
    bounds: [C + 1] int, column offsets of the classes.
    num_positives: [C] int, GT count of each class.

  Returns:
    [K, C] float64, equal to `interpolated_ap(tp[:, bounds[c]:bounds[c + 1]], num_positives[c])`.

  Recall changes only at a true positive (and at the padded end, if some GT is missed), so the
  summed terms are those of the true positives, plus (1 - recall) x 0 = 0.0 at the end. The
  envelope at a true positive is the largest precision of the true positives from it on (a false
  positive's precision is below that of the true positive before it). With j the true-positive
  count and i the 1-based position, precision is j / i and recall j / G: the same IEEE operations
  on the same exact integers as `interpolated_ap`. Each sum stays one `np.sum` over the same
  terms in the same order, since numpy's pairwise summation rounds by array position.
  """
  tp = np.asarray(tp, bool)
  k = tp.shape[0]
  bounds = np.asarray(bounds, np.int64)
  sizes = np.diff(bounds)
  npos = np.asarray(num_positives, np.int64)
  ap = np.zeros((k, len(sizes)), np.float64)
  scored = np.flatnonzero((sizes > 0) & (npos > 0))
  for row in range(k):
    col = np.flatnonzero(tp[row])  # True positives, ascending: class by class, in rank order.
    cls = np.searchsorted(bounds, col, side='right') - 1
    cuts = np.searchsorted(col, bounds)  # Class c's true positives: cuts[c]:cuts[c + 1].
    j = (np.arange(len(col)) - cuts[cls] + 1).astype(np.float64)
    positives = npos[cls].astype(np.float64)
    precision = j / (col - bounds[cls] + 1).astype(np.float64)
    step = j / positives - (j - 1) / positives
    for c in scored:
      lo, hi = cuts[c], cuts[c + 1]
      terms = step[lo:hi] * np.maximum.accumulate(precision[lo:hi][::-1])[::-1]
      if hi - lo < npos[c]:
        terms = np.append(terms, 0.0)
      ap[row, c] = np.sum(terms)
  return ap
