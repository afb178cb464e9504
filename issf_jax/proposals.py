"""Action proposals from a localisation map: RSKP's multi-threshold proposals, NMS, seconds, JSON.

Used by both scoring protocols (`issf_jax.evaluation`) and by inference. The THUMOS14 path
reproduces RSKP's `getActLoc` (docs/design.md §7.2) exactly, float32 quirks included:

  * classes with video score >= `class_threshold` (optionally the top-1 class when none passes);
  * for every CAS threshold in `np.arange(start, stop, step)`, runs of `cas > thr` at least
    `min_length` long; a run [s, e) (e exclusive) gives the proposal [s, e + 1): RSKP stores one
    snippet more than the run;
  * score = inner - outer with inner = float32 mean of cas[s:e+1] and outer = float32 mean of the
    context cas[outer_s:s] ++ cas[e+1:outer_e] (25 % of the run length on each side, the last
    snippet never counted, 0 when empty);
  * NMS per (video, class) over the proposals of all thresholds. 'rskp' normalises the +1 overlap by
    the *other* segment's length; 'iou' is a plain IoU NMS (ActivityNet, docs/design.md §7.3).

Proposal rows are float64 `[class, start, end_exclusive, score]` in snippet units (of the upsampled
map when `upsample > 1`); the scores are the float32 values RSKP holds, widened to float64.
"""

from collections.abc import Mapping, Sequence

import numpy as np


def cas_thresholds(config) -> np.ndarray:
  """The float64 CAS thresholds, built exactly as RSKP does (`np.arange`, not linspace). [K]."""
  return np.arange(config.thresholds_start, config.thresholds_stop, config.thresholds_step)


def upsample_cas(cas: np.ndarray, factor: int) -> np.ndarray:
  """Linear interpolation of a [T, K] map to [T * factor, K] (ACM-Net's `upgrade_resolution`).

  Row j sits at snippet position j / factor; positions past T - 1 are extrapolated from the last two
  snippets, as `interp1d(..., fill_value='extrapolate')` does.
  """
  factor = int(factor)
  if factor <= 1:
    return cas
  cas = np.asarray(cas, np.float64)
  t = cas.shape[0]
  if t == 1:
    return np.repeat(cas, factor, axis=0)
  pos = np.arange(t * factor) / factor
  left = np.minimum(np.floor(pos).astype(np.int64), t - 2)  # Segment used; the last extrapolates.
  frac = (pos - left)[:, None]
  return cas[left] + frac * (cas[left + 1] - cas[left])


