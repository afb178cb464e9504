"""The converter: TFRecord shards, manifest, ground truth, atomicity, idempotency, checksums."""

import filecmp
import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines import acmnet, input_pipeline, prepare, shards, source, synthetic, wtalc
from data_pipelines import manifest as manifest_lib
from launch import prepare as prepare_cli


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  src = synthetic.generate(str(tmp_path_factory.mktemp('src')), scale='tiny', seed=3)
  out = str(tmp_path_factory.mktemp('shards'))
  argv = ['--format', 'wtalc', '--src', src, '--out', out, '--videos_per_shard', '7']
  assert prepare_cli.run(argv) == 0
  return src, out


def test_manifest_contents(converted):
  src, out = converted
  m = input_pipeline.load_manifest(out)
  ds = wtalc.read_wtalc(src)
  assert m['counts'] == {'train': 24, 'test': 16} and m['feature_dim'] == 64
  assert m['classes'] == list(ds.classes) and m['num_classes'] == 20
  assert [s['file'] for s in m['shards']['train']] == [
    f'train-0000{k}-of-00004.tfrecord' for k in range(4)
  ]
  assert sum(s['num_examples'] for s in m['shards']['test']) == 16
  for subset in ('train', 'test'):
    for s in m['shards'][subset]:
      assert s['sha256'] == manifest_lib.sha256_file(os.path.join(out, s['file']))
  paths = {f['path'] for f in m['source_files']}
  assert 'Synthetic-I3D-JOINTFeatures.npy' in paths
  assert 'Synthetic-Annotations/labels_all.npy' in paths
  assert m['missing_videos'] == [] and m['length_mismatches'] == []
  train = [v for v in ds.videos if v.subset == 'train']
  assert [r['video_id'] for r in m['videos']['train']] == [v.video_id for v in train]
  row = m['videos']['train'][0]
  assert row == {
    'video_id': train[0].video_id,
    'num_snippets': source.expected_num_snippets(train[0].duration),
    'duration': train[0].duration,
    'fps': 25.0,
    'stride': 16,
  }
  assert sorted(os.listdir(out)) == sorted(
    ['manifest.json', 'ground_truth.json']
    + [s['file'] for subset in ('train', 'test') for s in m['shards'][subset]]
  )


def test_ground_truth_is_activitynet_format(converted):
  src, out = converted
  gt = input_pipeline.load_ground_truth(out)
  ds = wtalc.read_wtalc(src)
  assert gt['version'] == 'issf-jax' and gt['taxonomy'] == list(ds.classes)
  assert set(gt['database']) == {v.video_id for v in ds.videos}
  for v in ds.videos:
    entry = gt['database'][v.video_id]
    assert entry['subset'] == v.subset and entry['duration'] == v.duration
    assert entry['annotations'] == [{'segment': [s, e], 'label': lab} for s, e, lab in v.segments]
    assert entry['ambiguous'] == [[s, e] for s, e in v.ambiguous]
  assert any(e['ambiguous'] for e in gt['database'].values())


def test_round_trip_is_bitwise(converted):
  src, out = converted
  ds = wtalc.read_wtalc(src)
  m = input_pipeline.load_manifest(out)
  for subset in ('train', 'test'):
    index = shards.RecordIndex(manifest_lib.shard_paths(out, m, subset))
    entries = [(i, v) for i, v in enumerate(ds.videos) if v.subset == subset]
    assert len(index) == len(entries)
    for k, (i, v) in enumerate(entries):
      ex = shards.decode_numpy(index.read(k))
      np.testing.assert_array_equal(ex['features'], ds.load_features(i))
      np.testing.assert_array_equal(ex['labels'], ds.multi_hot(v))
      assert (ex['video_id'], ex['video_index'], ex['subset']) == (v.video_id, k, subset)


def test_rerun_writes_the_same_bytes(converted, tmp_path):
  src, out = converted
  again = str(tmp_path / 'again')
  prepare.convert('wtalc', src, again, videos_per_shard=7)
  names = sorted(os.listdir(out))
  assert sorted(os.listdir(again)) == names
  match, mismatch, errors = filecmp.cmpfiles(out, again, names, shallow=False)
  assert not mismatch and not errors
  # Into the same directory with another shard count: stale shards go, the manifest is rewritten.
  prepare.convert('wtalc', src, again, videos_per_shard=100)
  m = input_pipeline.load_manifest(again)
  assert len(m['shards']['train']) == 1
  shard_files = ['train-00000-of-00001.tfrecord', 'test-00000-of-00001.tfrecord']
  assert sorted(os.listdir(again)) == sorted(['manifest.json', 'ground_truth.json', *shard_files])


def test_interrupted_conversion_leaves_nothing_valid(converted, tmp_path, monkeypatch):
  src, out = converted
  target = str(tmp_path / 'interrupted')
  shutil.copytree(out, target)  # A complete earlier conversion is there.
  calls = {'n': 0}
  original = source.SourceDataset.load_features

  def crash(self, i):
    calls['n'] += 1
    if calls['n'] == 30:  # In the test subset, after the train shards were written.
      raise KeyboardInterrupt
    return original(self, i)

  monkeypatch.setattr(source.SourceDataset, 'load_features', crash)
  with pytest.raises(KeyboardInterrupt):
    prepare.convert('wtalc', src, target, videos_per_shard=7)
  assert 'manifest.json' not in os.listdir(target)
  assert not [f for f in os.listdir(target) if f.endswith('.partial')]
  with pytest.raises(FileNotFoundError, match='not a complete shard directory'):
    input_pipeline.load_manifest(target)


