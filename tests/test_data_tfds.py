"""The TFDS builders: tfds.load over W-TALC files in manual_dir, offline."""

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from data_pipelines import class_names, synthetic, tfds_builders, wtalc  # noqa: E402


def test_builders_are_registered():
  assert {'issf_thumos14', 'issf_activitynet13'} <= set(tfds.list_builders())
  assert tfds_builders.IssfActivitynet13.CLASS_NAMES == class_names.ACTIVITYNET13


def test_load_synthetic_offline(tmp_path):
  manual = synthetic.generate(str(tmp_path / 'manual'), scale='tiny', seed=2, layout='rskp')
  source = wtalc.read_wtalc(manual)
  expected = {v.video_id: (i, v) for i, v in enumerate(source.videos)}
  config = tfds.download.DownloadConfig(manual_dir=manual)
  splits, info = tfds.load(
    'issf_thumos14/synthetic_tiny',
    split=['train', 'test'],
    data_dir=str(tmp_path / 'data'),
    download_and_prepare_kwargs={'download_config': config},
    with_info=True,
  )
  assert info.splits['train'].num_examples == 24 and info.splits['test'].num_examples == 16
  label_names = info.features['labels'].feature.names
  assert tuple(label_names) == class_names.THUMOS14
  seen = set()
  for subset, ds in zip(('train', 'test'), splits, strict=True):
    for ex in tfds.as_numpy(ds):
      video_id = ex['video_id'].decode()
      i, v = expected[video_id]
      seen.add(video_id)
      assert v.subset == subset
      np.testing.assert_array_equal(ex['features'], source.load_features(i))
      assert ex['num_snippets'] == ex['features'].shape[0]
      assert [label_names[k] for k in ex['labels']] == list(v.labels)
      np.testing.assert_array_equal(ex['labels_multi_hot'], source.multi_hot(v))
      got = ex['segments']
      np.testing.assert_allclose(got['segment'], [(s, e) for s, e, _ in v.segments], rtol=1e-6)
      assert [label_names[k] for k in got['label']] == [lab for _, _, lab in v.segments]
  assert seen == set(expected)


def test_custom_width_config(tmp_path):
  manual = synthetic.generate(
    str(tmp_path / 'manual'), scale='tiny', feature_dim=12, num_train=3, num_test=2
  )
  config = tfds_builders.WtalcConfig(name='d12', feature_dim=12)
  builder = tfds_builders.IssfThumos14(config=config, data_dir=str(tmp_path / 'data'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  (ex,) = tfds.as_numpy(builder.as_dataset(split='test').take(1))
  assert ex['features'].shape[1] == 12
