"""A synthetic, THUMOS14-shaped WTAL benchmark written in the W-TALC format (the embedded default).

  python -m launch.synthetic --out DIR --scale tiny|small|full --seed 0
  python -m launch.synthetic --out DIR --real_annotations thumos14 --feature_dim 256
  python -m launch.synthetic --out DIR --dataset activitynet13 --scale small \\
      --format acmnet|wtalc      (the real ActivityNet v1.3 annotations: synthetic_activitynet.py)
(the command is launch/synthetic.py; `generate` here writes the data).

Two steps: a plan (video ids, subsets, durations, instances, ambiguous stretches, video labels) and
features rendered from it (`synthetic_features.py`). The plan comes either from a parametric model
whose constants below were fitted to the real THUMOS14 annotations, or (--real_annotations) from a
real W-TALC annotation folder (or `thumos14`: the real THUMOS14 annotations shipped in
`data_pipelines/annotations/thumos14/`), so the features follow the real structure. The output goes
through the same reader as real data (`wtalc.read_wtalc`).

Scales: tiny (tests: D=64, 24+16 videos, lengths / 8), small (demo: D=256, 200+100 videos,
lengths / 4, at most 320 snippets), full (THUMOS sizes: D=2048, 200+212 videos, real lengths).
Only the video lengths are compressed; instance lengths keep their real seconds, and the instance
count follows the duration, so the action coverage of a video keeps the real distribution.
"""

import dataclasses
import math
import os

import numpy as np

from data_pipelines import acmnet, class_names, source, wtalc
from data_pipelines import synthetic_activitynet as anet
from data_pipelines import synthetic_features as sf

# ---- Fitted to the real THUMOS14 W-TALC annotation arrays (data_pipelines/annotations/thumos14,
# ---- 412 videos, subsets pooled) and summary statistics of them ("stats" below).
# ln(duration s): mean 4.98, sd 0.878 (median 154.6 s; stats: p5 31-34 s, p95 689-700 s).
LOG_DURATION = (4.98, 0.878)
DURATION_RANGE = (8.9, 1673.4)  # stats: min 8.93 s, max 1673.4 s.
# Per class: (weight as the video's first class, instances per second over the videos that have
# the class, median instance length s, sd of ln instance length). Weights are the numbers of videos
# with the class, except: Diving counts Diving-only videos (CliffDiving videos add Diving
# themselves), and the cricket weights solve w_b + 0.66 w_s = 33, w_s + 0.66 w_b = 35 (videos with
# CricketBowling / CricketShot, of which 27 have both).
CLASS_STATS = {
  'BaseballPitch': (22, 0.0297, 3.00, 0.47),
  'BasketballDunk': (20, 0.1415, 1.50, 0.52),
  'Billiards': (20, 0.0554, 2.20, 0.72),
  'CleanAndJerk': (23, 0.0289, 8.75, 0.68),
  'CliffDiving': (26, 0.0887, 2.70, 0.55),
  'CricketBowling': (17.5, 0.0789, 1.20, 0.62),
  'CricketShot': (23.4, 0.0818, 1.10, 0.55),
  'Diving': (20, 0.1265, 2.40, 0.51),
  'FrisbeeCatch': (17, 0.0797, 2.30, 0.67),
  'GolfSwing': (19, 0.0267, 4.20, 0.99),
  'HammerThrow': (20, 0.0524, 7.10, 0.40),
  'HighJump': (21, 0.0539, 4.50, 0.53),
  'JavelinThrow': (21, 0.0340, 6.30, 0.40),
  'LongJump': (21, 0.0394, 7.10, 0.46),
  'PoleVault': (20, 0.0541, 6.40, 0.48),
  'Shotput': (26, 0.0612, 4.65, 0.75),
  'SoccerPenalty': (21, 0.0587, 2.90, 0.52),
  'TennisSwing': (19, 0.0955, 1.50, 0.69),
  'ThrowDiscus': (21, 0.0761, 4.25, 0.97),
  'VolleyballSpiking': (23, 0.1127, 1.70, 0.79),
}
# Instances per video = max(1, Poisson(rate * duration * r)), ln r ~ N(-sd^2/2, sd) with sd 0.5:
# simulated median 8 / mean 14.5 / p25 3 / p95 49 per video (real: 8 / 15.4 / 3 / 51.5).
RATE_LOG_SD = 0.5
SEGMENT_RANGE = (0.2, 118.1)  # stats: shortest 0.2 s, longest 118.1 s.
MAX_COVERAGE = 0.85  # Real action coverage of a video: median 0.25, mean 0.30, p95 0.75.
# Class combinations: CliffDiving always with Diving (26/26 videos, segments duplicated); 27 of 41
# cricket videos have both cricket classes; 9 of 412 videos have another second class.
P_CRICKET_PAIR, P_EXTRA_CLASS, P_EXTRA_INSTANCE = 0.66, 0.022, 0.3
CRICKET = ('CricketBowling', 'CricketShot')
# labels_all != set(labels) in 28 of 412 videos: 13 of the 27 cricket pairs list one class only,
# and ~7 videos list a class that has no segment.
P_PAIR_LABEL_DROP, P_SPURIOUS_LABEL = 0.48, 0.017
# Ambiguous: 72 of 412 videos (both subsets), 188 segments (2.6 per video), length median 2.9 s,
# sd of ln length 1.04. Only the test subset's are released (Ambiguous_test.txt), so only those
# are written; the train videos' are rendered but unlisted, as in the real data.
P_AMBIGUOUS, AMBIGUOUS_MEAN, AMBIGUOUS_LENGTH = 0.175, 2.6, (2.9, 1.04)