def test_checksum_mismatch_names_the_file(converted, tmp_path):
  _, out = converted
  target = str(tmp_path / 'corrupt')
  shutil.copytree(out, target)
  shard = os.path.join(target, 'train-00001-of-00004.tfrecord')
  data = bytearray(open(shard, 'rb').read())
  data[100] ^= 1
  open(shard, 'wb').write(bytes(data))
  with pytest.raises(source.ChecksumError, match='train-00001-of-00004.tfrecord') as info:
    input_pipeline.create_train_iterator(
      target, input_pipeline.BatchingOptions(global_batch_size=4, seed=0, mode='thumos'),
      host=input_pipeline.Host(),
    )  # fmt: skip
  assert isinstance(info.value, ValueError)
  gt = os.path.join(target, 'ground_truth.json')
  with open(gt, 'a') as f:
    f.write(' ')
  with pytest.raises(source.ChecksumError, match='ground_truth.json'):
    input_pipeline.load_ground_truth(target)


def test_missing_videos_are_listed(tmp_path):
  src = synthetic.generate(str(tmp_path / 'src'), scale='tiny', seed=0, num_train=6, num_test=4)
  path = os.path.join(src, 'Synthetic-I3D-JOINTFeatures.npy')
  feats = np.load(path, allow_pickle=True)
  feats[2] = None
  np.save(path, feats, allow_pickle=True)
  m = prepare.convert('wtalc', src, str(tmp_path / 'out'))
  assert m['counts'] == {'train': 5, 'test': 4}
  assert m['missing_videos'] == [
    {'video_id': 'syn_validation_00002', 'subset': 'train', 'reason': 'no features'}
  ]
  assert (
    'syn_validation_00002'
    not in input_pipeline.load_ground_truth(str(tmp_path / 'out'))['database']
  )


def test_bad_input_aborts_without_manifest(tmp_path):
  src = synthetic.generate(str(tmp_path / 'src'), scale='tiny', seed=0, num_train=4, num_test=2)
  path = os.path.join(src, 'Synthetic-I3D-JOINTFeatures.npy')
  feats = np.load(path, allow_pickle=True)
  feats[5] = feats[5].copy()
  feats[5][0, 0] = np.nan
  np.save(path, feats, allow_pickle=True)
  with pytest.raises(source.NonFiniteFeatureError, match='syn_test_00001'):
    prepare.convert('wtalc', src, str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out' / 'manifest.json')


def test_acmnet_conversion(tmp_path):
  src = synthetic.generate(str(tmp_path / 'src'), scale='tiny', seed=0, num_train=5, num_test=3)
  ds = wtalc.read_wtalc(src)
  feats = [ds.load_features(i) for i in range(len(ds.videos))]
  acmnet.write_acmnet(str(tmp_path / 'acm'), ds.videos, feats)
  # ACM-Net has no labels_all: the video labels are the annotated classes.
  m = prepare.convert('acmnet', str(tmp_path / 'acm'), str(tmp_path / 'out'), classes=ds.classes)
  assert m['source_format'] == 'acmnet' and m['counts'] == {'train': 5, 'test': 3}
  assert 'gt.json' in {f['path'] for f in m['source_files']}
  gt = input_pipeline.load_ground_truth(str(tmp_path / 'out'))
  assert gt['database'][ds.videos[0].video_id]['annotations'] == [
    {'segment': [s, e], 'label': lab} for s, e, lab in ds.videos[0].segments
  ]
  with open(tmp_path / 'out' / 'manifest.json') as f:
    assert json.load(f)['classes'] == list(ds.classes)


def test_real_structure_through_the_converter(tmp_path):
  # Features for the real THUMOS14 annotation structure (D = 8), then the oracles of
  # docs/design.md §10 on the converter's outputs.
  real = wtalc.packaged_annotations('thumos14')
  src = synthetic.generate(str(tmp_path / 'src'), real_annotations=real, feature_dim=8)
  m = prepare.convert('wtalc', src, str(tmp_path / 'out'), videos_per_shard=128)
  assert m['counts'] == {'train': 200, 'test': 212} and m['length_mismatches'] == []
  gt = input_pipeline.load_ground_truth(str(tmp_path / 'out'))['database']
  count = {'train': 0, 'test': 0}
  for entry in gt.values():
    count[entry['subset']] += len(entry['annotations'])
  assert count == {'train': 3007, 'test': 3358}
  ambiguous = [v for v in gt.values() if v['ambiguous']]
  # 99 lines over 37 videos; video_test_0001292 (3 lines) has only ambiguous segments and is not
  # one of the 412 videos.
  assert len(ambiguous) == 36 and sum(len(v['ambiguous']) for v in ambiguous) == 96
  assert [a['label'] for a in gt['video_test_0000270']['annotations']] == ['HammerThrow'] * 29
  k = [v['video_id'] for v in m['videos']['test']].index('video_test_0000270')
  index = shards.RecordIndex(manifest_lib.shard_paths(str(tmp_path / 'out'), m, 'test'))
  assert not shards.decode_numpy(index.read(k))['labels'].any()  # Empty labels_all.
