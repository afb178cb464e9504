"""Readers of the released formats: real annotation oracles (docs/design.md §10), layouts,
validation errors.

No TensorFlow in this module.
"""

import collections
import dataclasses
import json
import os
import pathlib
import tarfile
import warnings

import numpy as np
import pytest

from data_pipelines import acmnet, source, wtalc

THUMOS_ANN = pathlib.Path(wtalc.packaged_annotations('thumos14'))
# The ActivityNet 1.3 W-TALC arrays, packed (tests/testdata/activitynet13/README.md).
ANET_TAR = pathlib.Path(__file__).parent / 'testdata' / 'activitynet13' / 'wtalc_annotations.tar.xz'


@pytest.fixture(scope='module')
def anet_annotations(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp('anet_annotations')
  with tarfile.open(ANET_TAR) as tar:
    for member in tar.getmembers():  # Seven flat .npy files.
      (folder / pathlib.PurePath(member.name).name).write_bytes(tar.extractfile(member).read())
  return folder


CLASSES = ('Alpha', 'Beta', 'Gamma')
D = 8


def _videos():
  """Four small videos; T = floor(duration * 25 / 16)."""
  v = source.VideoEntry
  return [
    v('vid_a', 'train', 6.4, ('Alpha',), ((1.0, 2.0, 'Alpha'),)),
    v('vid_b', 'train', 9.6, ('Beta', 'Gamma'), ((0.5, 1.5, 'Beta'), (3.0, 4.0, 'Gamma'))),
    v('vid_c', 'test', 3.2, ('Gamma',), ((0.0, 1.0, 'Gamma'),), ((2.0, 2.5),)),
    v('vid_d', 'test', 12.8, ('Alpha',), ((5.0, 6.0, 'Alpha'), (7.0, 8.0, 'Alpha'))),
  ]


def _features(videos, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.random((source.expected_num_snippets(v.duration), D), np.float32) for v in videos]


def _write(tmp_path, *, layout='wtalc', videos=None, features=None, classes=CLASSES):
  videos = _videos() if videos is None else videos
  features = _features(videos) if features is None else features
  raw = ['validation' if v.subset == 'train' else 'test' for v in videos]
  wtalc.write_wtalc(str(tmp_path), 'Toy', classes, videos, features, raw_subsets=raw, layout=layout)
  return videos, features


def test_real_thumos_annotations_match_the_spec_oracles():
  ann = wtalc.read_annotations(str(THUMOS_ANN))
  assert len(ann['videoname']) == 412
  assert collections.Counter(ann['subset']) == {'validation': 200, 'test': 212}
  assert len(ann['classes']) == 20 and ann['classes'] == sorted(ann['classes'])
  by_subset = collections.Counter()
  for subset, segments in zip(ann['subset'], ann['segments'], strict=True):
    by_subset[subset] += len(segments)
  assert by_subset == {'validation': 3007, 'test': 3358}
  i = ann['videoname'].index('video_test_0000270')
  assert ann['labels_all'][i] == [] and ann['labels'][i] == ['HammerThrow'] * 29
  differ = [
    v
    for v, la, lab in zip(ann['videoname'], ann['labels_all'], ann['labels'], strict=True)
    if set(la) != set(lab)
  ]
  assert len(differ) == 28
  train_labels = [la for s, la in zip(ann['subset'], ann['labels_all'], strict=True) if s != 'test']
  assert all(train_labels)
  with open(THUMOS_ANN / 'Ambiguous_test.txt') as f:
    lines = f.read().splitlines()
  assert len(lines) == 99 and all(len(line.split(' ')) == 4 for line in lines)
  assert len(ann['ambiguous']) == 37 and sum(map(len, ann['ambiguous'].values())) == 99
  for la in ann['labels_all']:  # CliffDiving is a sub-class of Diving.
    assert 'CliffDiving' not in la or 'Diving' in la


def test_real_thumos_subset_rule():
  ann = wtalc.read_annotations(str(THUMOS_ANN))
  subsets = [source.normalize_subset(s, has_training=False) for s in ann['subset']]
  assert collections.Counter(subsets) == {'train': 200, 'test': 212}


def test_real_activitynet_wtalc_subset_rule(anet_annotations):
  ann = wtalc.read_annotations(str(anet_annotations))
  assert len(ann['classes']) == 200 and ann['ambiguous'] == {}
  has_training = 'training' in ann['subset']
  subsets = [source.normalize_subset(s, has_training) for s in ann['subset']]
  assert collections.Counter(subsets) == {'train': 9337, 'test': 4575}


@pytest.mark.parametrize('layout', ['wtalc', 'rskp'])
def test_both_wtalc_layouts(tmp_path, layout):
  videos, features = _write(tmp_path, layout=layout)
  ann_in_subdir = (tmp_path / 'Toy-Annotations' / 'classlist.npy').is_file()
  assert ann_in_subdir == (layout == 'wtalc')
  ds = wtalc.read_wtalc(str(tmp_path))
  assert ds.name == 'Toy' and ds.classes == CLASSES
  assert [v.video_id for v in ds.videos] == [v.video_id for v in videos]
  assert [v.subset for v in ds.videos] == ['train', 'train', 'test', 'test']
  assert ds.videos[2].ambiguous == ((2.0, 2.5),)
  assert ds.videos[1].segments == videos[1].segments
  for i, x in enumerate(features):
    np.testing.assert_array_equal(ds.load_features(i), x)
  np.testing.assert_array_equal(ds.multi_hot(ds.videos[1]), [0, 1, 1])
  assert ds.feature_dim == D and not ds.missing and not ds.length_mismatches


def test_missing_features_are_listed_not_fatal(tmp_path):
  videos = _videos()
  features = _features(videos)
  features[1] = None
  _write(tmp_path, videos=videos, features=features)
  ds = wtalc.read_wtalc(str(tmp_path))
  assert [v.video_id for v in ds.videos] == ['vid_a', 'vid_c', 'vid_d']
  assert ds.missing == [{'video_id': 'vid_b', 'subset': 'train', 'reason': 'no features'}]


def _bad(x, i=1, value=np.nan):
  x = [f.copy() for f in x]
  x[i][0, 3] = value
  return x


@pytest.mark.parametrize(
  'mutate, error, text',
  [
    (lambda f: f[:1] + [f[1][:, :5]] + f[2:], source.FeatureWidthError, 'width 5'),
    (lambda f: _bad(f, value=np.nan), source.NonFiniteFeatureError, 'NaN'),
    (lambda f: _bad(f, value=np.inf), source.NonFiniteFeatureError, 'Inf'),
    (lambda f: f[:1] + [f[1][:0]] + f[2:], source.EmptyVideoError, 'T = 0'),
  ],
)
def test_bad_features_raise_naming_video_and_file(tmp_path, mutate, error, text):
  videos = _videos()
  _write(tmp_path, videos=videos, features=mutate(_features(videos)))
  ds = wtalc.read_wtalc(str(tmp_path), checks=source.FeatureChecks(feature_dim=D))
  ds.load_features(0)
  with pytest.raises(error) as info:
    ds.load_features(1)
  assert isinstance(info.value, ValueError)
  message = str(info.value)
  assert 'vid_b' in message and 'Toy-I3D-JOINTFeatures.npy' in message and text in message


def test_width_inferred_from_first_video(tmp_path):
  videos = _videos()
  features = _features(videos)
  features[2] = features[2][:, :4]
  _write(tmp_path, videos=videos, features=features)
  ds = wtalc.read_wtalc(str(tmp_path))
  ds.load_features(0)
  with pytest.raises(source.FeatureWidthError, match='vid_c'):
    ds.load_features(2)


@pytest.mark.parametrize('field', ['labels', 'segments'])
def test_unknown_label_names_video_and_file(tmp_path, field):
  videos = _videos()
  if field == 'labels':
    videos[3] = dataclasses.replace(videos[3], labels=('Delta',))
    expected_file = 'labels_all.npy'
  else:
    videos[3] = dataclasses.replace(videos[3], segments=((5.0, 6.0, 'Delta'),))
    expected_file = 'labels.npy'
  _write(tmp_path, videos=videos)
  with pytest.raises(source.UnknownLabelError) as info:
    wtalc.read_wtalc(str(tmp_path))
  assert isinstance(info.value, ValueError)
  assert 'vid_d' in str(info.value) and expected_file in str(info.value)
  assert 'Delta' in str(info.value)


def test_length_mismatch_warns_with_relative_tolerance(tmp_path):
  videos = _videos()
  long = source.VideoEntry('vid_long', 'train', 1600.0, ('Alpha',), ())  # T_expected = 2500.
  features = _features(videos)
  features[0] = features[0][:-3]  # 10 -> 7 snippets: beyond the 2-snippet tolerance.
  features.append(np.ones((2480, D), np.float32))  # 20 short of 2500: within 1%.
  _write(tmp_path, videos=[*videos, long], features=features)
  ds = wtalc.read_wtalc(str(tmp_path))
  with pytest.warns(source.LengthMismatchWarning, match='vid_a'):
    ds.load_features(0)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    ds.load_features(4)
  assert ds.length_mismatches == {'vid_a': {'video_id': 'vid_a', 'num_snippets': 7, 'expected': 10}}
  checks = source.FeatureChecks()
  assert checks.length_tolerance(100) == 2 and checks.length_tolerance(2500) == 25
  # A wider absolute tolerance (issf-prepare --length_tolerance 3) accepts vid_a's 3 snippets.
  ds = wtalc.read_wtalc(str(tmp_path), checks=source.FeatureChecks(length_abs_tol=3))
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    ds.load_features(0)
  assert ds.length_mismatches == {}


def test_locate_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='JOINTFeatures'):
    wtalc.read_wtalc(str(tmp_path))
  np.save(tmp_path / 'X-I3D-JOINTFeatures.npy', np.empty(0, object))
  with pytest.raises(FileNotFoundError, match='classlist.npy'):
    wtalc.read_wtalc(str(tmp_path))


