"""The unrolled Threefry dropout masks (issf_jax/model/random_bits.py) against jax.random."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model import random_bits
from issf_jax.model.heads import dropout


def _keys(n, seed=7):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


def test_threefry_known_answer():
  """Random123's known-answer vectors for Threefry-2x32 with 20 rounds."""
  u32 = lambda *v: [np.uint32(x) for x in v]  # noqa: E731
  cases = [
    (u32(0, 0), u32(0, 0), u32(0x6B200159, 0x99BA4EFE)),
    (u32(0xFFFFFFFF, 0xFFFFFFFF), u32(0xFFFFFFFF, 0xFFFFFFFF), u32(0x1CB996FC, 0xBB002BE7)),
    (u32(0x13198A2E, 0x03707344), u32(0x243F6A88, 0x85A308D3), u32(0xC4923A9C, 0x483DF7A0)),
  ]
  for key, count, want in cases:
    got = random_bits.threefry2x32(*map(jnp.uint32, key), *map(jnp.uint32, count))
    assert [int(w) for w in got] == [int(w) for w in want]


@pytest.mark.parametrize('keep', [0.4, 0.5, 1 / 3, 0.9999])
def test_masks_are_jax_randoms(keep):
  keys = _keys(3)
  assert random_bits.supported(keys)
  for shape in ((5, 7), (33, 300)):
    want = jax.jit(jax.vmap(lambda k, shape=shape: jax.random.bernoulli(k, keep, shape)))(keys)
    np.testing.assert_array_equal(jax.jit(random_bits.keep_mask, static_argnums=(1, 2))(
      keys, keep, shape), want)  # fmt: skip


def test_dropout_draws_what_it_drew_before():
  """The embedding's dropout: the masks of `jax.random.bernoulli` per video, as before the
  unrolled hash, so runs and resumes across the change draw the same numbers."""
  keys = _keys(2, seed=3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 11, 64)).astype(np.float32))
  keep = jax.jit(jax.vmap(lambda k, xi: jax.random.bernoulli(k, 0.4, xi.shape)))(keys, x)
  got = jax.jit(dropout, static_argnums=1)(x, 0.6, keys)
  np.testing.assert_array_equal(got, jnp.where(keep, x / 0.4, 0.0))
  rbg = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3, impl='rbg'), i))(jnp.arange(2))
  assert not random_bits.supported(rbg)
  assert dropout(x, 0.6, rbg).shape == x.shape  # other key kinds: jax.random itself


def test_dropout_with_the_true_snippets_draws_the_same_masks():
  """Given the true snippets (the embedding's call), the mask is made in a conditional (once
  per step instead of once per consumer): on the true rows the same values as without, and
  under a gradient too; a video with no true snippet takes the all-dropped branch."""
  keys = _keys(1, seed=5)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 13, 32)).astype(np.float32))
  mask = jnp.arange(13)[None] < 9
  drop = jax.jit(dropout, static_argnums=1)
  want = np.asarray(drop(x, 0.6, keys)) * np.asarray(mask)[..., None]
  got = np.asarray(drop(x, 0.6, keys, mask)) * np.asarray(mask)[..., None]
  assert got.tobytes() == want.tobytes() and (got != 0).any() and (got == 0).any()

  def loss(x, with_mask):
    y = dropout(x, 0.6, keys, mask if with_mask else None) * mask[..., None]
    return jnp.sum(jnp.sin(y))

  grads = [jax.jit(jax.grad(loss), static_argnums=1)(x, m) for m in (False, True)]
  assert np.asarray(grads[0]).tobytes() == np.asarray(grads[1]).tobytes()
  none = jnp.zeros_like(mask)
  assert not np.asarray(drop(x, 0.6, keys, none)).any()
