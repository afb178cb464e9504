"""The vectorised greedy matching and the interpolated AP against plain reference loops."""

import numpy as np
import pytest

from issf_jax.evaluation import matching


def _reference_match(pred_video, gt_video, iou, thresholds, gt_tie):
  """The evaluators' loop, literally: predictions in rank order take their best free GT."""
  num_pred, num_gt = iou.shape
  out = np.full((len(thresholds), num_pred), -1)
  for k, thr in enumerate(thresholds):
    free = np.ones(num_gt, bool)
    for p in range(num_pred):
      cands = [g for g in range(num_gt) if gt_video[g] == pred_video[p]]
      # Descending IoU; ties: later GT first ('last') or first GT first ('first').
      cands.sort(key=lambda g: (-iou[p, g], -g if gt_tie == 'last' else g))
      for g in cands:
        if iou[p, g] < thr:
          break
        if free[g]:
          free[g] = False
          out[k, p] = g
          break
  return out


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('gt_tie', ['last', 'first'])
@pytest.mark.parametrize('max_rounds', [32, 1])  # 1 forces the sequential fallback mid-way.
def test_match_pairs_equals_the_sequential_greedy(seed, gt_tie, max_rounds, monkeypatch):
  monkeypatch.setattr(matching, '_MAX_ROUNDS', max_rounds)
  rng = np.random.default_rng(seed)
  num_pred, num_gt = 60, 12
  pred_video = rng.integers(0, 3, num_pred)
  gt_video = rng.integers(0, 3, num_gt)
  # IoUs on a coarse grid, so that equal IoUs and IoU == threshold both happen often.
  iou = rng.integers(0, 11, (num_pred, num_gt)) / 10
  thresholds = [0.1, 0.3, 0.5, 0.7]
  pp, gg = np.nonzero(pred_video[:, None] == gt_video[None, :])
  got = matching.match_pairs(pp, gg, iou[pp, gg], num_pred, thresholds, gt_tie)
  want = _reference_match(pred_video, gt_video, iou, thresholds, gt_tie)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('presorted', [True, False])
def test_candidate_order_is_the_full_lexsort(presorted):
  """The cheap ordering (sort only predictions with several candidates) is lexsort's permutation,
  and unsorted pairs take the full lexsort."""
  rng = np.random.default_rng(1)
  pair_pred = np.repeat(np.arange(300), rng.choice([0, 1, 1, 2, 3, 7], 300))
  if not presorted:
    pair_pred = rng.permutation(pair_pred)
  iou_key = rng.integers(0, 4, len(pair_pred)) / 4  # Ties in IoU, broken by the tie key.
  tie_key = -rng.integers(0, 5, len(pair_pred))
  want = np.lexsort((tie_key, -iou_key, pair_pred))
  np.testing.assert_array_equal(matching._candidate_order(pair_pred, iou_key, tie_key), want)


def test_nan_iou_counts_as_a_match():
  got = matching.match_pairs(np.array([0]), np.array([0]), np.array([np.nan]), 1, [0.5, 0.9])
  np.testing.assert_array_equal(got, [[0], [0]])


def _reference_ap(tp, npos):
  prec = np.cumsum(tp) / np.arange(1, len(tp) + 1)
  rec = np.cumsum(tp) / npos
  mprec = np.hstack([[0], prec, [0]])
  mrec = np.hstack([[0], rec, [1]])
  for i in range(len(mprec) - 2, -1, -1):
    mprec[i] = max(mprec[i], mprec[i + 1])
  return sum(
    (mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
  )


def test_interpolated_ap():
  rng = np.random.default_rng(0)
  tp = rng.random((5, 40)) < 0.4
  got = matching.interpolated_ap(tp, 25)
  for row in range(5):
    assert got[row] == pytest.approx(_reference_ap(tp[row], 25), abs=1e-12)
  np.testing.assert_array_equal(
    matching.interpolated_ap(np.array([[1, 0], [0, 1], [0, 0]]), 1), [1, 0.5, 0]
  )


def test_interpolated_ap_segments_is_per_class_ap_bit_for_bit():
  rng = np.random.default_rng(0)
  for trial in range(300):
    # Long classes (numpy's pairwise sum blocks at 8 and 128), empty ones, no or all positives.
    sizes = rng.integers(0, 300 if trial % 4 == 0 else 40, int(rng.integers(1, 8)))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    tp = rng.random((int(rng.integers(1, 5)), bounds[-1])) < rng.random() ** 2
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    found = [tp[:, a:b].sum(axis=1).max(initial=0) for a, b in spans]
    extra = 0 if trial % 5 == 0 else rng.integers(0, 20, len(sizes))
    npos = np.maximum(np.array(found) + extra, 1)
    got = matching.interpolated_ap_segments(tp, bounds, npos)
    for c, (a, b) in enumerate(spans):
      want = matching.interpolated_ap(tp[:, a:b], int(npos[c]))
      assert np.array_equal(got[:, c].view(np.int64), want.view(np.int64)), (trial, c)
