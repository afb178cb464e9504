"""Pure-numpy index plans of the input pipeline: epoch order, padding buckets, T_s sampling.

Every random choice of the pipeline is made here, in numpy, from a seed derived from
(seed, epoch[, video]); TensorFlow only gathers and pads. So a batch depends on nothing but
(seed, epoch, batch), which is what makes exact resumption and multi-host slicing possible, and the
evaluator can call `uniform_indices` to map sampled positions back to snippets.
"""

import numpy as np

_ORDER_TAG = 0x15F0  # Separates the epoch-order stream from the per-video streams.
_VIDEO_TAG = 0x15F1


def epoch_order(seed: int, epoch: int, num_videos: int) -> np.ndarray:
  """The permutation of range(num_videos) for `epoch`: int64 [N], the same on every host."""
  rng = np.random.default_rng([_ORDER_TAG, seed, epoch])
  return rng.permutation(num_videos)


def video_rng(seed: int, epoch: int, video_index: int) -> np.random.Generator:
  """The generator for one video's random sampling in one epoch."""
  return np.random.default_rng([_VIDEO_TAG, seed, epoch, video_index])


def bucket_length(length: int, bucket_size: int) -> int:
  """`length` rounded up to a multiple of bucket_size (at least one bucket)."""
  return max(1, -(-int(length) // bucket_size)) * bucket_size


def random_bin_indices(num_snippets: int, t_s: int, rng: np.random.Generator) -> np.ndarray:
  """Training sampling on ActivityNet (docs/design.md §6.2): int32 [t_s], non-decreasing.

  T > t_s: split [0, T) into t_s bins [floor(i T / t_s), floor((i+1) T / t_s)) and draw one index
  uniformly in each (the last bin ends at T). ACM-Net's bins also include the next bin's first
  index (an off-by-one overlap) and its last bin starts at the previous draw; these bins do not
  overlap. T == t_s: arange. T < t_s: t_s draws with replacement, sorted (ACM-Net).
  """
  if num_snippets <= 0:
    raise ValueError(f'num_snippets must be positive, got {num_snippets}')
  if num_snippets == t_s:
    return np.arange(t_s, dtype=np.int32)
  if num_snippets < t_s:
    return np.sort(rng.integers(0, num_snippets, size=t_s)).astype(np.int32)
  i = np.arange(t_s + 1, dtype=np.int64)
  edges = i * num_snippets // t_s
  lo, hi = edges[:-1], edges[1:]  # hi > lo because T > t_s.
  return (lo + np.floor(rng.random(t_s) * (hi - lo)).astype(np.int64)).astype(np.int32)


def uniform_indices(num_snippets: int, t_s: int) -> np.ndarray:
  """Evaluation sampling on ActivityNet (docs/design.md §6.2): int32 [min(T, t_s)] or [t_s].

  1 < T <= t_s: every snippet (the pipeline pads the rest with mask False). Otherwise
  floor(arange(t_s) * T / t_s); for T = 1 that is t_s copies of snippet 0. Sampled position k stands
  for original snippet idx[k], i.e. idx[k] * 16 / 25 seconds.
  """
  if num_snippets <= 0:
    raise ValueError(f'num_snippets must be positive, got {num_snippets}')
  if 1 < num_snippets <= t_s:
    return np.arange(num_snippets, dtype=np.int32)
  return (np.arange(t_s, dtype=np.int64) * num_snippets // t_s).astype(np.int32)


def crop_indices(num_snippets: int, max_len: int | None, rng: np.random.Generator) -> np.ndarray:
  """THUMOS training: all snippets, or a random contiguous window of max_len if T > max_len."""
  if max_len is None or num_snippets <= max_len:
    return np.arange(num_snippets, dtype=np.int32)
  start = int(rng.integers(0, num_snippets - max_len + 1))
  return np.arange(start, start + max_len, dtype=np.int32)


GEOMETRIC_MULTIPLE = 16  # geometric bucket edges are multiples of this (aligned vector tiles)


def geometric_bucket_length(length: int, growth: float, multiple: int = GEOMETRIC_MULTIPLE) -> int:
  """`length` rounded up to the next edge of e_0 = multiple, e_{k+1} = ceil(e_k growth) rounded
  up to a multiple of `multiple` (at least e_k + multiple).

  The padding per row is below a fraction growth - 1 of its length once the edges grow faster
  than `multiple`, and the number of distinct lengths (compiled programs) up to T is about
  log(T / multiple) / log(growth): 22 edges up to 2202 snippets for growth 1.2.
  """
  if growth <= 1.0:
    raise ValueError(f'growth must be > 1, got {growth}')
  edge = multiple
  while edge < length:
    edge = max(edge + multiple, -(-int(np.ceil(edge * growth)) // multiple) * multiple)
  return edge
