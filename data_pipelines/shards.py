"""TFRecord shards: one tf.train.Example per video, written atomically, read by random access.

Example fields (the features are raw little-endian float32 bytes: decoding a 2 MB BytesList is far
cheaper than a FloatList, see docs/design.md §9):
  features      bytes   [T * D * 4]    row-major [T, D]
  num_snippets  int64   T
  feature_dim   int64   D
  labels        float   [C]            multi-hot of the video-level labels (W-TALC labels_all)
  video_id      bytes
  video_index   int64   position in the manifest's table of this subset
  duration      float   seconds
  fps           float   25
  stride        int64   16
  subset        bytes   'train' | 'test'

The input pipeline needs any video of the train table in any order (a global permutation per epoch,
identical on every host), so `RecordIndex` scans the record headers of the shards once and reads a
record with one positioned read.
"""

import os
from collections.abc import Callable, Iterable

import numpy as np

from data_pipelines import manifest as manifest_lib
from issf_common.tensorflow_cpu import tf


def encode_example(
  features: np.ndarray,
  labels: np.ndarray,
  *,
  video_id: str,
  video_index: int,
  duration: float,
  subset: str,
  fps: float = 25.0,
  stride: int = 16,
) -> bytes:
  """Serializes one video (features float32 [T, D], labels float32 [C]) deterministically."""
  features = np.ascontiguousarray(features, dtype='<f4')
  t, d = features.shape
  f = tf.train.Feature
  feature = {
    'features': f(bytes_list=tf.train.BytesList(value=[features.tobytes()])),
    'num_snippets': f(int64_list=tf.train.Int64List(value=[t])),
    'feature_dim': f(int64_list=tf.train.Int64List(value=[d])),
    'labels': f(float_list=tf.train.FloatList(value=np.asarray(labels, np.float32).tolist())),
    'video_id': f(bytes_list=tf.train.BytesList(value=[video_id.encode('utf-8')])),
    'video_index': f(int64_list=tf.train.Int64List(value=[video_index])),
    'duration': f(float_list=tf.train.FloatList(value=[duration])),
    'fps': f(float_list=tf.train.FloatList(value=[fps])),
    'stride': f(int64_list=tf.train.Int64List(value=[stride])),
    'subset': f(bytes_list=tf.train.BytesList(value=[subset.encode('utf-8')])),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  # deterministic=True sorts the map entries, so a rerun writes the same bytes.
  return example.SerializeToString(deterministic=True)


def feature_spec(num_classes: int) -> dict:
  fixed = tf.io.FixedLenFeature
  return {
    'features': fixed([], tf.string),
    'num_snippets': fixed([], tf.int64),
    'feature_dim': fixed([], tf.int64),
    'labels': fixed([num_classes], tf.float32),
    'video_id': fixed([], tf.string),
    'video_index': fixed([], tf.int64),
    'duration': fixed([], tf.float32),
    'fps': fixed([], tf.float32),
    'stride': fixed([], tf.int64),
    'subset': fixed([], tf.string),
  }


def parse_example(serialized, feature_dim: int, num_classes: int) -> dict:
  """TF: serialized Example -> dict with 'features' float32 [T, D] and the scalar fields."""
  ex = tf.io.parse_single_example(serialized, feature_spec(num_classes))
  x = tf.io.decode_raw(ex['features'], tf.float32, little_endian=True)
  ex['features'] = tf.reshape(x, [-1, feature_dim])
  return ex


def decode_numpy(serialized: bytes) -> dict:
  """Pure-numpy decode of one Example (tests and tools): features as float32 [T, D]."""
  ex = tf.train.Example.FromString(serialized).features.feature
  t, d = ex['num_snippets'].int64_list.value[0], ex['feature_dim'].int64_list.value[0]
  return {
    'features': np.frombuffer(ex['features'].bytes_list.value[0], '<f4').reshape(t, d),
    'labels': np.asarray(ex['labels'].float_list.value, np.float32),
    'video_id': ex['video_id'].bytes_list.value[0].decode('utf-8'),
    'video_index': ex['video_index'].int64_list.value[0],
    'num_snippets': t,
    'duration': ex['duration'].float_list.value[0],
    'subset': ex['subset'].bytes_list.value[0].decode('utf-8'),
  }


def write_subset(
  out_dir: str,
  subset: str,
  num_videos: int,
  make_example: Callable[[int], bytes],
  num_shards: int,
) -> list[dict]:
  """Writes videos 0..num_videos-1 of a subset into contiguous shards, each one atomically.

  Shard k holds videos [k*n/N, (k+1)*n/N), so reading the shards in order gives the table order.
  Each shard is written to `<name>.partial` and renamed when complete.

  Returns:
    [{file, num_examples, sha256}] per shard.
  """
  num_shards = max(1, min(num_shards, num_videos)) if num_videos else 0
  bounds = [k * num_videos // max(num_shards, 1) for k in range(num_shards + 1)]
  out = []
  for k in range(num_shards):
    name = manifest_lib.shard_name(subset, k, num_shards)
    path = os.path.join(out_dir, name)
    tmp = path + manifest_lib.PARTIAL_SUFFIX
    try:
      with tf.io.TFRecordWriter(tmp) as writer:
        for i in range(bounds[k], bounds[k + 1]):
          writer.write(make_example(i))
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    out.append(
      {
        'file': name,
        'num_examples': bounds[k + 1] - bounds[k],
        'sha256': manifest_lib.sha256_file(path),
      }
    )
  return out


class RecordIndex:
  """Random access to the records of a list of TFRecord files, in file then record order.

  The framing is read by `manifest_lib.scan_records` (a truncated file is a DataValidationError
  naming it); the files' sha256 (checked against the manifest) guards integrity, so the crcs
  are skipped.
  """

  def __init__(self, paths: Iterable[str]):
    self._locations: list[tuple[str, int, int]] = []
    for path in paths:
      self._locations += [(path, o, n) for o, n in manifest_lib.scan_records(path)]

  def __len__(self) -> int:
    return len(self._locations)

  def read(self, i: int) -> bytes:
    path, offset, length = self._locations[i]
    with open(path, 'rb') as f:
      chunks, done = [], 0
      while done < length:  # pread may return less than asked for on some systems.
        chunk = os.pread(f.fileno(), length - done, offset + done)
        if not chunk:
          raise ValueError(f'{path}: unexpected end of file at byte {offset + done}')
        chunks.append(chunk)
        done += len(chunk)
      return b''.join(chunks)
