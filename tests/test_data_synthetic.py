"""The synthetic THUMOS-shaped benchmark: format, determinism, statistics, difficulty, real mode.

No TensorFlow in this module. The difficulty test computes its own tiny IoU / AP (the project's
evaluators live elsewhere and are not a dependency of the data tests).
"""

import collections
import filecmp
import os

import numpy as np
import pytest

from data_pipelines import class_names, source, synthetic, wtalc
from launch import synthetic as synthetic_cli

THUMOS_ANN = wtalc.packaged_annotations('thumos14')
SNIPPET = 16 / 25


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  out = synthetic.generate(str(tmp_path_factory.mktemp('tiny')), scale='tiny', seed=0)
  ds = wtalc.read_wtalc(out)
  return out, ds, [ds.load_features(i) for i in range(len(ds.videos))]


def test_tiny_is_a_valid_wtalc_package(tiny):
  out, ds, feats = tiny
  assert sorted(os.listdir(out)) == ['Synthetic-Annotations', 'Synthetic-I3D-JOINTFeatures.npy']
  assert ds.classes == class_names.THUMOS14
  counts = collections.Counter(v.subset for v in ds.videos)
  assert counts == {'train': 24, 'test': 16}
  assert not ds.missing and not ds.length_mismatches  # T = floor(duration * 25 / 16) exactly.
  for v, x in zip(ds.videos, feats, strict=True):
    assert x.shape == (source.expected_num_snippets(v.duration), 64) and x.dtype == np.float32
    assert (x >= 0).all() and np.isfinite(x).all() and x.shape[0] <= 96
    assert v.labels or v.subset == 'test'
    assert v.segments and all(0 <= s < e <= v.duration for s, e, _ in v.segments)
    assert not v.ambiguous or v.subset == 'test'  # Only Ambiguous_test.txt is released.
    if 'CliffDiving' in {lab for _, _, lab in v.segments}:  # Child segments carry the parent.
      cliff = {(s, e) for s, e, lab in v.segments if lab == 'CliffDiving'}
      assert cliff <= {(s, e) for s, e, lab in v.segments if lab == 'Diving'}


def test_deterministic_from_the_seed(tmp_path, tiny):
  out, _, _ = tiny
  again = synthetic.generate(str(tmp_path / 'a'), scale='tiny', seed=0)
  cmp = filecmp.dircmp(out, again)
  assert not cmp.diff_files and not cmp.subdirs['Synthetic-Annotations'].diff_files
  assert filecmp.cmp(
    os.path.join(out, 'Synthetic-I3D-JOINTFeatures.npy'),
    os.path.join(again, 'Synthetic-I3D-JOINTFeatures.npy'),
    shallow=False,
  )
  other = wtalc.read_wtalc(synthetic.generate(str(tmp_path / 'b'), scale='tiny', seed=1))
  assert [v.duration for v in other.videos] != [v.duration for v in tiny[1].videos]


def test_features_are_temporally_smooth_with_cuts(tiny):
  _, _, feats = tiny
  x = np.concatenate([f for f in feats if len(f) > 40])
  adjacent = np.abs(np.diff(x, axis=0)).sum(1)
  random_pairs = np.abs(x - np.random.default_rng(0).permutation(x)).sum(1)
  assert np.median(adjacent) < 0.8 * np.median(random_pairs)
  assert adjacent.max() > 2 * np.median(adjacent)  # Abrupt changes exist (cuts, boundaries).


def test_parametric_model_matches_thumos_statistics():
  # Plans only (no features): the full-scale model against stats.json (pooled subsets).
  plan = synthetic.parametric_plan(synthetic.SCALES['full'], seed=0)
  assert len(plan) == 412
  durations = np.array([v.duration for v in plan])
  counts = np.array([len({(s, e) for s, e, _ in v.segments}) for v in plan])
  lengths = np.array([e - s for v in plan for s, e, _ in v.segments])
  assert 120 < np.median(durations) < 190 and durations.max() <= 1673.5  # real 154.6 s
  assert 5 <= np.median(counts) <= 11 and 10 < counts.mean() < 21  # real 8 / 15.4
  assert 2.0 < np.median(lengths) < 4.0  # real 3.0 s
  multi = np.mean([len({lab for _, _, lab in v.segments}) > 1 for v in plan])
  assert 0.08 < multi < 0.25  # real 61 / 412 = 0.15
  noisy = np.mean([set(v.labels) != {lab for _, _, lab in v.segments} for v in plan])
  assert 0.02 < noisy < 0.15  # real 28 / 412 = 0.068
  with_ambiguous = np.mean([bool(v.ambiguous) for v in plan])
  assert 0.08 < with_ambiguous < 0.3  # real 72 / 412 = 0.17


# ---- difficulty: neither trivial nor impossible -------------------------------------------------


def _ridge(a, y, lam):
  a = np.c_[a, np.ones(len(a))]
  return np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)


def _runs(mask):
  edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
  return list(zip(edges[::2], edges[1::2], strict=True))


