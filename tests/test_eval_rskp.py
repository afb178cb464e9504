"""The `rskp` protocol against RSKP's own outputs (tests/testdata/rskp_protocol), plus the
hand-computed oracles (docs/design.md §10).

Cases come from $ISSF_RSKP_PROTOCOL_DIR, else tests/testdata/rskp_protocol: every
`<case>_inputs.npz` found is checked (mAPs, average, classification mAP, the early-return flag,
per-class and natural APs, and RSKP's final and pre-filter proposal lists with their GT matches);
finding none is a failure. The ground truth is given to the evaluator in the ActivityNet format it
takes in general, built from the folder's `thumos14_test_gt.json` (or `.json.gz`) and the real
Ambiguous_test.txt (the packaged THUMOS14 annotations).
"""

import json
import pathlib
import warnings

import numpy as np
import pytest

from configs.common import proposal_config
from data_pipelines import wtalc
from issf_jax.evaluation import classification_map, evaluate_rskp, read_ambiguous_txt
from issf_jax.evaluation import rskp as rskp_lib
from tests.conftest import data_file, read_json
from tests.conftest import golden_dir as _golden_dir

THUMOS = proposal_config('thumos14')  # RSKP's settings

AMBIGUOUS_TXT = pathlib.Path(wtalc.packaged_annotations('thumos14')) / 'Ambiguous_test.txt'


def golden_dir() -> pathlib.Path:
  return _golden_dir('rskp_protocol', 'ISSF_RSKP_PROTOCOL_DIR')


CASES = sorted(p.name[: -len('_inputs.npz')] for p in golden_dir().glob('*_inputs.npz'))


@pytest.fixture(scope='module')
def golden_gt():
  """(ActivityNet-format GT, class names, video ids in test order) from thumos14_test_gt.json."""
  if not CASES:
    pytest.fail(f'no <case>_inputs.npz found in {golden_dir()}')
  ref = read_json(data_file(golden_dir(), 'thumos14_test_gt.json'))
  ambiguous = read_ambiguous_txt(AMBIGUOUS_TXT)
  names = ref['class_names']
  database = {}
  for v in ref['videos']:
    entry = {
      'subset': 'test',
      'duration': v['duration_sec'],
      'annotations': [{'segment': [s[1], s[2]], 'label': names[s[0]]} for s in v['segments']],
    }
    if v['name'] in ambiguous:
      entry['ambiguous'] = ambiguous[v['name']]
      # Our seconds -> snippet conversion must give RSKP's ambiguous ranges.
      secs = np.asarray(ambiguous[v['name']])
      got = np.stack(rskp_lib.seconds_to_snippets(secs[:, 0], secs[:, 1], ref['factor']), 1)
      np.testing.assert_array_equal(got, v['ambiguous_snippet_ranges'])
    else:
      assert not v['ambiguous_snippet_ranges']
    # And its GT rounding (half to even on float64 products) must give RSKP's GT ranges.
    if v['segments']:
      seg = np.asarray(v['segments'])
      got = np.stack(rskp_lib.seconds_to_snippets(seg[:, 1], seg[:, 2], ref['factor']), 1)
      np.testing.assert_array_equal(got, seg[:, 3:5])
    database[v['name']] = entry
  gt = {'version': 'thumos14-golden', 'taxonomy': [], 'database': database}
  return gt, names, [v['name'] for v in ref['videos']]


def _split_maps(inputs):
  offsets = inputs['offsets']
  flat = inputs['frm_pred_flat']
  return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


@pytest.mark.parametrize('case', CASES or [None])
def test_rskp_goldens(case, golden_gt):
  assert case is not None, f'no <case>_inputs.npz found in {golden_dir()}'
  gt, names, videos = golden_gt
  root = golden_dir()
  inputs = np.load(root / f'{case}_inputs.npz')
  expected = json.loads((root / f'{case}_outputs.json').read_text())
  props = np.load(root / f'{case}_proposals.npz')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # The early-return warning of case6.
    got = evaluate_rskp(
      inputs['vid_pred'],
      _split_maps(inputs),
      videos,
      gt,
      names,
      config=THUMOS,
      video_labels=inputs['labels_all'],
      return_proposals=True,
    )
  pct = lambda xs: 100 * np.asarray(xs)
  np.testing.assert_allclose(pct(got['mAP']), expected['rskp_detection_map_per_iou'], atol=1e-6)
  assert abs(100 * got['average_mAP'] - expected['rskp_detection_map_average']) <= 1e-6
  assert abs(100 * got['classification_mAP'] - expected['rskp_classification_map']) <= 1e-5
  assert got['early_return_zero'] == expected['rskp_early_return_zero']
  assert bool(got['empty_classes']) == expected['rskp_early_return_zero']
  np.testing.assert_allclose(
    pct(got['natural_mAP']), expected['natural_map_per_iou_NOT_RSKP'], atol=1e-6
  )
  assert set(got['per_class_ap']) == set(expected['per_class_ap_per_iou'])
  for name, ap in expected['per_class_ap_per_iou'].items():
    np.testing.assert_allclose(got['per_class_ap'][name], ap, atol=1e-8, err_msg=name)
  assert got['num_final_proposals_per_class'] == expected['num_final_proposals_per_class']
  assert got['num_prefilter_proposals_per_class'] == expected['num_prefilter_proposals_per_class']
  # RSKP's proposal lists, in RSKP's order: same rows, scores equal to float32 precision.
  for kind in ('final', 'prefilter'):
    offsets = props[f'{kind}_class_offsets']
    for c, name in enumerate(names):
      sl = slice(offsets[c], offsets[c + 1])
      ours = got['proposals'][name][kind]
      ref_int = np.stack([props[f'{kind}_{k}'][sl] for k in ('video', 'start', 'end')], axis=1)
      np.testing.assert_array_equal(ours[:, :3], ref_int, err_msg=f'{kind} {name}')
      np.testing.assert_allclose(ours[:, 3], props[f'{kind}_score'][sl], rtol=0, atol=1e-7)
      if kind == 'final':
        np.testing.assert_array_equal(
          got['proposals'][name]['matched_gt'], props['final_matched_gt'][sl], err_msg=name
        )