def threshold_runs(cas: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Runs of `cas > thr` for each threshold; thresholds outer, runs in time order (RSKP's order).

  Args:
    cas: [T] one class column.
    thresholds: [K] float64.

  Returns:
    (starts, ends), each [R] int64, `ends` exclusive (the first snippet after the run).
  """
  # The comparison is done in float64, as RSKP's float32 array vs np.float64 scalar is.
  above = np.asarray(cas, np.float64)[None, :] > thresholds[:, None]
  padded = np.zeros((above.shape[0], above.shape[1] + 2), np.int8)
  padded[:, 1:-1] = above
  diff = np.diff(padded, axis=1)
  # Row-major nonzero: starts and ends of one threshold row come out paired and in time order.
  _, starts = np.nonzero(diff == 1)
  _, ends = np.nonzero(diff == -1)
  return starts, ends


def _mean(x: np.ndarray):
  """`np.mean(x)` bit for bit (same pairwise sum, same float64 division by an intp, cast back),
  without its Python overhead: it is called once per distinct run."""
  total = np.add.reduce(x)
  return total.dtype.type(total / np.intp(x.size))


def contrast_scores(cas: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """RSKP's outer-inner contrast of each run [s, e), with RSKP's float32 arithmetic. [R] float64.

  inner = mean(cas[s:e+1]) (includes snippet e when e < T); outer = mean of
  cas[outer_s:s] ++ cas[e+1:outer_e] with outer_s = max(0, int(s - L/4)),
  outer_e = min(T - 1, int(e + L/4 + 1)), or 0 when empty. The mean keeps the map's own dtype on
  purpose: the scores must be RSKP's float32 values bit for bit, because NMS and the per-class
  ranking break ties with numpy's argsort on them. Runs repeated across thresholds are scored once.
  """
  t = cas.shape[0]
  cache = {}
  out = np.empty(len(starts), np.float64)
  for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
    score = cache.get((s, e))
    if score is None:
      length = e - s
      inner = _mean(cas[s : e + 1])
      outer_s = max(0, int(s - 0.25 * length))
      outer_e = min(t - 1, int(e + 0.25 * length + 1))
      left, right = cas[outer_s:s], cas[e + 1 : outer_e]
      if left.size and right.size:
        score = inner - _mean(np.concatenate([left, right]))
      elif left.size or right.size:
        score = inner - _mean(left if left.size else right)
      else:
        score = inner - 0
      cache[(s, e)] = score
    out[k] = score
  return out


def _greedy_nms(order: np.ndarray, starts, ends, overlap_fn, threshold: float) -> np.ndarray:
  """Walks `order` (best first), keeping a proposal and dropping the later ones it overlaps by more
  than `threshold`. The candidate arrays shrink as proposals are dropped, so each pick costs one
  vector expression over the survivors. Returns kept indices in pick order."""
  idx = np.asarray(order)
  s = np.asarray(starts, np.float64)[idx]
  e = np.asarray(ends, np.float64)[idx]
  kept = []
  while idx.size:
    kept.append(idx[0])
    with np.errstate(invalid='ignore', divide='ignore'):
      keep = ~(overlap_fn(s[0], e[0], s[1:], e[1:]) > threshold)
    idx, s, e = idx[1:][keep], s[1:][keep], e[1:][keep]
  return np.asarray(kept, np.int64)


def _rskp_overlap(s_i, e_i, s, e):
  """RSKP's overlap of the kept i with each other j: the +1 intersection over j's +1 length."""
  return np.maximum(0.0, np.minimum(e_i, e) - np.maximum(s_i, s) + 1) / (e - s + 1)


def _iou(s_i, e_i, s, e):
  """Continuous IoU of [s_i, e_i) with each [s, e)."""
  inter = np.maximum(0.0, np.minimum(e_i, e) - np.maximum(s_i, s))
  return inter / ((e_i - s_i) + (e - s) - inter)


def rskp_nms(
  starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, threshold: float
) -> np.ndarray:
  """RSKP's segment NMS. Returns kept indices in pick order (descending score). [N] -> [M].

  A kept proposal i suppresses j when max(0, min(E_i, E_j) - max(s_i, s_j) + 1) / (E_j - s_j + 1) >
  threshold, with E the stored (already +1) end: the normaliser is the *other* segment's +1 length.
  The order is numpy's default argsort of all the scores walked from the top, so that ties (e.g.
  two runs that both reach the end of the video) are broken exactly as in RSKP.
  """
  order = np.argsort(np.asarray(scores, np.float64))[::-1]
  return _greedy_nms(order, starts, ends, _rskp_overlap, threshold)


def iou_nms(
  starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, threshold: float
) -> np.ndarray:
  """Greedy NMS on the continuous IoU of [start, end) segments (ActivityNet practice, 0.9).

  Stable descending score order; j is suppressed by a kept i when IoU(i, j) > threshold.
  Returns kept indices in pick order. [N] -> [M].
  """
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  return _greedy_nms(order, starts, ends, _iou, threshold)


def class_proposals(cas: np.ndarray, config, thresholds: np.ndarray | None = None) -> np.ndarray:
  """One class column's proposals after NMS. [T] -> [M, 3] float64 rows [start, end_excl, score]."""
  if thresholds is None:
    thresholds = cas_thresholds(config)
  starts, ends = threshold_runs(cas, thresholds)
  keep = ends - starts >= config.min_length
  starts, ends = starts[keep], ends[keep]
  scores = contrast_scores(cas, starts, ends)
  stored_ends = ends + 1  # RSKP's proposal is range(s, e + 1).
  if config.nms == 'rskp':
    pick = rskp_nms(starts, stored_ends, scores, config.nms_threshold)
  elif config.nms == 'iou':
    pick = iou_nms(starts, stored_ends, scores, config.nms_threshold)
  elif config.nms == 'none':
    pick = np.argsort(-scores, kind='stable')
  else:
    raise ValueError(f'unknown nms {config.nms!r}: expected rskp, iou or none')
  return np.stack([starts[pick], stored_ends[pick], scores[pick]], axis=1).astype(np.float64)


def selected_classes(video_score: np.ndarray, num_classes: int, config) -> np.ndarray:
  """Classes whose video score passes the gate; optionally the top-1 class if none does. [M] int."""
  fg = np.asarray(video_score)[:num_classes]
  # Compared in the score's own dtype, as RSKP's `np.float32 < 0.1` is.
  classes = np.nonzero(fg >= config.class_threshold)[0]
  if classes.size == 0 and config.get('top1_fallback', False) and num_classes > 0:
    classes = np.array([int(np.argmax(fg))])
  return classes


def video_proposals(video_score: np.ndarray, cas: np.ndarray, config) -> np.ndarray:
  """All proposals of one video.

  Args:
    video_score: [C+1] fused video scores, background last (never read).
    cas: [T, C+1] fused localisation map at the video's true length.
    config: the proposals config section (`config.eval.proposals`, configs/common.py).

  Returns:
    [N, 4] float64 rows [class, start_snippet, end_snippet_exclusive, score], classes ascending and,
    within a class, in NMS pick order (descending score). With `upsample = k > 1` the snippet units
    are those of the k-times longer map.
  """
  cas = np.asarray(cas)
  num_classes = cas.shape[1] - 1
  classes = selected_classes(video_score, num_classes, config)
  if config.get('upsample', 1) > 1:
    cas = upsample_cas(cas, config.upsample)
  thresholds = cas_thresholds(config)
  rows = []
  for c in classes.tolist():
    props = class_proposals(cas[:, c], config, thresholds)
    rows.append(np.concatenate([np.full((len(props), 1), float(c)), props], axis=1))
  if not rows:
    return np.zeros((0, 4), np.float64)
  return np.concatenate(rows, axis=0)


def proposals_to_seconds(
  props: np.ndarray,
  *,
  fps: float = 25.0,
  stride: int = 16,
  num_snippets_orig: int | None = None,
  t_s: int | None = None,
  upsample: int = 1,
) -> np.ndarray:
  """Snippet proposals [N, 4] -> seconds [N, 4] float64 rows [class, start_s, end_s, score].

  THUMOS14: snippet i covers [i * stride / fps, (i + 1) * stride / fps), so a boundary index maps to
  idx * stride / fps. ActivityNet (features resampled from `num_snippets_orig` to `t_s` snippets):
  idx * (stride * num_snippets_orig / fps) / t_s. Both are divided by `upsample` when the map was
  upsampled before the proposals.
  """
  props = np.asarray(props, np.float64).reshape(-1, 4)
  if (num_snippets_orig is None) != (t_s is None):
    raise ValueError('give both num_snippets_orig and t_s (ActivityNet) or neither (THUMOS14)')
  seconds_per_index = stride / fps
  if t_s is not None:
    seconds_per_index = stride * num_snippets_orig / fps / t_s
  out = props.copy()
  out[:, 1:3] = props[:, 1:3] * seconds_per_index / upsample
  return out


def video_detections(
  video_score: np.ndarray, cas: np.ndarray, config, *, num_snippets_orig: int | None = None
) -> np.ndarray:
  """`video_proposals` then `proposals_to_seconds` with the config's fps, stride and upsampling.

  Args:
    video_score: [C+1]; cas: [T, C+1] (T = T_s for ActivityNet).
    num_snippets_orig: ActivityNet only: the video's snippet count before resampling to T.

  Returns:
    [N, 4] float64 rows [class, start_s, end_s, score].
  """
  props = video_proposals(video_score, cas, config)
  return proposals_to_seconds(
    props,
    fps=config.fps,
    stride=config.stride,
    num_snippets_orig=num_snippets_orig,
    t_s=None if num_snippets_orig is None else np.asarray(cas).shape[0],
    upsample=config.get('upsample', 1),
  )


def detections_json(
  per_video: Mapping[str, Sequence], class_names: Sequence[str], version: str = 'issf-jax'
) -> dict:
  """Per-video second proposals -> ActivityNet-format predictions.

  Args:
    per_video: video id -> [N, 4] rows [class, start_s, end_s, score] (array or list of rows).
    class_names: class index -> name.

  Returns:
    {'version', 'results': {video: [{'label', 'score', 'segment': [s, e]}]}, 'external_data': {}}.
  """
  results = {}
  for video, rows in per_video.items():
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    results[str(video)] = [
      {'label': class_names[int(c)], 'score': float(score), 'segment': [float(s), float(e)]}
      for c, s, e, score in rows.tolist()
    ]
  return {'version': version, 'results': results, 'external_data': {}}
