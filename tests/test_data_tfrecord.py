"""data_pipelines/tfrecord.py and numpy_pipeline.py: without TensorFlow, the bytes and the
batches that TensorFlow makes (this process has TensorFlow, the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import input_pipeline, numpy_pipeline, pipelines, shards, tfrecord
from issf_common.tensorflow_cpu import tf


def test_crc32c_known_values():
  # RFC 3720 B.4 and the check value of CRC-32C.
  assert tfrecord.crc32c(b'123456789') == 0xE3069283
  assert tfrecord.crc32c(bytes(32)) == 0x8A9136AA
  assert tfrecord.crc32c(b'\xff' * 32) == 0x62A8AB43
  assert tfrecord.crc32c(bytes(range(32))) == 0x46DD794E
  assert tfrecord.crc32c(b'') == 0


def test_records_are_tensorflows_bytes(tmp_path):
  rng = np.random.default_rng(0)
  # Lengths around the chunking's edges (< 4 bytes, one chunk, chunk + 1, many chunks).
  records = [rng.bytes(n) for n in (0, 1, 3, 4, 5, 63, 64, 65, 4096, 4097, 300_001)]
  with tf.io.TFRecordWriter(str(tmp_path / 'tf.tfrecord')) as writer:
    for record in records:
      writer.write(record)
  tfrecord.write_records(str(tmp_path / 'ours.tfrecord'), records)
  assert (tmp_path / 'ours.tfrecord').read_bytes() == (tmp_path / 'tf.tfrecord').read_bytes()
  # TensorFlow's reader checks both crcs of every record.
  read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / 'ours.tfrecord'))]
  assert read == records


EXAMPLES = [
  # The padding record: no snippets, index -1 (a 10-byte varint), empty id.
  dict(t=0, d=8, c=20, video_id='', video_index=-1, duration=0.0),
  dict(t=37, d=64, c=20, video_id='video_validation_0000051', video_index=2**40, duration=123.4),
  dict(t=1, d=3, c=3, video_id='vidé✓', video_index=0, duration=float('inf')),
]


def _tf_example(features, labels, *, video_id, video_index, duration, subset, fps=25.0, stride=16):
  """The encoding shards.py had before it was TensorFlow-free (the reference)."""
  f, t, d = tf.train.Feature, *features.shape
  feature = {
    'features': f(bytes_list=tf.train.BytesList(value=[features.astype('<f4').tobytes()])),
    'num_snippets': f(int64_list=tf.train.Int64List(value=[t])),
    'feature_dim': f(int64_list=tf.train.Int64List(value=[d])),
    'labels': f(float_list=tf.train.FloatList(value=labels.tolist())),
    'video_id': f(bytes_list=tf.train.BytesList(value=[video_id.encode('utf-8')])),
    'video_index': f(int64_list=tf.train.Int64List(value=[video_index])),
    'duration': f(float_list=tf.train.FloatList(value=[duration])),
    'fps': f(float_list=tf.train.FloatList(value=[fps])),
    'stride': f(int64_list=tf.train.Int64List(value=[stride])),
    'subset': f(bytes_list=tf.train.BytesList(value=[subset.encode('utf-8')])),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize('case', EXAMPLES, ids=['padding', 'thumos', 'unicode'])
def test_example_is_tensorflows_bytes(case):
  rng = np.random.default_rng(1)
  features = rng.standard_normal((case['t'], case['d'])).astype(np.float32)
  labels = (rng.random(case['c']) > 0.7).astype(np.float32)
  labels[0] = -0.0  # a sign bit that float lists keep
  kwargs = dict(video_id=case['video_id'], video_index=case['video_index'],
                duration=case['duration'], subset='train')  # fmt: skip
  ours = shards.encode_example(features, labels, **kwargs)
  assert ours == _tf_example(features, labels, **kwargs)
  # Decoded without TensorFlow, TensorFlow's parse gives the same values.
  got = shards.decode_numpy(ours)
  want = shards.parse_example(tf.constant(ours), case['d'], case['c'])
  assert got['features'].tobytes() == want['features'].numpy().tobytes()
  assert got['labels'].tobytes() == want['labels'].numpy().tobytes()
  assert got['video_index'] == want['video_index'].numpy() == case['video_index']
  assert got['video_id'] == case['video_id'] and got['num_snippets'] == case['t']
  assert got['duration'] == float(want['duration'].numpy())


def test_decode_reads_unpacked_and_empty_lists():
  example = tf.train.Example()
  feature = example.features.feature
  feature['f'].float_list.value.extend([1.5, -2.0])
  feature['i'].int64_list.value.extend([-5, 7, 2**62])
  feature['b'].bytes_list.value.extend([b'', b'xy'])
  feature['empty'].float_list.SetInParent()
  serialized = example.SerializeToString()
  # Rewrite the packed lists as unpacked fields (valid protobuf that other writers produce).
  unpacked = tfrecord.encode_example({'f': ('float', [1.5, -2.0])}).replace(
    b'\x0a\x08' + np.array([1.5, -2.0], '<f4').tobytes(),
    b'\x0d' + np.float32(1.5).tobytes() + b'\x0d' + np.float32(-2.0).tobytes(),
  )
  decoded = tfrecord.decode_example(serialized)
  assert decoded['f'][0] == 'float' and decoded['f'][1].tolist() == [1.5, -2.0]
  assert decoded['i'] == ('int64', [-5, 7, 2**62])
  assert decoded['b'] == ('bytes', [b'', b'xy'])
  assert decoded['empty'][0] == 'float' and len(decoded['empty'][1]) == 0
  assert tfrecord.decode_example(unpacked)['f'][1].tolist() == [1.5, -2.0]
  assert tf.train.Example.FromString(unpacked).features.feature['f'].float_list.value == [1.5, -2]


def test_select_prefers_tensorflow():
  assert pipelines.select() is input_pipeline
  assert pipelines.select('numpy') is numpy_pipeline
  with pytest.raises(ValueError, match='one of'):
    pipelines.select('torch')


def _bitwise(got: dict, want: dict) -> None:
  assert set(got) == set(want)
  for key in want:
    assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
    assert got[key].tobytes() == want[key].tobytes(), key


TRAIN_OPTIONS = {
  'thumos exact': dict(mode='thumos', bucket_size=16),
  'thumos cropped': dict(mode='thumos', bucket_size=16, max_len=20),
  'thumos micro': dict(mode='thumos', batching='micro', micro_batch_size=2),
  'activitynet': dict(mode='activitynet', t_s=10),
}


@pytest.mark.parametrize('name', list(TRAIN_OPTIONS))
@pytest.mark.parametrize('host', [input_pipeline.Host(0, 1), input_pipeline.Host(1, 2)])
def test_numpy_train_batches_are_tfdata_batches(tiny_shards, name, host):
  options = input_pipeline.BatchingOptions(global_batch_size=4, seed=3, **TRAIN_OPTIONS[name])
  # From the middle of epoch 1: the resume position is honoured alike.
  start = dict(start_epoch=1, start_batch=2, host=host)
  want = input_pipeline.create_train_iterator(str(tiny_shards), options, **start)
  got = numpy_pipeline.create_train_iterator(str(tiny_shards), options, **start)
  for _ in range(8):  # crosses an epoch end (6 steps per epoch)
    a, b = next(got), next(want)
    for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b],
                    strict=True):  # fmt: skip
      _bitwise(x, y)
    assert got.state() == want.state()
  want.close()


@pytest.mark.parametrize('mode', ['thumos', 'activitynet'])
@pytest.mark.parametrize('host', [input_pipeline.Host(0, 1), input_pipeline.Host(1, 2)])
@pytest.mark.parametrize('order', ['manifest', 'length'])
def test_numpy_eval_batches_are_tfdata_batches(tiny_shards, mode, host, order):
  # 16 test videos in batches of 6: the last one has 4 padding rows.
  options = input_pipeline.EvalOptions(6, mode, bucket_size=16, t_s=10)
  for subset in ('test', 'train'):
    kwargs = dict(subset=subset, host=host, order=order)
    want = list(input_pipeline.create_eval_iterator(str(tiny_shards), options, **kwargs))
    got = list(numpy_pipeline.create_eval_iterator(str(tiny_shards), options, **kwargs))
    assert len(got) == len(want) > 1
    for a, b in zip(got, want, strict=True):
      _bitwise(a, b)
    if subset == 'test' and host.count == 1:
      assert want[-1]['valid'].tolist() == [True] * 4 + [False] * 2
    if host.count == 1:  # every video once; by length, shortest first
      index = np.concatenate([b['video_index'][b['valid']] for b in want])
      lengths = input_pipeline.ShardSubset(str(tiny_shards), subset, False).lengths
      assert sorted(index.tolist()) == list(range(len(lengths)))
      if order == 'length':
        assert np.all(np.diff(lengths[index]) >= 0)
      else:
        assert index.tolist() == list(range(len(lengths)))