@dataclasses.dataclass(frozen=True)
class Scale:
  feature_dim: int
  num_train: int
  num_test: int
  time_scale: float  # Video durations are multiplied by this.
  min_snippets: int
  max_snippets: int


SCALES = {
  'tiny': Scale(64, 24, 16, 1 / 8, 8, 96),
  'small': Scale(256, 200, 100, 1 / 4, 12, 320),
  'full': Scale(2048, 200, 212, 1.0, 13, 2614),
}


def num_snippets(duration: float) -> int:
  return source.expected_num_snippets(duration)


def _sample_duration(rng: np.random.Generator, scale: Scale) -> float:
  d = float(np.clip(np.exp(rng.normal(*LOG_DURATION)), *DURATION_RANGE)) * scale.time_scale
  t = min(max(num_snippets(d), scale.min_snippets), scale.max_snippets)
  if t != num_snippets(d):
    d = (t + 0.5) * sf.SNIPPET_S
  d = round(d, 2)
  return d if num_snippets(d) == t else round((t + 0.5) * sf.SNIPPET_S, 2)


def _place(lengths, duration, rng) -> list[tuple[float, float] | None]:
  """Random non-overlapping placement at 0.1 s resolution (as the real annotations); None if an
  instance rounds to nothing."""
  gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * (duration - sum(lengths))
  spans, t = [], gaps[0]
  for length, gap in zip(lengths, gaps[1:], strict=True):
    s, e = round(t, 1), min(round(t + length, 1), math.floor(duration * 10) / 10)
    spans.append((s, e) if e > s else None)
    t += length + gap
  return spans


