"""Reader and writer of the W-TALC format (THUMOS14-reduced, ActivityNet 1.3 repackagings).

One `<Name>-I3D-JOINTFeatures.npy` object array (element i: [T_i, D], RGB half then flow half) plus
annotation arrays aligned by index (docs/design.md §6.1): classlist, videoname, subset, duration,
labels_all, labels, segments, and an optional Ambiguous_test.txt. Two layouts exist in the wild,
both accepted:

  W-TALC release:  DIR/<Name>-I3D-JOINTFeatures.npy + DIR/<Name>-Annotations/*.npy
  RSKP:            DIR/<Name>-I3D-JOINTFeatures.npy + DIR/*.npy  (annotations beside the features)

A features element that is None (or an empty 1-D array), or absent because the array is shorter than
the annotations, marks a video without features: it is listed as missing, not fatal. A [0, D]
element is an error (T = 0).
"""

import os
from collections.abc import Sequence

import numpy as np

from data_pipelines import source
from issf_common import errors, paths

FEATURES_SUFFIX = '-I3D-JOINTFeatures.npy'
ANNOTATION_FILES = (
  'classlist.npy',
  'videoname.npy',
  'subset.npy',
  'duration.npy',
  'labels_all.npy',
  'labels.npy',
  'segments.npy',
)
AMBIGUOUS_FILE = 'Ambiguous_test.txt'
# Real annotation folders shipped with the package, W-TALC arrays in
# `data_pipelines/annotations/<name>/` (where each file came from: the folder's README.md).
PACKAGED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'annotations')


def _load(path: str):
  """A released .npy (arrays of strings or of per-video arrays, which numpy stores pickled)."""
  import pickle

  try:
    return paths.load_npy(path, allow_pickle=True, encoding='bytes')
  except (EOFError, ValueError, OSError, pickle.UnpicklingError) as err:  # empty, cut short
    reason = str(err).split('\n')[0] or type(err).__name__
    raise source.DataValidationError(
      f'{path}: cannot be read as .npy ({reason}; empty or truncated?)'
    ) from None


def locate(src: str, name: str | None = None) -> tuple[str, str, str]:
  """Finds (name, features_path, annotations_dir) under `src` (a folder or a URL) in either
  layout.

  Raises:
    FileNotFoundError: listing what was looked for.
  """
  src = paths.absolute(src)
  if name is None:
    found = paths.glob(src, '*' + FEATURES_SUFFIX)
    if len(found) != 1:
      raise errors.MissingFileError(
        f'expected exactly one *{FEATURES_SUFFIX} in {src}, found {len(found)}: '
        f'{[paths.path(f).name for f in found]} (pass name= to choose)'
      )
    name = paths.path(found[0]).name[: -len(FEATURES_SUFFIX)]
  features_path = paths.join(src, name + FEATURES_SUFFIX)
  if not paths.is_file(features_path):
    raise errors.MissingFileError(f'features file {features_path} not found')
  for ann_dir in (paths.join(src, name + '-Annotations'), src):  # W-TALC layout, then RSKP.
    if paths.is_file(paths.join(ann_dir, 'classlist.npy')):
      return name, features_path, ann_dir
  raise errors.MissingFileError(
    f'no W-TALC annotations for {name!r}: looked for classlist.npy in '
    f'{paths.join(src, name + "-Annotations")} (W-TALC layout) and in {src} (RSKP layout)'
  )


def packaged_annotations(name: str) -> str:
  """The folder of a real annotation set shipped with the package, e.g. 'thumos14'.

  Raises:
    FileNotFoundError: no such set (or an install without the package data).
  """
  path = os.path.join(PACKAGED_DIR, name)
  if not os.path.isfile(os.path.join(path, 'classlist.npy')):
    raise FileNotFoundError(f'no packaged W-TALC annotations {name!r}: {path} has no classlist.npy')
  return path