def test_acmnet_format_round_trip(tmp_path):
  videos, features = _videos(), _features(_videos())
  acmnet.write_acmnet(str(tmp_path), videos, features)
  os.remove(tmp_path / 'test' / 'vid_d.npy')  # Listed in split_test.txt, no features file.
  with open(tmp_path / 'gt.json') as f:  # An annotated video that no split lists.
    gt = json.load(f)
  annotations = [{'segment': [0.0, 1.0], 'label': 'Beta'}]
  gt['database']['vid_e'] = {'subset': 'test', 'duration': 1.0, 'annotations': annotations}
  with open(tmp_path / 'gt.json', 'w') as f:
    json.dump(gt, f)
  ds = acmnet.read_acmnet(str(tmp_path))
  assert ds.classes == CLASSES  # Sorted annotation labels.
  assert [v.video_id for v in ds.videos] == ['vid_a', 'vid_b', 'vid_c']
  assert ds.videos[1].labels == ('Beta', 'Gamma') and ds.videos[2].ambiguous == ((2.0, 2.5),)
  for i in range(3):
    np.testing.assert_array_equal(ds.load_features(i), features[i])
  assert {m['video_id']: m['reason'] for m in ds.missing} == {
    'vid_d': 'no features file',
    'vid_e': 'not in split files',
  }


def test_acmnet_errors_name_video_and_file(tmp_path):
  videos, features = _videos(), _features(_videos())
  features[2] = features[2].copy()
  features[2][1, 1] = np.inf
  acmnet.write_acmnet(str(tmp_path), videos, features)
  ds = acmnet.read_acmnet(str(tmp_path), checks=source.FeatureChecks(feature_dim=D))
  with pytest.raises(source.NonFiniteFeatureError, match=r'vid_c.*test/vid_c\.npy'):
    ds.load_features(2)
  with pytest.raises(source.UnknownLabelError, match=r'vid_b.*gt\.json'):
    acmnet.read_acmnet(str(tmp_path), classes=('Alpha', 'Gamma'))
