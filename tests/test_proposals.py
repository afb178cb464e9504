"""Proposals (RSKP multi-threshold + contrast + NMS), seconds conversion and the detections JSON.

Oracles from docs/design.md §10 and tests/testdata/rskp_parity/oracles.json; the bit-exact
comparison with RSKP's own proposal lists is in test_eval_rskp.py.
"""

import json

import numpy as np
import pytest

from configs import common
from issf_jax import proposals as P


def _thumos():
  return common.proposal_config('thumos14')


def _oracle_cas():
  cas = np.zeros((10, 2), np.float32)  # One class + background.
  cas[2:5, 0] = 0.05
  return cas


def test_thresholds_are_rskp_arange():
  t = P.cas_thresholds(_thumos())
  assert len(t) == 20
  assert t[0] == 0.001 and t[-1] == 0.039
  np.testing.assert_array_equal(t, np.arange(0.001, 0.04, 0.002))


def test_spec_proposal_oracle():
  # All 20 thresholds give the run [2, 5); NMS leaves one proposal [2, 6) (the +1 end) whose score
  # is inner = mean(cas[2:6]) = .15/4 in float32, outer = cas[1] = 0.
  props = P.video_proposals(np.array([0.5, 0.5], np.float32), _oracle_cas(), _thumos())
  assert props.shape == (1, 4)
  np.testing.assert_array_equal(props[0, :3], [0, 2, 6])
  assert props[0, 3] == 0.03750000149011612  # RSKP's float32 value (oracles.json).


def test_class_gate_and_top1_fallback():
  cfg = _thumos()
  assert P.video_proposals(np.array([0.09, 0.91], np.float32), _oracle_cas(), cfg).shape == (0, 4)
  cfg.top1_fallback = True
  props = P.video_proposals(np.array([0.09, 0.91], np.float32), _oracle_cas(), cfg)
  # The background column is never a class.
  np.testing.assert_array_equal(props[:, :3], [[0, 2, 6]])


def test_runs_and_min_length():
  cas = np.array([0.0, 0.1, 0.0, 0.1, 0.1, 0.0, 0.1, 0.1, 0.1], np.float32)
  starts, ends = P.threshold_runs(cas, np.array([0.05, 0.2]))
  np.testing.assert_array_equal(starts, [1, 3, 6])
  np.testing.assert_array_equal(ends, [2, 5, 9])
  cfg = _thumos()
  cfg.thresholds_start, cfg.thresholds_stop, cfg.thresholds_step = 0.05, 0.06, 0.01
  cfg.nms = 'none'
  props = P.class_proposals(cas, cfg)  # 'none': all runs, by descending score.
  # The 1-snippet run is dropped; the run at the end keeps its stored end e + 1 = T + 1.
  np.testing.assert_array_equal(props[:, :2], [[6, 10], [3, 6]])


def test_contrast_score_details():
  cas = np.array([0.2, 0.0, 0.4, 0.4, 0.4, 0.4, 0.3, 0.1, 0.05, 0.7], np.float32)
  # Run [2, 6), L = 4: inner = mean(cas[2:7]); outer_s = int(2 - 1) = 1, outer_e = min(9, int(8))
  # = 8, so the context is cas[1:2] ++ cas[7:8].
  got = P.contrast_scores(cas, np.array([2]), np.array([6]))[0]
  want = np.mean(cas[2:7]) - np.mean(cas[[1, 7]])
  assert got == want and np.float32(got) == got
  # A run reaching the end: inner truncated to cas[s:], outer capped at T - 1 (never the last one).
  got = P.contrast_scores(cas, np.array([7]), np.array([10]))[0]
  assert got == np.mean(cas[7:10]) - np.mean(cas[6:7])


def test_rskp_nms_normalises_by_the_other_length():
  # Kept [0, 10) vs [6, 12): +1 overlap (10 - 6 + 1) = 5 over the other's 12 - 6 + 1 = 7 -> 0.71.
  keep = P.rskp_nms(np.array([0, 6]), np.array([10, 12]), np.array([0.9, 0.8]), 0.5)
  np.testing.assert_array_equal(keep, [0])
  # [0, 10) vs [8, 20): 3 / 13 < 0.5, both kept, best first.
  keep = P.rskp_nms(np.array([8, 0]), np.array([20, 10]), np.array([0.8, 0.9]), 0.5)
  np.testing.assert_array_equal(keep, [1, 0])
  # The normaliser is j's length, not the IoU: a long low-score j survives a short kept i.
  keep = P.rskp_nms(np.array([0, 0]), np.array([4, 40]), np.array([0.9, 0.8]), 0.5)
  np.testing.assert_array_equal(keep, [0, 1])
  keep = P.rskp_nms(np.array([0, 0]), np.array([40, 4]), np.array([0.9, 0.8]), 0.5)
  np.testing.assert_array_equal(keep, [0])