def read_annotations(ann_dir: str) -> dict:
  """Loads the annotation arrays of one W-TALC package, strings decoded.

  Returns:
    dict with classes [C] str, videoname [N] str, subset [N] str (raw), duration [N] float,
    labels_all [N] list[str], labels [N] list[str], segments [N] list[(s, e)], ambiguous
    {video: [(s, e)]} (empty without Ambiguous_test.txt), and paths {key: file}.
  """
  files = {f[: -len('.npy')]: paths.join(ann_dir, f) for f in ANNOTATION_FILES}
  for key, path in files.items():
    if not paths.is_file(path):
      raise errors.MissingFileError(f'W-TALC annotation file {path} not found ({key})')
  a = {key: _load(path) for key, path in files.items()}
  n = len(a['videoname'])
  for key in ('subset', 'duration', 'labels_all', 'labels', 'segments'):
    if len(a[key]) != n:
      raise source.DataValidationError(
        f'{files[key]} has {len(a[key])} entries but videoname.npy has {n}'
      )
  out = {
    'classes': [source.decode(c) for c in a['classlist']],
    'videoname': [source.decode(v) for v in a['videoname']],
    'subset': [source.decode(s) for s in a['subset']],
    'duration': [float(np.asarray(d).reshape(-1)[0]) for d in a['duration']],
    'labels_all': [[source.decode(x) for x in row] for row in a['labels_all']],
    'labels': [[source.decode(x) for x in row] for row in a['labels']],
    'segments': [[(float(s), float(e)) for s, e in row] for row in a['segments']],
    'ambiguous': {},
    'paths': files,
  }
  for i, video in enumerate(out['videoname']):
    if len(out['labels'][i]) != len(out['segments'][i]):
      raise source.DataValidationError(
        f'video {video!r}: {len(out["labels"][i])} labels in {files["labels"]} but '
        f'{len(out["segments"][i])} segments in {files["segments"]}'
      )
  amb_path = paths.join(ann_dir, AMBIGUOUS_FILE)
  if paths.is_file(amb_path):
    files['ambiguous'] = amb_path
    with paths.open_file(amb_path) as f:
      for line in f:
        fields = line.split()  # RSKP's split(' ') breaks on the double space; fields [1], [2].
        if len(fields) >= 3:
          out['ambiguous'].setdefault(fields[0], []).append((float(fields[1]), float(fields[2])))
  return out


def _is_missing(x) -> bool:
  return x is None or (isinstance(x, np.ndarray) and x.ndim < 2 and x.size == 0)


def video_entry(ann: dict, i: int, subset: str) -> source.VideoEntry:
  """The `VideoEntry` of annotation row i (training labels, detection segments, ambiguous)."""
  video_id = ann['videoname'][i]
  pairs = zip(ann['segments'][i], ann['labels'][i], strict=True)
  return source.VideoEntry(
    video_id=video_id,
    subset=subset,
    duration=ann['duration'][i],
    labels=tuple(ann['labels_all'][i]),
    segments=tuple((s, e, lab) for (s, e), lab in pairs),
    ambiguous=tuple(ann['ambiguous'].get(video_id, ())),
  )


