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

TensorFlow is not needed to write or read them: the Example encoding and the TFRecord framing
are `tfrecord.py`'s (the same bytes; TensorFlow's C++ writer is used where it is installed, for
speed). Only `feature_spec` / `parse_example`, the tf.data graph's decode, import TensorFlow.
"""

import os
from collections.abc import Callable, Iterable

import numpy as np

from data_pipelines import manifest as manifest_lib
from data_pipelines import tfrecord
from issf_common import paths, tensorflow_optional


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
  # As tf.train.Example(...).SerializeToString(deterministic=True): map entries sorted by key,
  # so a rerun writes the same bytes.
  return tfrecord.encode_example(
    {
      'features': ('bytes', [features.tobytes()]),
      'num_snippets': ('int64', [t]),
      'feature_dim': ('int64', [d]),
      'labels': ('float', np.asarray(labels, np.float32)),
      'video_id': ('bytes', [video_id.encode('utf-8')]),
      'video_index': ('int64', [video_index]),
      'duration': ('float', [duration]),
      'fps': ('float', [fps]),
      'stride': ('int64', [stride]),
      'subset': ('bytes', [subset.encode('utf-8')]),
    }
  )


def feature_spec(num_classes: int) -> dict:
  from issf_common.tensorflow_cpu import tf

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
  from issf_common.tensorflow_cpu import tf

  ex = tf.io.parse_single_example(serialized, feature_spec(num_classes))
  x = tf.io.decode_raw(ex['features'], tf.float32, little_endian=True)
  ex['features'] = tf.reshape(x, [-1, feature_dim])
  return ex


def decode_numpy(serialized: bytes) -> dict:
  """Pure-numpy decode of one Example: features as float32 [T, D] (read-only, over a copy of
  the record's bytes), labels float32 [C] and the scalar fields. No TensorFlow."""
  ex = {name: values for name, (_, values) in tfrecord.decode_example(serialized).items()}
  t, d = ex['num_snippets'][0], ex['feature_dim'][0]
  return {
    'features': np.frombuffer(ex['features'][0], '<f4').reshape(t, d),
    'labels': np.asarray(ex['labels'], np.float32),
    'video_id': ex['video_id'][0].decode('utf-8'),
    'video_index': ex['video_index'][0],
    'num_snippets': t,
    'duration': float(ex['duration'][0]),
    'subset': ex['subset'][0].decode('utf-8'),
  }


def _write_records(path: str, records) -> None:
  """TensorFlow's TFRecordWriter where it is installed, else `tfrecord` (the same bytes)."""
  tf = tensorflow_optional.tensorflow()
  if tf is None:
    tfrecord.write_records(path, records)
    return
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


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
    path = paths.join(out_dir, name)
    tmp = path + manifest_lib.PARTIAL_SUFFIX
    try:
      _write_records(tmp, (make_example(i) for i in range(bounds[k], bounds[k + 1])))
      paths.path(tmp).replace(path)
    finally:
      if paths.exists(tmp):
        paths.path(tmp).unlink()
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
    if paths.is_url(path):  # no pread there: seek, then read (gs:// reads a byte range)
      with paths.path(path).open('rb') as f:
        f.seek(offset)
        data = f.read(length)
      if len(data) != length:
        raise ValueError(f'{path}: unexpected end of file at byte {offset + len(data)}')
      return data
    with open(path, 'rb') as f:
      chunks, done = [], 0
      while done < length:  # pread may return less than asked for on some systems.
        chunk = os.pread(f.fileno(), length - done, offset + done)
        if not chunk:
          raise ValueError(f'{path}: unexpected end of file at byte {offset + done}')
        chunks.append(chunk)
        done += len(chunk)
      return b''.join(chunks)
