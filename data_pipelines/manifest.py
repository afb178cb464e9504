"""The shard directory's metadata: manifest.json, ground_truth.json, checksums, atomic writes.

No TensorFlow here, so the evaluator can read the ground truth and the video table cheaply.

A shard directory (written by `prepare.py`):
  train-00000-of-00004.tfrecord ...   one tf.train.Example per video, in the `videos` table order
  test-00000-of-00005.tfrecord ...
  ground_truth.json                   ActivityNet format, detection labels (see `ground_truth`)
  manifest.json                       written last: its presence marks a complete conversion

manifest.json keys: format_version, name, source_format, classes, num_classes, feature_dim, fps,
stride, subset_rule, counts {subset: n}, shards {subset: [{file, num_examples, sha256}]},
ground_truth {file, sha256}, source_files [{path, sha256, bytes}], missing_videos, skipped_videos,
length_mismatches, videos {subset: [{video_id, num_snippets, duration, fps, stride}]}.
"""

import hashlib
import json
import os
import re
import struct

from data_pipelines import source
from issf_common import errors, paths

MANIFEST = 'manifest.json'
GROUND_TRUTH = 'ground_truth.json'
FORMAT_VERSION = 1
SHARD_RE = re.compile(r'^(train|test)-\d{5}-of-\d{5}\.tfrecord$')
PARTIAL_SUFFIX = paths.PARTIAL_SUFFIX
ChecksumError = source.ChecksumError


def shard_name(subset: str, index: int, count: int) -> str:
  return f'{subset}-{index:05d}-of-{count:05d}.tfrecord'


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with paths.path(path).open('rb') as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def json_bytes(obj) -> bytes:
  """Deterministic JSON (insertion order, fixed separators): same input -> same bytes."""
  return (json.dumps(obj, indent=1, ensure_ascii=False) + '\n').encode('utf-8')


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes to `path + .partial`, then renames: readers see the old file or the new one."""
  paths.write_atomic(path, data)


def ground_truth(dataset: source.SourceDataset) -> dict:
  """ActivityNet-format ground truth of the videos that have features.

  Returns:
    {"version": "issf-jax", "taxonomy": [class names], "database": {video_id: {"subset":
    "train"|"test", "duration": s, "annotations": [{"segment": [s, e], "label": name}],
    "ambiguous": [[s, e]]}}} from the DETECTION labels (W-TALC labels.npy / segments.npy), not
    the video-level labels. The taxonomy is the dataset's class list, so the official protocol
    skips (with a warning) predictions of a class that has no GT in the scored subset instead of
    rejecting the model's own predictions file.
  """
  database = {}
  for v in dataset.videos:
    database[v.video_id] = {
      'subset': v.subset,
      'duration': v.duration,
      'annotations': [{'segment': [s, e], 'label': lab} for s, e, lab in v.segments],
      'ambiguous': [[s, e] for s, e in v.ambiguous],
    }
  return {'version': 'issf-jax', 'taxonomy': list(dataset.classes), 'database': database}


def load_manifest(shards_dir: str) -> dict:
  """Reads manifest.json; a directory without one is an incomplete or failed conversion."""
  path = paths.join(shards_dir, MANIFEST)
  if not paths.is_file(path):
    raise errors.MissingFileError(
      f'{path} not found: {shards_dir} is not a complete shard directory (run `issf-prepare`)'
    )
  try:
    manifest = json.loads(paths.read_text(path))
  except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
    raise source.DataValidationError(
      f'{path}: cannot be read as JSON ({err}); rerun issf-prepare'
    ) from None
  if not isinstance(manifest, dict) or manifest.get('format_version') != FORMAT_VERSION:
    manifest = manifest if isinstance(manifest, dict) else {}
    raise source.DataValidationError(
      f'{path}: format_version {manifest.get("format_version")}, expected {FORMAT_VERSION}'
    )
  return manifest


def _check(path: str, expected: str) -> None:
  actual = sha256_file(path)
  if actual != expected:
    raise ChecksumError(
      f'{path}: sha256 {actual} disagrees with the manifest ({expected}); the file was modified '
      'or the conversion was interrupted; rerun issf-prepare'
    )


def load_ground_truth(shards_dir: str, verify: bool = True) -> dict:
  """Reads ground_truth.json (ActivityNet format, see `ground_truth`), checking its sha256."""
  manifest = load_manifest(shards_dir)
  path = paths.join(shards_dir, manifest['ground_truth']['file'])
  if verify:
    _check(path, manifest['ground_truth']['sha256'])
  return json.loads(paths.read_text(path))


def shard_paths(shards_dir: str, manifest: dict, subset: str) -> list[str]:
  if subset not in manifest['shards']:
    raise KeyError(f'subset {subset!r} not in {shards_dir} (has {sorted(manifest["shards"])})')
  return [paths.join(shards_dir, s['file']) for s in manifest['shards'][subset]]


# (path, size, mtime_ns, sha256) of files already verified by this process: an eval every few
# epochs should not re-hash ~1 GB of shards. A modified file gets a new mtime and is re-hashed.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def scan_records(path: str) -> list[tuple[int, int]]:
  """(offset, length) of the data of every record of a TFRecord file, from its framing.

  TFRecord framing: uint64 length, uint32 masked crc of the length, data, uint32 masked crc of
  the data. The sha256 against the manifest guards the bytes, so the crcs are not checked.

  Raises:
    source.DataValidationError: the file ends inside a record (a truncated file).
  """
  out = []
  size = paths.path(path).stat().length
  with paths.path(path).open('rb') as f:
    pos = 0
    while pos < size:
      f.seek(pos)
      header = f.read(12)
      if len(header) == 12:
        (length,) = struct.unpack('<Q', header[:8])
      if len(header) != 12 or pos + 16 + length > size:
        raise source.DataValidationError(
          f'{path}: truncated TFRecord file (record {len(out)} at byte {pos} ends past the '
          f'{size} bytes of the file); rerun issf-prepare'
        )
      out.append((pos + 12, length))
      pos += 16 + length
  return out


def verify_shards(shards_dir: str, manifest: dict, subset: str) -> None:
  """Checks every shard of `subset`: present, its sha256 the manifest's, and its records whole
  and as many as the manifest lists (a file cut short, with the manifest rewritten to match,
  would otherwise fail at the first read of its last video, possibly hours into a run).

  Raises:
    errors.MissingFileError, ChecksumError or source.DataValidationError naming the file.
  """
  for shard in manifest['shards'][subset]:
    path = paths.absolute(paths.join(shards_dir, shard['file']))
    if not paths.is_file(path):
      raise errors.MissingFileError(f'shard {path} listed in the manifest is missing')
    st = paths.path(path).stat()  # epath: length, mtime (seconds; ns locally)
    mtime = os.stat(path).st_mtime_ns if not paths.is_url(path) else st.mtime
    key = (path, st.length, mtime, shard['sha256'])
    if key not in _VERIFIED:
      _check(path, shard['sha256'])
      count = len(scan_records(path))
      if 'num_examples' in shard and count != shard['num_examples']:
        raise source.DataValidationError(
          f'{path}: {count} records, the manifest lists {shard["num_examples"]}; rerun issf-prepare'
        )
      _VERIFIED.add(key)
