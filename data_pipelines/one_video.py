"""One video's [T, D] features: a .npy file, or out of a released package or a shard folder.

`issf-predict --features FILE.npy` reads one video's [T, D] array (`load_features`, checked by
`check_features`); `issf-predict --video_id ID` reads a video where the user has it, with no
Python:
  * `from_shards(shards_dir, video_id)`: a folder written by issf-prepare (the run's own by
    default): its record in the subset's shards, with the video's fps and stride;
  * `from_wtalc(features_path, video_id)`: a W-TALC `<Name>-I3D-JOINTFeatures.npy` (an array of
    every video's features, in the order of `<Name>-Annotations/videoname.npy`).
A video id that is not there is an `InputError` naming the file and a few ids that are. Every
path may be local or a URL (`issf_common/paths.py`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import manifest as manifest_lib
from data_pipelines import source, wtalc
from issf_common import errors, paths

NPY_MAGIC = b'\x93NUMPY'


@dataclasses.dataclass(frozen=True)
class Video:
  features: np.ndarray  # [T, D]
  subset: str | None
  fps: float | None  # None: unknown (the command's --fps)
  stride: int | None


def _unknown(video_id: str, where: str, ids: list[str]) -> errors.InputError:
  some = ', '.join(ids[:3]) + (', ...' if len(ids) > 3 else '')
  return errors.InputError(f'--video_id {video_id}: not in {where} ({len(ids)} videos: {some})')


def from_shards(shards_dir: str, video_id: str) -> Video:
  """The record of `video_id` in the shard folder (any subset), checked against the manifest."""
  manifest = manifest_lib.load_manifest(shards_dir)
  every = []
  for subset, videos in manifest['videos'].items():
    ids = [v['video_id'] for v in videos]
    every += ids
    if video_id not in ids:
      continue
    manifest_lib.verify_shards(shards_dir, manifest, subset)
    from data_pipelines import shards as shards_lib  # TensorFlow (to decode), once it is needed

    index = shards_lib.RecordIndex(manifest_lib.shard_paths(shards_dir, manifest, subset))
    record = shards_lib.decode_numpy(index.read(ids.index(video_id)))
    if record['video_id'] != video_id:  # the records are written in the manifest's order
      raise source.DataValidationError(
        f'{shards_dir}: record {ids.index(video_id)} of {subset!r} is {record["video_id"]}, '
        f'the manifest lists {video_id} (rerun issf-prepare)'
      )
    entry = videos[ids.index(video_id)]
    return Video(np.array(record['features']), subset, entry.get('fps'), entry.get('stride'))
  raise _unknown(video_id, f'{shards_dir}', every)


def check_features(x, where: str, feature_dim: int):
  """`x` as float32 [T, D], or an InputError naming `where` (shape, dtype, NaN/Inf)."""
  if x.dtype.kind not in 'fiu':  # bool, complex, strings, objects
    raise errors.InputError(f'{where}: features must be real numbers, got dtype {x.dtype}')
  if x.ndim != 2 or x.shape[1] != feature_dim or x.shape[0] == 0:
    raise errors.InputError(f'{where}: features must be [T>0, {feature_dim}], got {list(x.shape)}')
  if not np.isfinite(x).all():
    raise errors.InputError(f'{where}: features contain NaN or Inf')
  return x.astype(np.float32)


def load_features(path: str, feature_dim: int):
  """One video's [T, D] features from a .npy file, checked (`check_features`)."""
  where = f'features file {path}'
  try:
    with paths.open_file(path, 'rb') as f:
      head = f.read(len(NPY_MAGIC))
  except FileNotFoundError:
    raise errors.MissingFileError(f'{where}: not found') from None
  except OSError as e:  # a folder, no permission
    raise errors.InputError(f'{where}: cannot be read ({e.strerror or e})') from None
  if head.startswith(b'PK'):
    raise errors.InputError(f"{where}: an .npz archive; give one video's [T, D] .npy")
  if head != NPY_MAGIC:
    what = 'empty' if not head else 'not a .npy file'
    raise errors.InputError(f"{where}: {what} (expected one video's [T, D] .npy)")
  try:
    x = paths.load_npy(path, allow_pickle=False)
  except ValueError as e:
    if 'allow_pickle' in str(e):  # an object array: e.g. every video of a W-TALC release
      raise errors.InputError(
        f'{where}: holds Python objects, not one [T, D] array (a W-TALC features file of every '
        'video? add --video_id)'
      ) from None
    raise errors.InputError(f'{where}: cannot be read as .npy ({e})') from None
  except (OSError, EOFError) as e:
    raise errors.InputError(f'{where}: cannot be read as .npy (truncated? {e})') from None
  return check_features(x, where, feature_dim)


def is_wtalc_features(path: str) -> bool:
  return paths.path(path).name.endswith(wtalc.FEATURES_SUFFIX)


def from_wtalc(features_path: str, video_id: str) -> Video:
  """`video_id`'s row of a released W-TALC features file, found by its annotations folder."""
  features = paths.path(paths.absolute(features_path))
  folder, name = os.fspath(features.parent), features.name[: -len(wtalc.FEATURES_SUFFIX)]
  _, _, ann_dir = wtalc.locate(folder, name)
  ann = wtalc.read_annotations(ann_dir)
  if video_id not in ann['videoname']:
    raise _unknown(video_id, ann['paths']['videoname'], ann['videoname'])
  i = ann['videoname'].index(video_id)
  try:  # the released file is an array of arrays, which numpy stores pickled
    every = paths.load_npy(features_path, allow_pickle=True, encoding='bytes')
  except (OSError, ValueError, EOFError) as err:
    raise errors.InputError(f'features file {features_path}: cannot be read ({err})') from None
  if len(every) != len(ann['videoname']):
    raise source.DataValidationError(
      f'{features_path} holds {len(every)} videos, {ann["paths"]["videoname"]} lists '
      f'{len(ann["videoname"])}'
    )
  return Video(np.asarray(every[i]), ann['subset'][i], None, None)
