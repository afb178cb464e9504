"""One symbolic-T trace lowers the programs of every length in its range (length_polymorphic.py).

Oracles: the program lowered from the export gives the values of the function traced at that
length; a Python decision on T that the range leaves open makes the export refuse (None), so
the caller lowers per length; `covers` takes only the export's shapes and range; a
`ProgramSet` compiles each length once, ahead of need; the memory initialisation's padded
lengths, by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import sampling
from issf_jax.train.length_polymorphic import LengthPolymorphic, ProgramSet


def _pool(scale, batch, *, threshold=4):
  x, mask = batch['features'], batch['mask']
  # Decided by the range [low, high] when low >= threshold; open when it straddles it.
  head = x[:, :threshold] if x.shape[1] >= threshold else x
  pooled = (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
  return scale * pooled + head.mean(1), jnp.cumsum(x, axis=1)


def _batch(length, dim=3, seed=0):
  rng = np.random.default_rng(seed + length)
  mask = np.arange(length)[None] < rng.integers(1, length + 1, (2, 1))
  return {
    'features': rng.normal(size=(2, length, dim)).astype(np.float32),
    'mask': mask,
    'labels': np.ones((2, 5), np.float32),
  }


def test_programs_from_one_trace_give_the_per_length_values():
  jitted = jax.jit(_pool)
  poly = LengthPolymorphic.create(
    jitted, (jnp.float32(2.0), _batch(6)), batch_index=1, time_keys=('features', 'mask'),
    lengths=[6, 9, 17],
  )  # fmt: skip
  assert poly is not None and (poly.low, poly.high) == (6, 17)
  for length in (6, 11, 17):
    batch = _batch(length)
    got = poly.lower(jnp.float32(2.0), batch).compile()(jnp.float32(2.0), batch)
    want = jitted(jnp.float32(2.0), batch)
    for g, w in zip(got, want, strict=True):
      assert g.shape == w.shape
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_an_open_decision_on_the_length_refuses_the_export():
  poly = LengthPolymorphic.create(
    jax.jit(_pool), (jnp.float32(2.0), _batch(6)), batch_index=1,
    time_keys=('features', 'mask'), lengths=[2, 9],
  )  # fmt: skip
  assert poly is None  # T >= 4 holds for some T in [2, 9], not all: one program per length


def test_covers_only_its_shapes_and_range():
  poly = LengthPolymorphic.create(
    jax.jit(_pool), (jnp.float32(2.0), _batch(6)), batch_index=1,
    time_keys=('features', 'mask'), lengths=[6, 12],
  )  # fmt: skip
  assert poly.covers(_batch(6)) and poly.covers(_batch(12)) and poly.covers(_batch(8))
  assert not poly.covers(_batch(5)) and not poly.covers(_batch(13))
  assert not poly.covers(_batch(8, dim=4))  # another feature width
  ragged = dict(_batch(8), mask=np.ones((2, 9), bool))
  assert not poly.covers(ragged)  # features and mask of different lengths


def test_program_set_compiles_each_length_once_ahead_of_need():
  fn = jax.jit(_pool)
  programs = ProgramSet(fn, batch_index=1)
  assert programs.precompile((jnp.float32(2.0), _batch(6)), [9, 6, 12, 9]) == 3
  assert programs.symbolic_ranges() == [(6, 12)]
  assert len(programs.compile_seconds) == 3
  batch = _batch(9, seed=4)
  got = programs.get(jnp.float32(2.0), batch)(jnp.float32(2.0), batch)
  assert len(programs.compile_seconds) == 3  # precompiled
  np.testing.assert_allclose(np.asarray(got[0]), np.asarray(fn(jnp.float32(2.0), batch)[0]),
                             rtol=1e-6, atol=1e-6)  # fmt: skip
  programs.get(jnp.float32(2.0), _batch(7))  # in the range, met later: compiled once, now
  programs.get(jnp.float32(2.0), _batch(7))
  assert len(programs.compile_seconds) == 4
  per_length = ProgramSet(fn, batch_index=1, symbolic=False)
  assert per_length.precompile((jnp.float32(2.0), _batch(6)), [6, 12]) == 2
  assert per_length.symbolic_ranges() == []


def test_memory_initialisation_padded_lengths_by_hand():
  lengths = np.array([5, 70, 3, 130, 64])
  # By length: (3, 5) -> 64, (64, 70) -> 128, (130, padding row) -> 192.
  assert sampling.eval_padded_lengths(lengths, 2, 'length', 64) == [64, 128, 192]
  # Manifest order: (5, 70) -> 128, (3, 130) -> 192, (64) -> 64.
  assert sampling.eval_padded_lengths(lengths, 2, 'manifest', 64) == [128, 192, 64]