def sample_video(rng: np.random.Generator, video_id: str, subset: str, scale: Scale):
  """One parametric plan -> VideoEntry (test-subset ambiguous kept; train's returned apart)."""
  names = list(CLASS_STATS)
  weights = np.array([CLASS_STATS[n][0] for n in names], float)
  primary = names[rng.choice(len(names), p=weights / weights.sum())]
  seg_classes = [primary]
  if primary in CRICKET and rng.random() < P_CRICKET_PAIR:
    seg_classes.append(CRICKET[1 - CRICKET.index(primary)])
  elif primary not in sf.PARENTS and rng.random() < P_EXTRA_CLASS:
    seg_classes.append(rng.choice([n for n in names if n != primary and n not in sf.PARENTS]))

  duration = _sample_duration(rng, scale)
  _, rate, _, _ = CLASS_STATS[primary]
  r = np.exp(rng.normal(-(RATE_LOG_SD**2) / 2, RATE_LOG_SD))
  n = max(1, int(rng.poisson(rate * duration * r)))
  labels = [seg_classes[0]] * n
  if len(seg_classes) > 1:  # A cricket partner shares the instances; an extra class gets a few.
    p_second = 0.5 if primary in CRICKET else P_EXTRA_INSTANCE
    labels = [seg_classes[int(rng.random() < p_second)] for _ in range(n)]
    labels[-1] = seg_classes[1]  # Each class has at least one instance.
    rng.shuffle(labels)
  lengths = []
  for lab in labels:
    _, _, median, sd = CLASS_STATS[lab]
    lengths.append(float(np.clip(np.exp(rng.normal(math.log(median), sd)), *SEGMENT_RANGE)))
  while len(lengths) > 1 and sum(lengths) > MAX_COVERAGE * duration:
    lengths.pop(), labels.pop()
  lengths = [min(x, MAX_COVERAGE * duration) for x in lengths]
  spans = _place(lengths, duration, rng)
  segments = []
  for span, lab in zip(spans, labels, strict=True):
    if span is None:
      continue
    s, e = span
    segments.append((s, e, lab))
    if lab in sf.PARENTS:  # Every child segment is also annotated with the parent class.
      segments.append((s, e, sf.PARENTS[lab]))

  ambiguous = []
  if rng.random() < P_AMBIGUOUS:
    for _ in range(1 + rng.poisson(AMBIGUOUS_MEAN - 1)):
      length = float(np.clip(np.exp(rng.normal(math.log(AMBIGUOUS_LENGTH[0]), 1.04)), 0.2, 85.1))
      s = round(rng.uniform(0, max(0.1, duration - length)), 1)
      e = round(min(duration, s + length), 1)
      if e > s and all(e <= a or s >= b for a, b, _ in segments):
        ambiguous.append((s, e))

  present = {lab for _, _, lab in segments}
  order = {c: i for i, c in enumerate(class_names.THUMOS14)}
  video_labels = sorted(present, key=order.__getitem__)
  if set(CRICKET) <= present and rng.random() < P_PAIR_LABEL_DROP:
    video_labels.remove(CRICKET[int(rng.integers(2))])
  elif rng.random() < P_SPURIOUS_LABEL:
    extra = rng.choice([c for c in names if c not in present and c not in sf.PARENTS])
    video_labels = sorted(video_labels + [str(extra)], key=order.__getitem__)
  entry = source.VideoEntry(
    video_id=video_id,
    subset=subset,
    duration=duration,
    labels=tuple(video_labels),
    segments=tuple(sorted(segments)),
    ambiguous=tuple(sorted(ambiguous)),
  )
  return entry


def parametric_plan(scale: Scale, seed: int) -> list[source.VideoEntry]:
  """Train videos first (raw subset 'validation', as in THUMOS14), then test videos."""
  rng = np.random.default_rng([seed, 1])
  train = range(scale.num_train)
  plan = [sample_video(rng, f'syn_validation_{i:05d}', 'train', scale) for i in train]
  plan += [sample_video(rng, f'syn_test_{i:05d}', 'test', scale) for i in range(scale.num_test)]
  return plan


def real_plan(ann_dir: str, max_videos: int | None = None) -> tuple[list, list[str], list[str]]:
  """The real annotation structure of a W-TALC annotation folder, or of a packaged set by name
  (`thumos14`: `wtalc.packaged_annotations`).

  Returns:
    (entries, raw subset strings, classes); at most max_videos per subset, in file order.
  """
  if os.sep not in ann_dir and not os.path.isdir(ann_dir):
    ann_dir = wtalc.packaged_annotations(ann_dir)
  ann = wtalc.read_annotations(ann_dir)
  has_training = any(s.strip().lower() == 'training' for s in ann['subset'])
  entries, raw, taken = [], [], {}
  for i in range(len(ann['videoname'])):
    subset = source.normalize_subset(ann['subset'][i], has_training)
    if subset is None or taken.get(subset, 0) == max_videos:
      continue
    taken[subset] = taken.get(subset, 0) + 1
    entries.append(wtalc.video_entry(ann, i, subset))
    raw.append(ann['subset'][i])
  return entries, raw, ann['classes']