def _two_video_gt():
  """The oracles' annotation folder: one test video with BaseballPitch [1.5, 3.5] s."""
  return {
    'database': {
      'val': {'subset': 'validation', 'annotations': [{'segment': [0, 5], 'label': 'A'}]},
      'v': {'subset': 'test', 'annotations': [{'segment': [1.5, 3.5], 'label': 'A'}]},
    }
  }


def _oracle_inputs(video_score):
  cas = np.zeros((10, 2), np.float32)
  cas[2:5, 0] = 0.05
  return np.array([[video_score, 1 - video_score]], np.float32), [cas]


def test_time_mapping_oracles():
  s, e = rskp_lib.seconds_to_snippets([10.0, 1.5, 1.6], [20.0, 3.5, 1.6], 25 / 16)
  assert (s.tolist(), e.tolist()) == ([16, 2, 2], [31, 5, 2])  # 1.6 s -> 2.5 -> 2 (half to even).


def test_proposal_oracle_iou_and_full_map():
  scores, maps = _oracle_inputs(0.5)
  got = evaluate_rskp(
    scores, maps, ['v'], _two_video_gt(), ['A'], config=THUMOS, return_proposals=True
  )
  np.testing.assert_array_equal(got['proposals']['A']['final'], [[0, 2, 6, 0.03750000149011612]])
  # Prediction {2, 3, 4, 5} vs GT {2, 3, 4}: IoU 0.75 >= every threshold.
  assert rskp_lib.snippet_iou(np.array([2]), np.array([6]), np.array([2]), np.array([5]))[0] == 0.75
  assert got['mAP'] == [1.0] * 7 and not got['early_return_zero']
  assert got['num_videos'] == 1 and got['num_instances'] == 1


def test_class_gate_gives_the_early_return():
  scores, maps = _oracle_inputs(0.09)
  with pytest.warns(UserWarning, match='no proposal'):
    got = evaluate_rskp(scores, maps, ['v'], _two_video_gt(), ['A'], config=THUMOS)
  assert got['mAP'] == [0.0] * 7 and got['average_mAP'] == 0.0
  assert got['early_return_zero'] and got['empty_classes'] == ['A']
  assert got['natural_mAP'] == [0.0] * 7


def _ap_with_maps(order):
  """One GT {2, 3, 4}; a correct proposal [2, 6) and a wrong one [12, 16) with the given scores."""
  cas = np.zeros((20, 2), np.float32)
  cas[2:5, 0] = order[0]
  cas[12:15, 0] = order[1]
  got = evaluate_rskp(
    np.array([[0.5, 0.5]], np.float32), [cas], ['v'], _two_video_gt(), ['A'], config=THUMOS
  )
  return got['per_class_ap']['A'][4]  # IoU 0.5.


def test_ap_oracles():
  assert _ap_with_maps((0.3, 0.2)) == 1.0  # correct first
  assert _ap_with_maps((0.2, 0.3)) == 0.5  # wrong first
  assert _ap_with_maps((0.0, 0.3)) == 0.0  # only wrong


def test_ambiguous_filter_is_class_agnostic():
  gt = _two_video_gt()
  gt['database']['v']['ambiguous'] = [[3.9, 4.5]]  # range(6, 7): misses the prediction {2..5}.
  scores, maps = _oracle_inputs(0.5)
  got = evaluate_rskp(scores, maps, ['v'], gt, ['A'], config=THUMOS)
  assert got['num_final_proposals_per_class'] == {'A': 1}
  gt['database']['v']['ambiguous'] = [[3.5, 4.0]]  # range(5, 6) meets the prediction {2..5}.
  with pytest.warns(UserWarning):
    got = evaluate_rskp(scores, maps, ['v'], gt, ['A'], config=THUMOS)
  assert got['num_final_proposals_per_class'] == {'A': 0} and got['early_return_zero']
  assert got['num_prefilter_proposals_per_class'] == {'A': 1}


def test_classification_map_oracles():
  conf = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6]])
  labels = np.array([[1, 0], [0, 1], [1, 1]])
  assert classification_map(conf, labels) == 91.66666865348816  # RSKP's value (oracles.json).
  conf_bg = np.concatenate([conf, np.zeros((3, 1))], axis=1)  # The background column is ignored.
  assert classification_map(conf_bg, labels) == 91.66666865348816
  with pytest.warns(UserWarning, match='no positive'):
    assert np.isnan(classification_map(conf, np.array([[1, 0], [0, 0], [1, 0]])))


def test_rejects_upsampled_config():
  cfg = proposal_config('thumos14')
  cfg.upsample = 4
  scores, maps = _oracle_inputs(0.5)
  with pytest.raises(ValueError, match='upsample'):
    evaluate_rskp(scores, maps, ['v'], _two_video_gt(), ['A'], config=cfg)
