"""The reader-independent view of a released dataset, and the checks every reader applies.

A reader (`wtalc.py`, `acmnet.py`) turns files on disk into a `SourceDataset`: one `VideoEntry` of
metadata per annotated video plus a `load_features(i)` callable, so that a converter can stream
videos one at a time (ActivityNet is ~15 GB of float32) and validate each as it is loaded.

Time base (docs/design.md §6.1): I3D features at 25 fps with non-overlapping 16-frame snippets, so
snippet i covers [0.64 i, 0.64 (i+1)) s and a video of d seconds has about floor(d * 25 / 16)
snippets.

Subset names are normalised to 'train' / 'test' (`normalize_subset`):
- THUMOS14 W-TALC packages use 'validation' (the train split) and 'test';
- ActivityNet W-TALC packages use 'training' (train) and 'validation' (test: ISSF evaluates on it);
- so 'training' -> train and 'test' -> test always, and 'validation' -> train unless the package
  also has 'training' videos, in which case 'validation' -> test;
- 'testing' (ActivityNet's held-out split, no public labels) and anything else are skipped.
"""

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from issf_common import errors

FPS = 25.0
STRIDE = 16
SUBSETS = ('train', 'test')


class DataValidationError(errors.InputError, ValueError):
  """A released file is unusable. The message names the video and the file."""


class FeatureWidthError(DataValidationError):
  """Feature matrix is not [T, D] with the expected D."""


class NonFiniteFeatureError(DataValidationError):
  """Feature matrix holds NaN or Inf."""


class EmptyVideoError(DataValidationError):
  """Feature matrix has T = 0 snippets."""


class UnknownLabelError(DataValidationError):
  """A label is not in the class list."""


class ChecksumError(DataValidationError):
  """A file's sha256 disagrees with the manifest."""


class LengthMismatchWarning(UserWarning):
  """T disagrees with floor(duration * 25 / 16) beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """Metadata of one annotated video.

  Attributes:
    video_id: the dataset's name for the video (no file extension).
    subset: 'train' or 'test' (normalised).
    duration: seconds.
    labels: video-level class names (W-TALC `labels_all`): the training target.
    segments: detection ground truth, ((start_s, end_s, class_name), ...) (`labels`/`segments`).
    ambiguous: ((start_s, end_s), ...) from Ambiguous_test.txt, or empty.
  """

  video_id: str
  subset: str
  duration: float
  labels: tuple[str, ...]
  segments: tuple[tuple[float, float, str], ...]
  ambiguous: tuple[tuple[float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class FeatureChecks:
  """What `SourceDataset.load_features` checks beyond [T, D], T > 0 and finiteness.

  Attributes:
    feature_dim: expected D; None takes the first loaded video's width.
    length_abs_tol, length_rel_tol: a video whose T differs from floor(duration * 25 / 16) by
      more than max(length_abs_tol, length_rel_tol * expected) snippets warns
      (LengthMismatchWarning) and is recorded; long videos get slack too.
  """

  feature_dim: int | None = None
  length_abs_tol: int = 2
  length_rel_tol: float = 0.01

  def length_tolerance(self, expected: int) -> float:
    """Allowed |T - expected| snippets."""
    return max(float(self.length_abs_tol), self.length_rel_tol * expected)

  def check_length(self, num_snippets: int, duration: float, video_id: str, path: str):
    """Warns (LengthMismatchWarning) if T disagrees with the duration; the record or None."""
    expected = expected_num_snippets(duration)
    if abs(num_snippets - expected) <= self.length_tolerance(expected):
      return None
    warnings.warn(
      f'video {video_id!r} in {path}: T = {num_snippets} snippets but duration {duration:.3f} s '
      f'gives floor(d*25/16) = {expected}',
      LengthMismatchWarning,
      stacklevel=3,
    )
    return {'video_id': video_id, 'num_snippets': int(num_snippets), 'expected': expected}


@dataclasses.dataclass
class SourceDataset:
  """A released dataset as read from disk (features not loaded yet).

  A reader creates it once it knows the classes, then lists the videos into it (`videos`,
  `add_missing`, `add_skipped`) and the files it read (`source_files`).

  Attributes:
    name: e.g. 'Thumos14reduced'.
    source_format: 'wtalc' or 'acmnet'.
    classes: class names; class index = position.
    raw_features: i -> (array-like [T_i, D], path of the file it came from), unvalidated.
    root: the directory the user pointed at; manifest paths are relative to it.
    checks: what `load_features` checks on each video.
    videos: entries in the package's order, only those with a train/test subset and features.
    source_files: absolute paths of every file read, for the manifest's checksums.
    missing: annotated train/test videos without features: dicts (video_id, subset, reason).
    skipped: videos of other subsets (e.g. 'testing'): dicts (video_id, subset, reason).
    feature_dim: D once the first video is loaded (checks.feature_dim until then).
    length_mismatches: video_id -> record, filled by `load_features` as videos are loaded.
  """

  name: str
  source_format: str
  classes: tuple[str, ...]
  raw_features: Callable[[int], tuple[object, str]]
  root: str
  checks: FeatureChecks = FeatureChecks()
  videos: list[VideoEntry] = dataclasses.field(default_factory=list)
  source_files: list[str] = dataclasses.field(default_factory=list)
  missing: list[dict] = dataclasses.field(default_factory=list)
  skipped: list[dict] = dataclasses.field(default_factory=list)
  feature_dim: int | None = dataclasses.field(init=False)
  length_mismatches: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.feature_dim = self.checks.feature_dim

  def add_missing(self, video_id: str, subset: str, reason: str) -> None:
    """An annotated train/test video that cannot be converted (no features)."""
    self.missing.append({'video_id': video_id, 'subset': subset, 'reason': reason})

  def add_skipped(self, video_id: str, subset, reason: str) -> None:
    """A video left out on purpose (another subset, no labels)."""
    self.skipped.append({'video_id': video_id, 'subset': subset, 'reason': reason})

  def load_features(self, i: int) -> np.ndarray:
    """Validated float32 [T_i, D] of videos[i]; warns on a T vs duration mismatch."""
    entry = self.videos[i]
    raw, path = self.raw_features(i)
    x = validate_features(raw, entry.video_id, path, self.feature_dim)
    self.feature_dim = x.shape[1]  # Every later video must match the first one's width.
    record = self.checks.check_length(x.shape[0], entry.duration, entry.video_id, path)
    if record is not None:
      self.length_mismatches[entry.video_id] = record
    return x

  def multi_hot(self, entry: VideoEntry) -> np.ndarray:
    """float32 [C] with 1 at the classes of `entry.labels`."""
    y = np.zeros(len(self.classes), np.float32)
    index = {c: i for i, c in enumerate(self.classes)}
    for label in entry.labels:
      y[index[label]] = 1.0
    return y


def normalize_subset(raw: str, has_training: bool) -> str | None:
  """Maps a package's subset name to 'train' / 'test', or None to skip (module docstring)."""
  raw = raw.strip().lower()
  if raw in ('train', 'training'):
    return 'train'
  if raw == 'test':
    return 'test'
  if raw in ('validation', 'val'):
    return 'test' if has_training else 'train'
  return None


