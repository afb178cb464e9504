"""One video's [T, D] features, out of a released package or a shard folder, by its id.

`issf-predict --video_id ID` reads a video where the user has it, with no Python:
  * `from_shards(shards_dir, video_id)`: a folder written by issf-prepare (the run's own by
    default): its record in the subset's shards, with the video's fps and stride;
  * `from_wtalc(features_path, video_id)`: a W-TALC `<Name>-I3D-JOINTFeatures.npy` (an array of
    every video's features, in the order of `<Name>-Annotations/videoname.npy`).
A video id that is not there is an `InputError` naming the file and a few ids that are.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import manifest as manifest_lib
from data_pipelines import source, wtalc
from issf_common import errors


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


def is_wtalc_features(path: str) -> bool:
  return os.path.basename(path).endswith(wtalc.FEATURES_SUFFIX)


def from_wtalc(features_path: str, video_id: str) -> Video:
  """`video_id`'s row of a released W-TALC features file, found by its annotations folder."""
  folder = os.path.dirname(os.path.abspath(features_path))
  name = os.path.basename(features_path)[: -len(wtalc.FEATURES_SUFFIX)]
  _, _, ann_dir = wtalc.locate(folder, name)
  ann = wtalc.read_annotations(ann_dir)
  if video_id not in ann['videoname']:
    raise _unknown(video_id, ann['paths']['videoname'], ann['videoname'])
  i = ann['videoname'].index(video_id)
  try:  # the released file is an array of arrays, which numpy stores pickled
    every = np.load(features_path, allow_pickle=True, encoding='bytes')
  except (OSError, ValueError, EOFError) as err:
    raise errors.InputError(f'features file {features_path}: cannot be read ({err})') from None
  if len(every) != len(ann['videoname']):
    raise source.DataValidationError(
      f'{features_path} holds {len(every)} videos, {ann["paths"]["videoname"]} lists '
      f'{len(ann["videoname"])}'
    )
  return Video(np.asarray(every[i]), ann['subset'][i], None, None)
