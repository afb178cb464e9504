"""The synthetic ActivityNet benchmark: shipped annotations, scales, both layouts, bad packages.

Everything here reads the annotations shipped in data_pipelines/annotations/activitynet13 (never
../shared). The malformed-package tests run the `issf-prepare` entry point as a user does.
"""

import collections
import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines import acmnet, class_names, source, synthetic, wtalc
from data_pipelines import synthetic_activitynet as anet
from launch import prepare as prepare_cli


@pytest.fixture(scope='module')
def annotations():
  return anet.load_annotations()


@pytest.fixture(scope='module')
def tiny_packages(tmp_path_factory):
  """The tiny benchmark (seed 0) in both released layouts."""
  root = tmp_path_factory.mktemp('anet_tiny')
  kw = dict(dataset='activitynet13', scale='tiny', seed=0)
  acm = synthetic.generate(str(root / 'acmnet'), out_format='acmnet', **kw)
  wt = synthetic.generate(str(root / 'wtalc'), out_format='wtalc', **kw)
  return acm, wt


def test_shipped_annotations_are_activitynet13(annotations):
  entries, classes = annotations
  assert classes == class_names.ACTIVITYNET13 and len(classes) == 200
  by_subset = collections.Counter(v.subset for v in entries)
  assert by_subset == {'train': 9649, 'test': 4728}  # BSN's training / validation lists.
  instances = collections.Counter()
  for v in entries:
    instances[v.subset] += len(v.segments)
  assert instances == {'train': 14859, 'test': 7293}
  assert {lab for v in entries for lab in v.labels} == set(classes)
  assert all(len(v.video_id) == 11 for v in entries)  # YouTube ids, BSN's `v_` removed
  # At most two classes per video: the memory's label-slot cap of 4 never drops a label.
  assert max(len(v.labels) for v in entries) == 2
  # Long actions: a segment covers 43 % of its video on average (README stats).
  cover = [min(e, v.duration) - s for v in entries for s, e, _ in v.segments]
  durations = np.repeat([v.duration for v in entries], [len(v.segments) for v in entries])
  ratio = np.array(cover) / durations
  assert 0.40 < ratio.mean() < 0.46


@pytest.mark.parametrize('scale', ['tiny', 'small'])
def test_subsets_are_class_stratified(annotations, scale):
  sc = anet.SCALES[scale]
  chosen = anet.stratified_subset(*annotations, sc, seed=0)
  per_class = collections.Counter((v.subset, v.segments[0][2]) for v in chosen)
  num_classes = sc.num_classes_drawn or 200
  assert len({c for _, c in per_class}) == num_classes
  assert set(per_class.values()) <= {sc.train_per_class, sc.test_per_class}
  counts = collections.Counter(v.subset for v in chosen)
  assert counts['train'] == num_classes * sc.train_per_class
  assert counts['test'] == num_classes * sc.test_per_class
  assert len({v.video_id for v in chosen}) == len(chosen)
  # Train first, then test, each in annotation-file order.
  subsets = [v.subset for v in chosen]
  assert subsets == sorted(subsets, key=['train', 'test'].index)


def test_rescale_keeps_proportions():
  v = source.VideoEntry('x', 'train', 100.0, ('A',), ((10.0, 60.0, 'A'), (0.0, 0.0, 'A')))
  r = anet.rescale(v, 0.25)
  assert r.duration == 25.0 and r.segments == ((2.5, 15.0, 'A'), (0.0, 0.0, 'A'))
  assert anet.rescale(v, 1.0) is v


def test_both_layouts_hold_the_same_benchmark(tiny_packages, annotations):
  acm_dir, wt_dir = tiny_packages
  assert sorted(os.listdir(acm_dir)) == ['gt.json', 'split_test.txt', 'split_train.txt', 'test',
                                         'train']  # fmt: skip
  assert sorted(os.listdir(wt_dir)) == [
    'ActivityNet1.3-Annotations',
    'ActivityNet1.3-I3D-JOINTFeatures.npy',
  ]
  with open(os.path.join(acm_dir, 'gt.json')) as f:
    raw_subsets = {v['subset'] for v in json.load(f)['database'].values()}
  assert raw_subsets == {'training', 'validation'}  # as ActivityNet names them
  acm = acmnet.read_acmnet(acm_dir, classes=class_names.ACTIVITYNET13)
  wt = wtalc.read_wtalc(wt_dir)
  assert wt.classes == acm.classes == class_names.ACTIVITYNET13
  assert [v.video_id for v in acm.videos] == [v.video_id for v in wt.videos]
  real = {v.video_id: v for v in annotations[0]}
  for a, w in zip(acm.videos, wt.videos, strict=True):
    assert (a.subset, a.duration, a.labels) == (w.subset, w.duration, w.labels)
    assert sorted(a.segments) == sorted(w.segments)
    # The real video at 1/4 time: same labels, proportional segments.
    r = real[a.video_id]
    assert a.subset == r.subset and a.labels == r.labels
    assert a.duration == pytest.approx(r.duration / 4, abs=0.006)
    assert [lab for *_, lab in a.segments] == [lab for *_, lab in r.segments]
  x_a, x_w = acm.load_features(0), wt.load_features(0)
  np.testing.assert_array_equal(x_a, x_w)
  for ds in (acm, wt):
    for i, v in enumerate(ds.videos):
      x = ds.load_features(i)
      assert x.shape == (max(1, source.expected_num_snippets(v.duration)), 64)
    assert not ds.missing and not ds.length_mismatches
  lengths = [acm.load_features(i).shape[0] for i in range(len(acm.videos))]
  assert min(lengths) < 75 < max(lengths)  # both sides of T_s


