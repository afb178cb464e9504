"""I3D-like snippet features rendered from an annotation plan (used by `synthetic.py`).

A feature row is ReLU(gain_v * z_t), with z_t a sum of prototype directions weighted per snippet:

  z_t = sum_c core_cov[t,c] core_c          discriminative core of class-c instances (middle 50%)
      + sum_c phase_cov[t,c] phase_c        onset / offset (first and last 25%): weaker, generic
      + sum_c ctx[t,c] context_c            class-correlated context: resembles class c in the RGB
                                            half, strongest next to its instances, present all over
                                            the video, and background in the ground truth
      + background_{scene(t)}               the shot's scene; scene cuts at most action boundaries
                                            and at random in the background
      + motion_t motion + cut_t cut         generic motion (actions, camera, background distractors)
                                            and a flow burst on the snippet of each cut
      + nuisance_v + smooth AR(1) noise + white noise

Columns [0, D/2) are the "RGB" half and [D/2, D) the "flow" half: scene and context prototypes
live mostly in RGB, motion and cuts mostly in flow, class cores in both. A child class
(CliffDiving) has a core close to its parent's (Diving), and classes of one family (cricket,
throws, jumps) share part of their core and most of their context. Coverage is fractional: a
0.3 s instance fills half a 0.64 s snippet, so very short actions are faint, as in real features.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from data_pipelines import source

SNIPPET_S = source.STRIDE / source.FPS  # 0.64 s
# Sub-class relations (child -> parent): every child segment is duplicated with the parent label.
PARENTS = {'CliffDiving': 'Diving'}
# Groups of THUMOS14 classes with a shared look (field and scene): the confusable pairs of the task.
FAMILIES = (
  ('CricketBowling', 'CricketShot'),
  ('HammerThrow', 'JavelinThrow', 'Shotput', 'ThrowDiscus'),
  ('HighJump', 'LongJump', 'PoleVault'),
  ('CliffDiving', 'Diving'),
)
NUM_SCENES = 24  # Background scene prototypes shared by all videos.

# Amplitudes (per-dimension standard deviations of each term before the ReLU).
CORE_AMP, PHASE_AMP, CONTEXT_AMP, SCENE_AMP = 1.0, 0.45, 1.0, 1.0
MOTION_AMP, CUT_AMP, NUISANCE_SD, SMOOTH_SD, WHITE_SD = 0.8, 1.5, 0.5, 0.4, 0.35
SMOOTH_RANK, SMOOTH_RHO = 8, 0.9
CUT_AT_BOUNDARY = 0.7  # P(scene cut at an action boundary).
BG_CUT_EVERY_S = 25.0  # Mean time between background scene cuts.
DISTRACTOR_EVERY_S = 40.0  # Mean time between background motion bursts.
CONTEXT_BASE, CONTEXT_PEAK, CONTEXT_DECAY_S = 0.35, 0.8, 8.0
CONTEXT_CORE_SIM = 0.7  # Cosine between a class's context and its core, RGB half.


@dataclasses.dataclass(frozen=True)
class Appearance:
  """Dataset-wide prototype directions, rows of [K, D] float32 (see the module docstring)."""

  core: np.ndarray  # [C, D]
  phase: np.ndarray  # [C, D]
  context: np.ndarray  # [C, D]
  scenes: np.ndarray  # [NUM_SCENES, D]
  motion: np.ndarray  # [D]
  cut: np.ndarray  # [D]
  smooth_basis: np.ndarray  # [SMOOTH_RANK, D]
  bias: np.ndarray  # [D]


def make_appearance(classes: Sequence[str], feature_dim: int, rng: np.random.Generator):
  """Draws the prototypes for `classes`; family and parent relations are applied by class name."""
  c, d, half = len(classes), feature_dim, feature_dim // 2
  normal = lambda *shape: rng.standard_normal(shape)
  rgb = np.r_[np.ones(half), np.zeros(d - half)]
  flow = 1.0 - rgb
  core, own_ctx = normal(c, d), normal(c, d)
  index = {name: i for i, name in enumerate(classes)}
  for family in FAMILIES:  # Shared component: confusable cores, near-identical contexts.
    members = [index[m] for m in family if m in index]
    shared_core, shared_ctx = normal(d), normal(d)
    for i in members:
      core[i] = 0.5 * shared_core + 0.87 * core[i]
      own_ctx[i] = 0.85 * shared_ctx + 0.53 * own_ctx[i]
  for child, parent in PARENTS.items():
    if child in index and parent in index:
      core[index[child]] = 0.8 * core[index[parent]] + 0.6 * normal(d)
  motion = 0.2 * normal(d) * rgb + normal(d) * flow
  phase = 0.5 * core + 0.5 * motion + 0.7 * normal(c, d)
  sim = CONTEXT_CORE_SIM
  context = (sim * core + np.sqrt(1 - sim**2) * own_ctx) * rgb + 0.2 * own_ctx * flow
  scenes = normal(NUM_SCENES, d) * (rgb + 0.3 * flow)
  cut = 0.5 * normal(d) * rgb + (normal(d) + 1.5) * flow
  smooth_basis = normal(SMOOTH_RANK, d) / np.sqrt(SMOOTH_RANK)
  bias = 0.2 + 0.3 * np.abs(normal(d))
  f32 = lambda a: np.asarray(a, np.float32)
  return Appearance(
    *(f32(a) for a in (core, phase, context, scenes, motion, cut, smooth_basis, bias))
  )


def _coverage(start: float, end: float, num_snippets: int) -> tuple[int, np.ndarray]:
  """Fraction of each snippet inside [start, end): (first snippet, float [n])."""
  lo = max(0, int(np.floor(start / SNIPPET_S)))
  hi = min(num_snippets, int(np.ceil(end / SNIPPET_S)))
  if hi <= lo:
    return lo, np.zeros(0)
  t0 = np.arange(lo, hi) * SNIPPET_S
  overlap = np.minimum(end, t0 + SNIPPET_S) - np.maximum(start, t0)
  return lo, np.clip(overlap / SNIPPET_S, 0.0, 1.0)


def _add(track: np.ndarray, start: float, end: float, weight: float) -> None:
  lo, cov = _coverage(start, end, track.shape[0])
  track[lo : lo + len(cov)] += weight * cov


def rendered_segments(entry: source.VideoEntry) -> list[tuple[float, float, str]]:
  """The segments that get drawn: a parent-labelled duplicate of a child segment is drawn once."""
  child = {(s, e, PARENTS[lab]) for s, e, lab in entry.segments if lab in PARENTS}
  return [(s, e, lab) for s, e, lab in entry.segments if (s, e, lab) not in child]


def render(
  entry: source.VideoEntry,
  num_snippets: int,
  class_index: Mapping[str, int],
  look: Appearance,
  rng: np.random.Generator,
) -> np.ndarray:
  """Features float32 [num_snippets, D] of one video; deterministic given `rng`'s state."""
  t_len, c = num_snippets, look.core.shape[0]
  duration = t_len * SNIPPET_S
  centers = (np.arange(t_len) + 0.5) * SNIPPET_S
  core, phase = np.zeros((t_len, c)), np.zeros((t_len, c))
  motion = np.zeros(t_len)
  segments = rendered_segments(entry)
  boundaries = []
  for s, e, lab in segments:
    s, e = max(0.0, s), min(duration, e)
    if e <= s:
      continue
    k, amp = class_index[lab], float(np.exp(rng.normal(0.0, 0.25)))
    ramp = 0.25 * (e - s) if e - s >= 1.0 else 0.0  # Short actions have no distinct phases.
    _add(core[:, k], s + ramp, e - ramp, CORE_AMP * amp)
    for a, b in ((s, s + ramp), (e - ramp, e)):
      _add(phase[:, k], a, b, PHASE_AMP * amp)
    _add(motion, s, e, 0.6)
    boundaries += [s, e]
  # Ambiguous stretches: a weak, partial version of the video's first action class.
  main = [class_index[lab] for _, _, lab in segments][:1]
  for s, e in entry.ambiguous if main else ():
    _add(core[:, main[0]], s, min(e, duration), 0.4 * CORE_AMP)
    _add(motion, s, min(e, duration), 0.4)

  # Context: everywhere in the video, peaking next to (and inside) the class's own instances.
  context = np.zeros((t_len, c))
  for k in sorted({class_index[lab] for _, _, lab in segments}):
    dist = np.full(t_len, np.inf)
    for s, e, lab in segments:
      if class_index[lab] == k:
        dist = np.minimum(dist, np.maximum(0.0, np.maximum(s - centers, centers - e)))
    context[:, k] = CONTEXT_AMP * (CONTEXT_BASE + CONTEXT_PEAK * np.exp(-dist / CONTEXT_DECAY_S))

  # Scenes: cuts at most action boundaries plus random background cuts.
  cuts = [b for b in boundaries if rng.random() < CUT_AT_BOUNDARY]
  cuts += list(rng.uniform(0, duration, rng.poisson(duration / BG_CUT_EVERY_S)))
  cut_snippets = sorted({min(t_len - 1, int(t / SNIPPET_S)) for t in cuts if 0 < t < duration})
  palette = rng.choice(NUM_SCENES, size=3, replace=False)
  scene_of = np.zeros(t_len, np.int64)
  current, gain = int(rng.integers(3)), np.ones(t_len)
  edges = [0] + cut_snippets + [t_len]
  for a, b in zip(edges[:-1], edges[1:], strict=True):
    scene_of[a:b] = palette[current]
    gain[a:b] = rng.uniform(0.8, 1.2)
    context[a:b] *= rng.uniform(0.7, 1.3)
    motion[a:b] += rng.uniform(0.1, 0.5)  # Camera motion of the shot.
    current = (current + int(rng.integers(1, 3))) % 3  # The next shot changes scene.
  for _ in range(rng.poisson(duration / DISTRACTOR_EVERY_S)):  # Moving background: a hard negative.
    s = rng.uniform(0, duration)
    _add(motion, s, s + rng.uniform(1.0, 4.0), 0.8)
  cut_track = np.zeros(t_len)
  cut_track[cut_snippets] = CUT_AMP

  f32 = lambda a: np.asarray(a, np.float32)
  z = f32(gain[:, None] * SCENE_AMP) * look.scenes[scene_of]
  # Only the video's own classes have non-zero weights: rank-1 updates beat a [T, 3C] matmul.
  active = np.flatnonzero(np.abs(core).sum(0) + np.abs(phase).sum(0) + np.abs(context).sum(0))
  for k in active:
    z += f32(core[:, k : k + 1]) * look.core[k] + f32(phase[:, k : k + 1]) * look.phase[k]
    z += f32(context[:, k : k + 1]) * look.context[k]
  z += f32(MOTION_AMP * motion[:, None]) * look.motion + f32(cut_track[:, None]) * look.cut
  # Nuisance: a per-video appearance offset and gain (camera, lighting).
  z += look.bias + f32(NUISANCE_SD * rng.standard_normal(look.bias.shape[0]))
  # Smooth noise: AR(1) with unit stationary variance in a rank-SMOOTH_RANK subspace.
  innovation = rng.standard_normal((t_len, SMOOTH_RANK))
  innovation[1:] *= np.sqrt(1 - SMOOTH_RHO**2)
  import scipy.signal  # here: it takes 0.9 s to import, which a config file need not pay

  smooth = scipy.signal.lfilter([1.0], [1.0, -SMOOTH_RHO], innovation, axis=0)
  z += f32(SMOOTH_SD * smooth) @ look.smooth_basis
  z += WHITE_SD * rng.standard_normal(z.shape, dtype=np.float32)
  z *= np.float32(np.exp(rng.normal(0.0, 0.15)))
  return np.maximum(z, 0.0, out=z)
