"""Reader and writer of the ACM-Net format (docs/design.md §6.2; ispc-lab/ACM-Net, ASM-Loc).

  DIR/gt.json                 {"database": {video_id: {"subset", "duration", "annotations": [
                                {"segment": [s, e], "label": name}, ...]}}}
  DIR/split_train.txt         one video id per line (the videos whose features exist)
  DIR/split_test.txt
  DIR/train/<video_id>.npy    float [T, D] (RGB half then flow half)
  DIR/test/<video_id>.npy

The split files decide the subset (train / test), as in ACM-Net's loader; gt.json's own subset
field is only used to place annotated videos that no split lists (reported as missing). Video labels
are the multi-hot of all annotation labels (there is no separate labels_all). Annotations labelled
'Ambiguous' (THUMOS packagings) become ambiguous segments, not a class.
"""

import json
from collections.abc import Sequence

import numpy as np

from data_pipelines import source
from issf_common import errors, paths

AMBIGUOUS_LABEL = 'Ambiguous'
SPLITS = (('train', 'split_train.txt', 'train'), ('test', 'split_test.txt', 'test'))


def _read_split(path: str) -> list[str]:
  if not paths.is_file(path):
    raise errors.MissingFileError(f'ACM-Net split file {path} not found')
  with paths.open_file(path) as f:
    return [line.strip() for line in f if line.strip()]


def read_acmnet(
  src: str,
  *,
  classes: Sequence[str] | None = None,
  name: str | None = None,
  checks: source.FeatureChecks = source.FeatureChecks(),
) -> source.SourceDataset:
  """Reads an ACM-Net package into a SourceDataset.

  Args:
    src: the folder holding gt.json, the split files and train/ test/ (or its URL,
      `issf_common/paths.py`).
    classes: class list; default the sorted set of annotation labels of the listed videos
      (ACM-Net and ASM-Loc hard-code exactly that alphabetical order).
    name: dataset name for the manifest; default the folder's name.
    checks: the expected D and the T vs duration tolerance (`source.FeatureChecks`).
  """
  src = paths.absolute(src)
  gt_path = paths.join(src, 'gt.json')
  if not paths.is_file(gt_path):
    raise errors.MissingFileError(f'ACM-Net ground truth {gt_path} not found')
  database = json.loads(paths.read_text(gt_path))['database']
  splits = {subset: _read_split(paths.join(src, fname)) for subset, fname, _ in SPLITS}
  split_paths = [paths.join(src, fname) for _, fname, _ in SPLITS]
  listed = {v for vids in splits.values() for v in vids}

  if classes is None:
    labels = {
      a['label']
      for v in listed
      if v in database
      for a in database[v].get('annotations', [])
      if a['label'] != AMBIGUOUS_LABEL
    }
    classes = sorted(labels)
  classes = tuple(classes)
  class_index = {c: i for i, c in enumerate(classes)}

  feature_paths = []  # the features file of each listed video

  def raw_features(k: int):
    return paths.load_npy(feature_paths[k]), feature_paths[k]

  name = name or paths.path(src).name
  dataset = source.SourceDataset(name, 'acmnet', classes, raw_features, src, checks)
  for subset, fname, folder in SPLITS:
    for video_id in splits[subset]:
      if video_id not in database:
        raise source.DataValidationError(
          f'video {video_id!r} listed in {paths.join(src, fname)} has no entry in {gt_path}'
        )
      info = database[video_id]
      segments, ambiguous = [], []
      for a in info.get('annotations', []):
        s, e = (float(t) for t in a['segment'])
        if a['label'] == AMBIGUOUS_LABEL:
          ambiguous.append((s, e))
        else:
          segments.append((s, e, a['label']))
      source.check_labels([lab for _, _, lab in segments], classes, video_id, gt_path)
      labels = tuple(sorted({lab for _, _, lab in segments}, key=class_index.__getitem__))
      feature_path = paths.join(src, folder, video_id + '.npy')
      if not paths.is_file(feature_path):
        dataset.add_missing(video_id, subset, 'no features file')
        continue
      if 'duration' not in info:
        raise source.DataValidationError(f'video {video_id!r} in {gt_path}: no duration')
      dataset.videos.append(
        source.VideoEntry(
          video_id=video_id,
          subset=subset,
          duration=float(info['duration']),
          labels=labels,
          segments=tuple(segments),
          ambiguous=tuple(ambiguous),
        )
      )
      feature_paths.append(feature_path)

  has_training = any(str(v.get('subset', '')).lower() == 'training' for v in database.values())
  for video_id in sorted(set(database) - listed):
    info = database[video_id]
    subset = source.normalize_subset(str(info.get('subset', '')), has_training)
    if info.get('annotations') and subset is not None:
      dataset.add_missing(video_id, subset, 'not in split files')
    else:
      dataset.add_skipped(video_id, info.get('subset'), 'unlabelled')

  dataset.source_files = [gt_path] + split_paths + feature_paths
  return dataset


def write_acmnet(
  out_dir: str,
  videos: Sequence[source.VideoEntry],
  features: Sequence[np.ndarray | None],
  *,
  raw_subsets: Sequence[str] | None = None,
) -> None:
  """Writes videos in the ACM-Net layout (None features: listed in the split, no .npy file).

  raw_subsets: gt.json's subset strings (e.g. ActivityNet's 'training' / 'validation'); default
  each video's normalised subset. The split files always follow `VideoEntry.subset`.
  """
  database = {}
  subsets = list(raw_subsets) if raw_subsets is not None else [v.subset for v in videos]
  for v, raw in zip(videos, subsets, strict=True):
    annotations = [{'segment': [s, e], 'label': lab} for s, e, lab in v.segments]
    annotations += [{'segment': [s, e], 'label': AMBIGUOUS_LABEL} for s, e in v.ambiguous]
    database[v.video_id] = {'subset': raw, 'duration': v.duration, 'annotations': annotations}
  paths.makedirs(out_dir)
  with paths.open_file(paths.join(out_dir, 'gt.json'), 'w') as f:
    json.dump({'version': 'issf-jax synthetic', 'database': database}, f)
  for subset, fname, folder in SPLITS:
    paths.makedirs(paths.join(out_dir, folder))
    with paths.open_file(paths.join(out_dir, fname), 'w') as f:
      f.write(''.join(v.video_id + '\n' for v in videos if v.subset == subset))
  for v, x in zip(videos, features, strict=True):
    if x is not None:
      paths.save_npy(paths.join(out_dir, v.subset, v.video_id + '.npy'), np.asarray(x, np.float32))
