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


def std_sort_descending(keys) -> list[int]:
  """The permutation that libstdc++ `std::sort` with `a > b` gives for `keys` (a sequence)."""
  keys = [float(k) for k in keys]
  order = list(range(len(keys)))
  greater = lambda i, j: keys[i] > keys[j]

  def median_to_first(result, a, b, c):
    x, y, z = order[a], order[b], order[c]
    if greater(x, y):
      pick = b if greater(y, z) else (c if greater(x, z) else a)
    else:
      pick = a if greater(x, z) else (c if greater(y, z) else b)
    order[result], order[pick] = order[pick], order[result]

  def partition(first, last, pivot):
    while True:
      while greater(order[first], order[pivot]):
        first += 1
      last -= 1
      while greater(order[pivot], order[last]):
        last -= 1
      if first >= last:
        return first
      order[first], order[last] = order[last], order[first]
      first += 1

  def sift(heap, hole, length, value):  # std::__adjust_heap
    top = child = hole
    while child < (length - 1) // 2:
      child = 2 * (child + 1)
      if greater(heap[child], heap[child - 1]):
        child -= 1
      heap[hole] = heap[child]
      hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
      child = 2 * (child + 1)
      heap[hole] = heap[child - 1]
      hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and greater(heap[parent], value):
      heap[hole] = heap[parent]
      hole = parent
      parent = (hole - 1) // 2
    heap[hole] = value

  def heap_sort(first, last):  # std::partial_sort(first, last, last)
    heap = order[first:last]
    length = len(heap)
    for parent in range((length - 2) // 2, -1, -1):
      sift(heap, parent, length, heap[parent])
    for end in range(length - 1, 0, -1):
      value = heap[end]
      heap[end] = heap[0]
      sift(heap, 0, end, value)
    order[first:last] = heap

  def introsort(first, last, depth):
    while last - first > _THRESHOLD:
      if depth == 0:
        heap_sort(first, last)
        return
      depth -= 1
      median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
      cut = partition(first + 1, last, first)
      introsort(cut, last, depth)
      last = cut

  def linear_insert(last):
    value, prev = order[last], last - 1
    while greater(value, order[prev]):
      order[last] = order[prev]
      last, prev = prev, prev - 1
    order[last] = value

  def insertion_sort(first, last):
    for i in range(first + 1, last):
      if greater(order[i], order[first]):
        value = order[i]
        order[first + 1 : i + 1] = order[first:i]
        order[first] = value
      else:
        linear_insert(i)

  n = len(order)
  if n > 1:
    introsort(0, n, 2 * int(math.log2(n)))
    if n > _THRESHOLD:
      insertion_sort(0, _THRESHOLD)
      for i in range(_THRESHOLD, n):
        linear_insert(i)
    else:
      insertion_sort(0, n)
  return order


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

  Args:
    row_scores: [N] the row's stored scores.
    scores: [T] the snippets' scores; only `valid` [T] ones (salient, in index order) are
      in the sorted array, as in the authors' code.
  Returns:
    [N] int32: i < N is row slot i, N + t is snippet t.
  """
  shape = jax.ShapeDtypeStruct(row_scores.shape, jnp.int32)
  return jax.pure_callback(
    _host_merge_order,
    shape,
    jax.lax.stop_gradient(row_scores),
    jax.lax.stop_gradient(scores),
    valid,
    vmap_method='sequential',
  )