def test_deterministic_and_seeded(tiny_packages, tmp_path):
  acm_dir, _ = tiny_packages
  again = synthetic.generate(str(tmp_path / 'a'), dataset='activitynet13', scale='tiny',
                             out_format='acmnet')  # fmt: skip
  for name in ('gt.json', 'split_train.txt', 'split_test.txt'):
    with open(os.path.join(acm_dir, name), 'rb') as f, open(os.path.join(again, name), 'rb') as g:
      assert f.read() == g.read()
  first = sorted(os.listdir(os.path.join(acm_dir, 'train')))[0]
  np.testing.assert_array_equal(
    np.load(os.path.join(acm_dir, 'train', first)), np.load(os.path.join(again, 'train', first))
  )
  other, _, _ = anet.plan(anet.SCALES['tiny'], seed=1)
  ids = {v.video_id for v in acmnet.read_acmnet(acm_dir, classes=class_names.ACTIVITYNET13).videos}
  assert {v.video_id for v in other} != ids


# ---- Malformed ActivityNet packages: a named error or a manifest entry, never a silent drop.


def _copy(src, tmp_path):
  dst = str(tmp_path / 'pkg')
  shutil.copytree(src, dst)
  return dst


def _prepare(src, out, capsys):
  argv = ['--format', 'acmnet', '--src', src, '--out', out, '--classes', 'activitynet13']
  code = prepare_cli.run(argv)
  return code, capsys.readouterr()


def test_missing_split_file_is_a_named_error(tiny_packages, tmp_path, capsys):
  pkg = _copy(tiny_packages[0], tmp_path)
  os.remove(os.path.join(pkg, 'split_test.txt'))
  code, out = _prepare(pkg, str(tmp_path / 'shards'), capsys)
  assert code == 2
  [line] = out.err.strip().splitlines()
  assert 'split_test.txt' in line and 'not found' in line and 'Traceback' not in out.err
  assert not os.path.exists(tmp_path / 'shards' / 'manifest.json')


def test_gt_video_without_features_is_in_the_manifest(tiny_packages, tmp_path, capsys):
  pkg = _copy(tiny_packages[0], tmp_path)
  with open(os.path.join(pkg, 'split_test.txt')) as f:
    gone = f.readline().strip()
  os.remove(os.path.join(pkg, 'test', gone + '.npy'))
  with open(os.path.join(pkg, 'gt.json')) as f:
    gt = json.load(f)
  # An annotated validation video that no split file lists (and that has no features).
  gt['database']['unlisted_video'] = dict(gt['database'][gone])
  with open(os.path.join(pkg, 'gt.json'), 'w') as f:
    json.dump(gt, f)
  code, out = _prepare(pkg, str(tmp_path / 'shards'), capsys)
  assert code == 0 and '2 missing' in out.out
  with open(tmp_path / 'shards' / 'manifest.json') as f:
    manifest = json.load(f)
  assert manifest['missing_videos'] == [
    {'video_id': gone, 'subset': 'test', 'reason': 'no features file'},
    {'video_id': 'unlisted_video', 'subset': 'test', 'reason': 'not in split files'},
  ]
  assert manifest['counts'] == {'train': 48, 'test': 23}
  with open(tmp_path / 'shards' / 'ground_truth.json') as f:
    assert gone not in json.load(f)['database']


def test_duration_disagreeing_with_features_is_in_the_manifest(tiny_packages, tmp_path, capsys):
  pkg = _copy(tiny_packages[0], tmp_path)
  with open(os.path.join(pkg, 'gt.json')) as f:
    gt = json.load(f)
  with open(os.path.join(pkg, 'split_train.txt')) as f:
    video = f.readline().strip()
  t = np.load(os.path.join(pkg, 'train', video + '.npy')).shape[0]
  gt['database'][video]['duration'] = round((t + 10) * 0.64, 2)  # 10 snippets too long
  with open(os.path.join(pkg, 'gt.json'), 'w') as f:
    json.dump(gt, f)
  with pytest.warns(source.LengthMismatchWarning, match=video):
    code, out = _prepare(pkg, str(tmp_path / 'shards'), capsys)
  assert code == 0 and '1 length warnings' in out.out
  with open(tmp_path / 'shards' / 'manifest.json') as f:
    manifest = json.load(f)
  assert manifest['length_mismatches'] == [
    {'video_id': video, 'num_snippets': t, 'expected': t + 10}
  ]


def test_split_video_without_gt_entry_is_a_named_error(tiny_packages, tmp_path, capsys):
  pkg = _copy(tiny_packages[0], tmp_path)
  with open(os.path.join(pkg, 'split_train.txt'), 'a') as f:
    f.write('no_such_video\n')
  code, out = _prepare(pkg, str(tmp_path / 'shards'), capsys)
  assert code == 2
  assert "'no_such_video'" in out.err and 'split_train.txt' in out.err and 'gt.json' in out.err


def test_wtalc_video_without_features_is_in_the_manifest(tiny_packages, tmp_path, capsys):
  pkg = _copy(tiny_packages[1], tmp_path)
  path = os.path.join(pkg, 'ActivityNet1.3-I3D-JOINTFeatures.npy')
  feats = np.load(path, allow_pickle=True)
  feats[3] = None
  np.save(path, feats, allow_pickle=True)
  out = str(tmp_path / 'shards')
  assert prepare_cli.run(['--format', 'wtalc', '--src', pkg, '--out', out]) == 0
  with open(os.path.join(out, 'manifest.json')) as f:
    manifest = json.load(f)
  video = wtalc.read_annotations(os.path.join(pkg, 'ActivityNet1.3-Annotations'))['videoname'][3]
  assert manifest['missing_videos'] == [
    {'video_id': video, 'subset': 'train', 'reason': 'no features'}
  ]