def decode(x) -> str:
  """bytes / numpy bytes / str -> str (W-TALC files loaded with encoding='bytes' hold bytes)."""
  if isinstance(x, bytes | np.bytes_):
    return x.decode('utf-8')
  return str(x)


def expected_num_snippets(duration: float, fps: float = FPS, stride: int = STRIDE) -> int:
  """floor(duration * fps / stride): the snippet count the time base predicts."""
  return int(math.floor(duration * fps / stride))


def check_labels(labels: Sequence[str], classes: Sequence[str], video_id: str, path: str) -> None:
  """Raises UnknownLabelError naming the video and file if a label is not a class."""
  known = set(classes)
  for label in labels:
    if label not in known:
      raise UnknownLabelError(
        f'video {video_id!r} in {path}: label {label!r} is not in the class list '
        f'({len(known)} classes)'
      )


def validate_features(x, video_id: str, path: str, feature_dim: int | None) -> np.ndarray:
  """Checks one video's features and returns them as float32 [T, D].

  Args:
    x: array-like, expected [T, D].
    video_id: for the error message.
    path: the file it came from, for the error message.
    feature_dim: expected D, or None to accept any width.

  Raises:
    FeatureWidthError, EmptyVideoError, NonFiniteFeatureError.
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise FeatureWidthError(
      f'video {video_id!r} in {path}: features have shape {x.shape}, expected [T, D]'
    )
  if feature_dim is not None and x.shape[1] != feature_dim:
    raise FeatureWidthError(
      f'video {video_id!r} in {path}: feature width {x.shape[1]}, expected {feature_dim}'
    )
  if x.shape[0] == 0:
    raise EmptyVideoError(f'video {video_id!r} in {path}: T = 0 snippets')
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    bad = np.argwhere(~np.isfinite(x))[0]
    kind = 'NaN' if np.isnan(x[bad[0], bad[1]]) else 'Inf'
    raise NonFiniteFeatureError(
      f'video {video_id!r} in {path}: {kind} at snippet {bad[0]}, channel {bad[1]}'
    )
  return x