def generate(
  out_dir: str,
  *,
  scale: str = 'tiny',
  seed: int = 0,
  dataset: str = 'thumos14',
  name: str | None = None,
  layout: str = 'wtalc',
  out_format: str = 'wtalc',
  feature_dim: int | None = None,
  num_train: int | None = None,
  num_test: int | None = None,
  real_annotations: str | None = None,
  max_videos: int | None = None,
) -> str:
  """Writes a synthetic dataset; returns the folder to give `prepare --src`.

  Args:
    out_dir: output folder.
    scale: 'tiny' | 'small' | 'full' (module docstring); sets D and the video counts.
    seed: everything is a deterministic function of it.
    dataset: 'thumos14' (parametric or --real_annotations) or 'activitynet13' (the real v1.3
      annotations shipped with the package, `synthetic_activitynet.py`; its own scales).
    name: `<Name>` of the W-TALC files (default 'Synthetic', ActivityNet 'ActivityNet1.3').
    layout: W-TALC layout, 'wtalc' (`<Name>-Annotations/`) or 'rskp' (annotations beside).
    out_format: 'wtalc' or 'acmnet'.
    feature_dim, num_train, num_test: override the scale's values.
    real_annotations: a W-TALC annotation folder, or 'thumos14' (the packaged one); its videos
      and segments replace the parametric plan (T = floor(duration * 25 / 16)).
    max_videos: with real_annotations, keep at most this many videos per subset.
  """
  if dataset == 'activitynet13':
    return _generate_activitynet(out_dir, scale, seed, name, layout, out_format, feature_dim)
  if dataset != 'thumos14':
    raise ValueError(f'dataset must be thumos14 or activitynet13, got {dataset!r}')
  name = name or 'Synthetic'
  sc = SCALES[scale]
  sc = dataclasses.replace(
    sc,
    feature_dim=feature_dim or sc.feature_dim,
    num_train=sc.num_train if num_train is None else num_train,
    num_test=sc.num_test if num_test is None else num_test,
  )
  if real_annotations is not None:
    plan, raw_subsets, classes = real_plan(real_annotations, max_videos)
  else:
    plan = parametric_plan(sc, seed)
    raw_subsets = ['validation' if v.subset == 'train' else 'test' for v in plan]
    classes = list(class_names.THUMOS14)
  features = _render_all(plan, classes, sc.feature_dim, seed)
  # Only the test subset's ambiguous stretches are released (as in Ambiguous_test.txt).
  plan = [v if v.subset == 'test' else dataclasses.replace(v, ambiguous=()) for v in plan]
  if out_format == 'acmnet':
    acmnet.write_acmnet(out_dir, plan, features)
    return out_dir
  wtalc.write_wtalc(out_dir, name, classes, plan, features, raw_subsets=raw_subsets, layout=layout)
  return out_dir


def _render_all(plan, classes, feature_dim: int, seed: int):
  """Features [T_i, D] of every planned video, T_i = floor(duration * 25 / 16) (at least 1).

  A generator: the ACM-Net writer saves each video as it is rendered, so the full ActivityNet
  scale (~21 GB of float32) never sits in memory (the W-TALC layout is one array, as released).
  """
  look = sf.make_appearance(classes, feature_dim, np.random.default_rng([seed, 0]))
  index = {c: i for i, c in enumerate(classes)}
  for i, entry in enumerate(plan):
    t = max(1, num_snippets(entry.duration))
    yield sf.render(entry, t, index, look, np.random.default_rng([seed, 2, i]))


def _generate_activitynet(out_dir, scale, seed, name, layout, out_format, feature_dim) -> str:
  sc = anet.SCALES[scale]
  plan, raw_subsets, classes = anet.plan(sc, seed)
  features = _render_all(plan, classes, feature_dim or sc.feature_dim, seed)
  if out_format == 'acmnet':
    acmnet.write_acmnet(out_dir, plan, features, raw_subsets=raw_subsets)
  else:
    wtalc.write_wtalc(out_dir, name or anet.WTALC_NAME, classes, plan, features,
                      raw_subsets=raw_subsets, layout=layout)  # fmt: skip
  return out_dir
