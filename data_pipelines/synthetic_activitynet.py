"""The ActivityNet v1.3 plan of the synthetic benchmark: the real videos, durations and segments.

  python -m launch.synthetic --dataset activitynet13 --scale small --format acmnet --out DIR

The plan comes from the real v1.3 annotations shipped in `annotations/activitynet13/` (BSN's copy:
9,649 training and 4,728 validation videos, 200 classes; see the README there). 'training' becomes
the train split and 'validation' the test split (ISSF evaluates on validation), video ids lose
BSN's `v_` prefix (the official ground truth has none), and every real quirk is kept: zero-length
segments, segments ending after the video, the few two-class videos. Features are rendered from the
plan by `synthetic_features.render` at T = floor(duration * 25 / 16), the snippet count of the
released I3D features (ActivityNet actions are long: a segment covers 43 % of its video on average,
so the rendered action cores and contexts fill most of a video).

Scales (train / test videos; `synthetic.py` picks these when dataset='activitynet13'):
  tiny   D = 64,   12 classes x (4 + 2) videos = 48 / 24, durations x 1/4 (tests, seconds)
  small  D = 256,  200 classes x (4 + 2) videos = 800 / 400, real durations (the benchmark)
  full   D = 2048, every video: 9,649 / 4,728, real durations (~21 GB of float32 features)
tiny and small are class-stratified: for each class (tiny: 12 classes drawn by the seed), the first
videos of a seeded permutation among those whose first segment has that class.
"""

import csv
import dataclasses
import gzip
import io
import json
import os

import numpy as np

from data_pipelines import class_names, source

ANNOTATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'annotations',
                               'activitynet13')  # fmt: skip
ANNOTATIONS_FILE = 'anet_anno_action.json.gz'
VIDEO_INFO_FILE = 'video_info_new.csv.gz'
CLASSES_FILE = 'action_name.csv'
WTALC_NAME = 'ActivityNet1.3'  # W-TALC's `ActivityNet1.3-I3D-JOINTFeatures.npy`.
RAW_SUBSET = {'train': 'training', 'test': 'validation'}


@dataclasses.dataclass(frozen=True)
class Scale:
  feature_dim: int
  num_classes_drawn: int | None  # None: all 200.
  train_per_class: int | None  # None: every video of the subset.
  test_per_class: int | None
  time_scale: float  # Durations and segments are multiplied by this.


SCALES = {
  'tiny': Scale(64, 12, 4, 2, 0.25),
  'small': Scale(256, None, 4, 2, 1.0),
  'full': Scale(2048, None, None, None, 1.0),
}


def _open_text(path: str):
  if path.endswith('.gz'):
    return io.TextIOWrapper(gzip.open(path, 'rb'), encoding='utf-8')
  return open(path, encoding='utf-8')


def load_annotations(ann_dir: str = ANNOTATIONS_DIR) -> tuple[list[source.VideoEntry], tuple]:
  """Every annotated training / validation video of the shipped annotations, in file order.

  Returns:
    (entries, classes): VideoEntry per video (subset 'train' for BSN 'training', 'test' for
    'validation'; 'testing' videos have no labels and are left out) and the 200 class names in
    `class_names.ACTIVITYNET13` order.

  Raises:
    DataValidationError: the class file and the label set disagree with ACTIVITYNET13.
  """
  classes = class_names.ACTIVITYNET13
  with _open_text(os.path.join(ann_dir, CLASSES_FILE)) as f:
    names = [row[0] for row in csv.reader(f)][1:]
  if sorted(names) != list(classes):
    raise source.DataValidationError(f'{CLASSES_FILE} in {ann_dir} is not the v1.3 class list')
  with _open_text(os.path.join(ann_dir, VIDEO_INFO_FILE)) as f:
    subsets = {row['video']: row['subset'] for row in csv.DictReader(f)}
  with _open_text(os.path.join(ann_dir, ANNOTATIONS_FILE)) as f:
    database = json.load(f)
  index = {c: i for i, c in enumerate(classes)}
  entries = []
  for key, info in database.items():
    subset = {'training': 'train', 'validation': 'test'}.get(subsets.get(key, ''))
    if subset is None or not info['annotations']:
      continue
    segments = tuple((float(a['segment'][0]), float(a['segment'][1]), a['label'])
                     for a in info['annotations'])  # fmt: skip
    source.check_labels([lab for _, _, lab in segments], classes, key, ANNOTATIONS_FILE)
    labels = tuple(sorted({lab for _, _, lab in segments}, key=index.__getitem__))
    video_id = key[2:] if key.startswith('v_') else key
    entries.append(
      source.VideoEntry(video_id, subset, float(info['duration_second']), labels, segments)
    )
  return entries, classes


def stratified_subset(
  entries: list[source.VideoEntry], classes, scale: Scale, seed: int
) -> list[source.VideoEntry]:
  """Per class, the first `*_per_class` videos of a seeded permutation (module docstring).

  A video belongs to the class of its first segment, so it is drawn at most once. Returns the
  chosen videos train first, each subset in annotation-file order.
  """
  if scale.train_per_class is None:
    return [v for v in entries if v.subset == 'train'] + [v for v in entries if v.subset == 'test']
  rng = np.random.default_rng([seed, 7])
  drawn = range(len(classes))
  if scale.num_classes_drawn is not None:
    drawn = sorted(rng.choice(len(classes), scale.num_classes_drawn, replace=False).tolist())
  chosen = set()
  for subset, per_class in (('train', scale.train_per_class), ('test', scale.test_per_class)):
    pool = [i for i, v in enumerate(entries) if v.subset == subset]
    order = [pool[j] for j in rng.permutation(len(pool))]
    taken = dict.fromkeys((classes[c] for c in drawn), 0)
    for i in order:
      first = entries[i].segments[0][2]
      if first in taken and taken[first] < per_class:
        taken[first] += 1
        chosen.add(i)
  picked = [entries[i] for i in sorted(chosen)]
  return [v for v in picked if v.subset == 'train'] + [v for v in picked if v.subset == 'test']


def rescale(entry: source.VideoEntry, factor: float) -> source.VideoEntry:
  """Durations and segments times `factor` (2 decimals, like the annotations' durations)."""
  if factor == 1.0:
    return entry
  segments = tuple(
    (round(s * factor, 2), round(e * factor, 2), lab) for s, e, lab in entry.segments
  )
  return dataclasses.replace(entry, duration=round(entry.duration * factor, 2), segments=segments)


def plan(scale: Scale, seed: int, ann_dir: str = ANNOTATIONS_DIR):
  """(entries, raw subset strings 'training' / 'validation', the 200 classes) of one scale."""
  entries, classes = load_annotations(ann_dir)
  entries = [rescale(v, scale.time_scale) for v in stratified_subset(entries, classes, scale, seed)]
  return entries, [RAW_SUBSET[v.subset] for v in entries], classes