def read_wtalc(
  src: str,
  *,
  name: str | None = None,
  checks: source.FeatureChecks = source.FeatureChecks(),
) -> source.SourceDataset:
  """Reads a W-TALC package (either layout) into a SourceDataset.

  Args:
    src: the folder holding `<Name>-I3D-JOINTFeatures.npy` (or its URL, `issf_common/paths.py`).
    name: `<Name>`; found by glob when there is exactly one features file.
    checks: the expected D and the T vs duration tolerance (`source.FeatureChecks`).

  Raises:
    UnknownLabelError (at read time), and FeatureWidthError / NonFiniteFeatureError /
    EmptyVideoError from the dataset's `load_features(i)`.
  """
  name, features_path, ann_dir = locate(src, name)
  ann = read_annotations(ann_dir)
  classes = tuple(ann['classes'])
  feats = _load(features_path)
  has_training = any(s.strip().lower() == 'training' for s in ann['subset'])

  positions = []  # each listed video's row in the features file

  def raw_features(k: int):
    return feats[positions[k]], features_path

  dataset = source.SourceDataset(name, 'wtalc', classes, raw_features, paths.absolute(src), checks)
  for i, video_id in enumerate(ann['videoname']):
    source.check_labels(ann['labels_all'][i], classes, video_id, ann['paths']['labels_all'])
    source.check_labels(ann['labels'][i], classes, video_id, ann['paths']['labels'])
    subset = source.normalize_subset(ann['subset'][i], has_training)
    if subset is None:
      dataset.add_skipped(video_id, ann['subset'][i], 'subset')
      continue
    if i >= len(feats) or _is_missing(feats[i]):
      dataset.add_missing(video_id, subset, 'no features')
      continue
    dataset.videos.append(video_entry(ann, i, subset))
    positions.append(i)
  dataset.source_files = [features_path] + sorted(ann['paths'].values())
  return dataset


def write_wtalc(
  out_dir: str,
  name: str,
  classes: Sequence[str],
  videos: Sequence[source.VideoEntry],
  features: Sequence[np.ndarray | None],
  *,
  raw_subsets: Sequence[str] | None = None,
  layout: str = 'wtalc',
) -> str:
  """Writes videos in the W-TALC format, strings as bytes like the THUMOS14 release.

  Args:
    out_dir: created if needed (a folder or a URL).
    name: `<Name>` of `<Name>-I3D-JOINTFeatures.npy`.
    classes: class list.
    videos: entries (their `subset` is written unless raw_subsets is given).
    features: [T_i, D] per video, or None for a video without features.
    raw_subsets: subset strings to write (e.g. 'validation' / 'test' for THUMOS).
    layout: 'wtalc' (annotations in `<Name>-Annotations/`) or 'rskp' (beside the features).

  Returns:
    The features file's path. Ambiguous_test.txt is written when any video has ambiguous segments.
  """
  if layout not in ('wtalc', 'rskp'):
    raise ValueError(f'layout must be wtalc or rskp, got {layout!r}')
  ann_dir = paths.join(out_dir, name + '-Annotations') if layout == 'wtalc' else out_dir
  paths.makedirs(ann_dir)
  n = len(videos)
  enc = lambda s: s.encode('utf-8')
  subsets = list(raw_subsets) if raw_subsets is not None else [v.subset for v in videos]

  def objects(rows) -> np.ndarray:
    arr = np.empty(n, dtype=object)  # Assign one by one so numpy never builds a 2-D array.
    for i, row in enumerate(rows):
      arr[i] = row
    return arr

  arrays = {
    'classlist': np.array([enc(c) for c in classes]),
    'videoname': np.array([enc(v.video_id) for v in videos]),
    'subset': np.array([enc(s) for s in subsets]),
    'duration': np.array([[v.duration] for v in videos], dtype=np.float64),
    'labels_all': objects([[enc(c) for c in v.labels] for v in videos]),
    'labels': objects([[enc(lab) for _, _, lab in v.segments] for v in videos]),
    'segments': objects([[[s, e] for s, e, _ in v.segments] for v in videos]),
  }
  for key, arr in arrays.items():
    paths.save_npy(paths.join(ann_dir, key + '.npy'), arr, allow_pickle=True)
  lines = [f'{v.video_id}  {s:.1f} {e:.1f}\n' for v in videos for s, e in v.ambiguous]
  if lines:
    with paths.open_file(paths.join(ann_dir, AMBIGUOUS_FILE), 'w') as f:
      f.write(''.join(lines))
  feats = objects([None if x is None else np.asarray(x, np.float32) for x in features])
  features_path = paths.join(out_dir, name + FEATURES_SUFFIX)
  paths.save_npy(features_path, feats, allow_pickle=True)
  return features_path
