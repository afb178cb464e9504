"""The order in which `torch.sort(x, descending=True)` (CPU) puts equal values.

The authors' memory merge (`Saliency_Memory._sort_permutation`) sorts the concatenation of
a memory row and a video's salient snippets with `torch.sort(..., descending=True)`, which
on the CPU is libstdc++'s `std::sort` (introsort: median-of-three quicksort, a heapsort
below the depth limit, then insertion sort) on (value, index) pairs with the comparator
`a > b`. That sort is not stable: how it orders EQUAL scores depends on the whole array.

Equal scores matter in one case only: with the released code's class-0 indexing, a video
with two labels merges the same snippets into row 0 twice. After the first merge, the row
holds a snippet with its score, but in the momentum phase with blended features; the second
merge then meets the raw snippet again with the same score, and which copy comes first
changes the rank-aligned blend. To reproduce that run exactly (`memory.merge_tie_order =
'torch'`), the merge order is computed on the host by `std_sort_descending`, an emulation of
that algorithm checked against torch on arrays full of ties.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_THRESHOLD = 16  # libstdc++'s _S_threshold: introsort stops above it, insertion sort below


class _Std:
  """libstdc++'s <algorithm> internals on an index array, with the comparator `a > b`.

  `order` is permuted in place exactly as libstdc++ permutes the (value, index) pairs that
  torch sorts; only values are compared, so equal values end where the algorithm leaves them.
  """

  def __init__(self, keys):
    self.keys = [float(k) for k in keys]
    self.order = list(range(len(self.keys)))

  def greater(self, i, j):
    return self.keys[i] > self.keys[j]

  def median_to_first(self, result, a, b, c):  # std::__move_median_to_first
    order, greater = self.order, self.greater
    x, y, z = order[a], order[b], order[c]
    if greater(x, y):
      pick = b if greater(y, z) else (c if greater(x, z) else a)
    else:
      pick = a if greater(x, z) else (c if greater(y, z) else b)
    order[result], order[pick] = order[pick], order[result]

  def partition_pivot(self, first, last):  # std::__unguarded_partition_pivot
    order, greater = self.order, self.greater
    self.median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
    pivot, lo, hi = first, first + 1, last
    while True:
      while greater(order[lo], order[pivot]):
        lo += 1
      hi -= 1
      while greater(order[pivot], order[hi]):
        hi -= 1
      if lo >= hi:
        return lo
      order[lo], order[hi] = order[hi], order[lo]
      lo += 1

  def adjust_heap(self, first, hole, length, value):  # std::__adjust_heap on [first, ...)
    order, greater = self.order, self.greater
    at = lambda i: order[first + i]
    top = child = hole
    while child < (length - 1) // 2:
      child = 2 * (child + 1)
      if greater(at(child), at(child - 1)):
        child -= 1
      order[first + hole] = at(child)
      hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
      child = 2 * (child + 1)
      order[first + hole] = at(child - 1)
      hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and greater(at(parent), value):
      order[first + hole] = at(parent)
      hole = parent
      parent = (hole - 1) // 2
    order[first + hole] = value

  def make_heap(self, first, last):
    length = last - first
    for parent in range((length - 2) // 2, -1, -1):
      self.adjust_heap(first, parent, length, self.order[first + parent])

  def pop_heap(self, first, last, result):  # std::__pop_heap
    value = self.order[result]
    self.order[result] = self.order[first]
    self.adjust_heap(first, 0, last - first, value)

  def heap_select(self, first, middle, last):  # std::__heap_select
    self.make_heap(first, middle)
    for i in range(middle, last):
      if self.greater(self.order[i], self.order[first]):
        self.pop_heap(first, middle, i)

  def sort_heap(self, first, last):  # std::__sort_heap
    while last - first > 1:
      last -= 1
      self.pop_heap(first, last, last)

  def linear_insert(self, last):  # std::__unguarded_linear_insert
    order = self.order
    value, prev = order[last], last - 1
    while self.greater(value, order[prev]):
      order[last] = order[prev]
      last, prev = prev, prev - 1
    order[last] = value

  def insertion_sort(self, first, last):  # std::__insertion_sort
    order = self.order
    for i in range(first + 1, last):
      if self.greater(order[i], order[first]):
        value = order[i]
        order[first + 1 : i + 1] = order[first:i]
        order[first] = value
      else:
        self.linear_insert(i)


def _lg2(n: int) -> int:
  return int(math.log2(n))


def std_sort_descending(keys) -> list[int]:
  """The permutation that libstdc++ `std::sort` with `a > b` gives for `keys` (a sequence)."""
  std = _Std(keys)

  def introsort(first, last, depth):
    while last - first > _THRESHOLD:
      if depth == 0:  # std::partial_sort(first, last, last)
        std.heap_select(first, last, last)
        std.sort_heap(first, last)
        return
      depth -= 1
      cut = std.partition_pivot(first, last)
      introsort(cut, last, depth)
      last = cut

  n = len(std.order)
  if n > 1:
    introsort(0, n, 2 * _lg2(n))
    if n > _THRESHOLD:
      std.insertion_sort(0, _THRESHOLD)
      for i in range(_THRESHOLD, n):
        std.linear_insert(i)
    else:
      std.insertion_sort(0, n)
  return std.order


def topk_indices(keys, k: int) -> list[int]:
  """The indices `torch.topk(keys, k)` (CPU, largest) returns, as a set (in index order).

  torch's CPU top-k (`topk_impl_loop`) runs `std::partial_sort` when k * 64 <= n and
  `std::nth_element` otherwise, on (value, index) pairs compared by value only, and takes
  the first k pairs: with equal values at the k-th place, which of them are kept depends on
  the whole array.
  """
  std = _Std(keys)
  n = len(std.order)
  if k <= 0:
    return []
  if k >= n:
    return list(range(n))
  if k * 64 <= n:
    std.heap_select(0, k, n)
  else:  # std::nth_element(first, first + k - 1, last): libstdc++'s introselect
    first, last, nth, depth = 0, n, k - 1, 2 * _lg2(n)
    while last - first > 3:
      if depth == 0:
        std.heap_select(first, nth + 1, last)
        std.order[first], std.order[nth] = std.order[nth], std.order[first]
        break
      depth -= 1
      cut = std.partition_pivot(first, last)
      if cut <= nth:
        first = cut
      else:
        last = cut
    else:
      std.insertion_sort(first, last)
  return sorted(std.order[:k])


def _host_merge_order(row_scores, scores, valid):
  slots = row_scores.shape[0]
  where = np.flatnonzero(valid)
  keys = np.concatenate([row_scores, scores[where]])
  top = np.asarray(std_sort_descending(keys)[:slots], np.int64)
  # Row slots keep their index; the k-th valid snippet maps to slots + its snippet index.
  snippet = np.append(where, 0)[np.clip(top - slots, 0, len(where))]  # 0: unused branch
  out = np.where(top < slots, top, slots + snippet)
  return out.astype(np.int32)


def merge_order(row_scores: jax.Array, scores: jax.Array, valid: jax.Array) -> jax.Array:
  """The top-N positions of torch's descending sort of [row scores, valid snippet scores].

  Without equal positive scores among the top N + 1 the sorted order is unique, and
  `lax.top_k` gives it on the device; only a tie there (a snippet that meets itself, or
  two snippets with the same score: duplicate snippets, or the same video seen again with
  the same parameters) calls the host emulation of torch's unstable sort. Unfilled row
  slots (score 0, zero features) are interchangeable, so their ties do not count.

  Args:
    row_scores: [N] the row's stored scores.
    scores: [T] the snippets' scores; only `valid` [T] ones (salient, in index order) are
      in the sorted array, as in the authors' code.
  Returns:
    [N] int32: i < N is row slot i, N + t is snippet t.
  """
  row_scores = jax.lax.stop_gradient(row_scores)
  scores = jax.lax.stop_gradient(scores)
  slots = row_scores.shape[0]
  keys = jnp.concatenate([row_scores, jnp.where(valid, scores, -jnp.inf)])
  top_scores, top = jax.lax.top_k(keys, min(slots + 1, keys.shape[0]))
  tied = jnp.any((top_scores[1:] == top_scores[:-1]) & (top_scores[1:] > 0))
  shape = jax.ShapeDtypeStruct(row_scores.shape, jnp.int32)

  def on_host(row_scores, scores, valid):
    return jax.pure_callback(
      _host_merge_order, shape, row_scores, scores, valid, vmap_method='sequential'
    )

  def on_device(*_):
    return top[:slots].astype(jnp.int32)

  return jax.lax.cond(tied, on_host, on_device, row_scores, scores, valid)