def _ap(preds, gts):
  """AP at tIoU 0.5: preds [(video, s, e, score)], gts {video: [(s, e)]}."""
  num_gt = sum(map(len, gts.values()))
  used = {k: np.zeros(len(v), bool) for k, v in gts.items()}
  tp = []
  for video, s, e, _ in sorted(preds, key=lambda p: -p[3]):
    segs = np.array(gts.get(video, np.zeros((0, 2))))
    hit = False
    if len(segs):
      inter = np.clip(np.minimum(e, segs[:, 1]) - np.maximum(s, segs[:, 0]), 0, None)
      iou = inter / (np.maximum(e, segs[:, 1]) - np.minimum(s, segs[:, 0]))
      iou[used[video]] = -1
      j = int(iou.argmax())
      if iou[j] >= 0.5:
        used[video][j], hit = True, True
    tp.append(hit)
  tp = np.array(tp, float)
  precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
  return float((precision * tp).sum() / num_gt)


def _localisation_map(ds, feats, w, num_classes):
  """Threshold min-max normalised snippet scores at 0.5 for each labelled class; mAP@0.5."""
  index = {c: i for i, c in enumerate(ds.classes)}
  preds, gts = collections.defaultdict(list), collections.defaultdict(dict)
  for v, x in zip(ds.videos, feats, strict=True):
    if v.subset != 'test':
      continue
    for s, e, lab in v.segments:
      gts[index[lab]].setdefault(v.video_id, []).append((s, e))
    scores = np.c_[x, np.ones(len(x))] @ w
    for c in {index[lab] for lab in v.labels}:
      f = scores[:, c]
      g = (f - f.min()) / (f.max() - f.min() + 1e-9)
      for a, b in _runs(g > 0.5):
        preds[c].append((v.video_id, a * SNIPPET, b * SNIPPET, float(g[a:b].mean())))
  return np.mean([_ap(preds[c], gts[c]) for c in range(num_classes) if gts[c]])


def test_difficulty_on_the_small_scale(tmp_path):
  ds = wtalc.read_wtalc(synthetic.generate(str(tmp_path), scale='small', seed=0))
  feats = [ds.load_features(i) for i in range(len(ds.videos))]
  c = len(ds.classes)
  y = np.stack([ds.multi_hot(v) for v in ds.videos])
  train = np.array([v.subset == 'train' for v in ds.videos])
  # 1) Video level: a mean-pooled linear classifier is accurate (the task is learnable).
  pooled = np.stack([x.mean(0) for x in feats])
  top = (np.c_[pooled, np.ones(len(pooled))] @ _ridge(pooled[train], y[train], 1.0)).argmax(1)
  labelled_test = ~train & (y.sum(1) > 0)
  accuracy = y[labelled_test, top[labelled_test]].mean()
  # 2) Naive localisation: snippets trained on their video's labels, thresholded.
  x_train = np.concatenate([x for x, t in zip(feats, train, strict=True) if t])
  rows = np.flatnonzero(train)
  y_naive = np.concatenate([np.repeat(y[i : i + 1], len(feats[i]), 0) for i in rows])
  naive = _localisation_map(ds, feats, _ridge(x_train, y_naive, 10.0), c)
  # 3) The same linear model with frame labels: the features do carry the boundaries.
  frame = []
  for i in np.flatnonzero(train):
    v, t = ds.videos[i], len(feats[i])
    centers, f = (np.arange(t) + 0.5) * SNIPPET, np.zeros((t, c))
    for s, e, lab in v.segments:
      f[(centers >= s) & (centers < e), ds.classes.index(lab)] = 1
    frame.append(f)
  supervised = _localisation_map(ds, feats, _ridge(x_train, np.concatenate(frame), 10.0), c)
  # Measured at seed 0: accuracy 0.96, naive 0.33, supervised 0.75.
  assert accuracy >= 0.85, accuracy
  assert naive <= 0.5, naive
  assert supervised >= naive + 0.2, (naive, supervised)


def test_real_annotation_structure_mode(tmp_path):
  out = synthetic.generate(
    str(tmp_path), real_annotations=THUMOS_ANN, feature_dim=16, max_videos=4, layout='rskp'
  )
  ds = wtalc.read_wtalc(out)
  real = wtalc.read_annotations(THUMOS_ANN)
  train_ids = [v for v, s in zip(real['videoname'], real['subset'], strict=True) if s != 'test']
  test_ids = [v for v, s in zip(real['videoname'], real['subset'], strict=True) if s == 'test']
  assert [v.video_id for v in ds.videos] == train_ids[:4] + test_ids[:4]
  for i, v in enumerate(ds.videos):
    j = real['videoname'].index(v.video_id)
    assert v.duration == real['duration'][j] and list(v.labels) == real['labels_all'][j]
    assert [(s, e) for s, e, _ in v.segments] == real['segments'][j]
    x = ds.load_features(i)
    assert x.shape == (source.expected_num_snippets(v.duration), 16)
  assert not ds.length_mismatches
  ambiguous = [v for v in ds.videos if v.ambiguous]
  assert all(v.ambiguous == tuple(real['ambiguous'][v.video_id]) for v in ambiguous)


def test_cli_writes_acmnet_format(tmp_path):
  assert synthetic_cli.run(['--out', str(tmp_path), '--scale', 'tiny', '--format', 'acmnet']) == 0
  assert {'gt.json', 'split_train.txt', 'split_test.txt', 'train', 'test'} <= set(
    os.listdir(tmp_path)
  )
  assert len(os.listdir(tmp_path / 'train')) == 24
