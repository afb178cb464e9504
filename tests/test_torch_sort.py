"""The emulation of torch's CPU `torch.sort(descending=True)` order (issf_jax/torch_sort.py).

The expected permutations were printed by torch 2.13.0 (CPU build) for these exact inputs;
they are full of equal values, where libstdc++'s introsort is not stable.
"""

import jax
import numpy as np

from issf_jax import torch_sort

TORCH_CASES = [
  (
    [i % 3 for i in range(40)],
    [29, 20, 17, 23, 14, 26, 11, 8, 32, 5, 35, 2, 38, 31, 1, 34, 28, 25, 37, 22, 16, 13, 4, 10,
     19, 7, 30, 39, 0, 3, 36, 6, 33, 9, 12, 27, 15, 24, 18, 21],
  ),
  (
    [5] * 20 + [7] * 5 + [5] * 10,
    [20, 21, 22, 23, 24, 26, 18, 19, 25, 17, 27, 28, 29, 30, 31, 32, 33, 34, 9, 1, 2, 3, 4, 5,
     6, 7, 8, 0, 10, 11, 12, 13, 14, 15, 16],
  ),
  (
    [(i * 7) % 5 for i in range(70)],
    [2, 67, 37, 32, 22, 7, 62, 52, 42, 27, 12, 57, 17, 47, 49, 69, 24, 44, 29, 39, 34, 19, 54,
     14, 59, 9, 64, 4, 51, 56, 46, 61, 41, 66, 1, 36, 31, 6, 11, 26, 16, 21, 33, 68, 3, 63, 8,
     58, 13, 53, 18, 48, 23, 38, 43, 28, 60, 0, 35, 5, 65, 40, 30, 10, 20, 45, 25, 15, 55, 50],
  ),
]  # fmt: skip


def test_matches_torch_on_ties():
  for keys, expected in TORCH_CASES:
    assert torch_sort.std_sort_descending(keys) == expected


def test_is_a_descending_sort_and_stable_up_to_16():
  rng = np.random.default_rng(0)
  for n in (0, 1, 2, 16, 17, 100, 1000):
    keys = rng.integers(0, 4, n).astype(float)
    order = torch_sort.std_sort_descending(keys)
    assert sorted(order) == list(range(n))
    assert np.all(np.diff(keys[order]) <= 0)
    if n <= 16:  # insertion sort only: equal keys keep their order
      assert order == sorted(range(n), key=lambda i: -keys[i])


def test_merge_order_maps_back_to_row_slots_and_snippets():
  row = np.asarray([0.9, 0.5, 0.1], np.float32)
  scores = np.asarray([0.7, 0.95, 0.2, 0.6], np.float32)
  valid = np.asarray([True, False, True, True])  # snippet 1 is not salient
  order = np.asarray(torch_sort.merge_order(row, scores, valid))
  np.testing.assert_array_equal(order, [0, 3 + 0, 3 + 3])  # 0.9, 0.7, 0.6
  empty = np.asarray(torch_sort.merge_order(row, scores, np.zeros(4, bool)))
  np.testing.assert_array_equal(empty, [0, 1, 2])


# (keys, k, the indices torch 2.13.0's CPU `torch.topk(keys, k)` returned, in index order).
# Equal values at the k-th place: lower-index-first would keep [0, 1, 2, 5], [0],
# [0, 3, 8, 13] and [0, ..., 6, 7, 8, 10, 11] instead.
TORCH_TOPK_CASES = [
  ([2.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 1.0, 0.0, 1.0, 0.0], 4, [0, 1, 5, 6]),
  ([1.0, 1.0, 0.0, 1.0, 1.0], 1, [1]),
  (
    [0.5400051474571228, -0.6026772856712341, -1.2229840755462646, 0.5400051474571228,
     -1.4314448833465576, 0.5400051474571228, 0.5400051474571228, -0.7113605737686157,
     0.6978532671928406, -0.5325754284858704, -0.1593785285949707, -2.073991537094116,
     -0.33974072337150574, 0.7686967849731445],
    4,
    [0, 6, 8, 13],
  ),
  ([0.0, 3.0, 1.0, 2.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0], 11,
   [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]),
]  # fmt: skip


def test_topk_matches_torch_on_ties():
  for keys, k, expected in TORCH_TOPK_CASES:
    assert torch_sort.topk_indices(keys, k) == expected


def test_topk_is_a_top_k_for_every_size_and_k():
  rng = np.random.default_rng(1)
  for n in (1, 2, 3, 4, 17, 64, 200, 700):  # both of torch's paths: k * 64 <= n and above
    keys = rng.integers(0, 5, n).astype(float)
    for k in sorted({0, 1, 2, n // 64, max(n // 2 - 1, 0), n - 1, n}):
      chosen = torch_sort.topk_indices(keys, k)
      assert len(chosen) == min(k, n) and chosen == sorted(set(chosen))
      rest = np.delete(keys, chosen)
      assert not chosen or not rest.size or keys[chosen].min() >= rest.max()


def test_merge_order_on_device_without_ties_and_on_the_host_with_them():
  """Without ties the jitted path is `top_k`; with an equal score at the top it is torch's."""
  row = np.asarray([0.9, 0.6, 0.0], np.float32)  # the last slot unfilled: score 0
  scores = np.asarray([0.6, 0.8, 0.3], np.float32)
  valid = np.ones(3, bool)
  order = np.asarray(jax.jit(torch_sort.merge_order)(row, scores, valid))
  keys = np.concatenate([row, scores])
  expected = torch_sort.std_sort_descending(keys)[:3]  # 0.9, 0.8, then one of the two 0.6
  np.testing.assert_array_equal(order, expected)
  no_tie = np.asarray(jax.jit(torch_sort.merge_order)(row, scores * 0.5, valid))
  np.testing.assert_array_equal(no_tie, [0, 1, 3 + 1])  # 0.9, 0.6, 0.4