def test_iou_nms():
  starts, ends = np.array([0, 1, 0, 50]), np.array([100, 100, 60, 60])
  keep = P.iou_nms(starts, ends, np.array([0.5, 0.9, 0.8, 0.1]), 0.9)
  # [1, 100) is kept; [0, 100) has IoU 0.99 with it and goes; [0, 60) (IoU .59) and [50, 60) stay.
  np.testing.assert_array_equal(keep, [1, 2, 3])


def test_upsample_is_linear_with_extrapolation():
  cas = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
  up = P.upsample_cas(cas, 2)
  np.testing.assert_allclose(up[:, 0], [0, 0.5, 1, 2, 3, 4])
  assert up.shape == (6, 2)
  assert P.upsample_cas(cas, 1) is cas


def test_upsampled_proposals_scale_back_to_the_same_seconds():
  cfg = common.proposal_config('activitynet')
  cfg.nms = 'none'
  cas = np.zeros((10, 3), np.float32)
  cas[2:6, 1] = 0.05
  plain = P.video_proposals(np.array([0.05, 0.9, 0.05]), cas, cfg)
  cfg.upsample = 4
  up = P.video_proposals(np.array([0.05, 0.9, 0.05]), cas, cfg)
  assert set(plain[:, 0]) == set(up[:, 0]) == {1.0}
  sec_plain = P.proposals_to_seconds(plain[:1], num_snippets_orig=100, t_s=10)
  sec_up = P.proposals_to_seconds(up[:1], num_snippets_orig=100, t_s=10, upsample=4)
  assert abs(sec_plain[0, 1] - sec_up[0, 1]) <= 6.4  # Within one original snippet (6.4 s).


def test_proposal_config_fields():
  th = common.proposal_config('thumos14')
  an = common.proposal_config('ActivityNet1.3')
  assert (th.nms, th.nms_threshold, th.top1_fallback) == ('rskp', 0.5, False)
  assert (an.nms, an.nms_threshold, an.top1_fallback) == ('iou', 0.9, True)
  for c in (th, an):
    assert (c.thresholds_start, c.thresholds_stop, c.thresholds_step) == (0.001, 0.04, 0.002)
    assert (c.min_length, c.class_threshold, c.upsample, c.fps, c.stride) == (2, 0.1, 1, 25.0, 16)
  with pytest.raises(ValueError):
    common.proposal_config('kinetics')


def test_seconds_thumos14():
  props = np.array([[3, 2, 6, 0.5], [0, 0, 1, 0.1]])
  sec = P.proposals_to_seconds(props)
  np.testing.assert_allclose(sec, [[3, 1.28, 3.84, 0.5], [0, 0.0, 0.64, 0.1]])
  # Snippet i covers [i * 16/25, (i+1) * 16/25): GT [1.5, 3.5] s -> snippets {2, 3, 4}.
  assert sec[0, 1] <= 1.5 < sec[0, 1] + 0.64


def test_seconds_activitynet():
  # T_orig = 1000 snippets resampled to T_s = 100: index 10 -> 10 * (16 * 1000 / 25) / 100 = 64 s.
  sec = P.proposals_to_seconds(np.array([[5, 10, 20, 0.3]]), num_snippets_orig=1000, t_s=100)
  np.testing.assert_allclose(sec, [[5, 64.0, 128.0, 0.3]])
  sec = P.proposals_to_seconds(
    np.array([[5, 200, 400, 0.3]]), num_snippets_orig=1000, t_s=100, upsample=20
  )
  np.testing.assert_allclose(sec, [[5, 64.0, 128.0, 0.3]])
  with pytest.raises(ValueError):
    P.proposals_to_seconds(np.zeros((1, 4)), t_s=100)


def test_detections_json_format():
  out = P.detections_json(
    {'v1': np.array([[1, 0.5, 2.5, 0.9]]), 'v2': [], 'v3': [[0, 1.0, 2.0, 0.1]]},
    ['A', 'B'],
  )
  assert set(out) == {'version', 'results', 'external_data'}
  assert out['version'] == 'issf-jax' and out['external_data'] == {}
  assert out['results'] == {
    'v1': [{'label': 'B', 'score': 0.9, 'segment': [0.5, 2.5]}],
    'v2': [],
    'v3': [{'label': 'A', 'score': 0.1, 'segment': [1.0, 2.0]}],
  }
  json.dumps(out)  # Plain Python types only.
  assert all(type(x) is float for x in out['results']['v1'][0]['segment'])


def test_video_detections_in_seconds():
  cfg = _thumos()
  rows = P.video_detections(np.array([0.5, 0.5], np.float32), _oracle_cas(), cfg)
  np.testing.assert_allclose(rows, [[0, 2 * 0.64, 6 * 0.64, 0.0375]], rtol=1e-6)
  anet = common.proposal_config('activitynet')
  rows = P.video_detections(np.array([0.5, 0.5]), _oracle_cas(), anet, num_snippets_orig=100)
  # T_s = 10 from the map: one index = 16 * 100 / 25 / 10 = 6.4 s.
  np.testing.assert_allclose(rows[0, 1:3], [2 * 6.4, 6 * 6.4])
