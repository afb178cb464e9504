"""The windowed channel-unit MLPs (one video) against the plain form that runs both on every row.

`own_unit_logits` sorts the rows and runs each unit on a window (issf_jax/model/channel_units.py);
its hand-written gradient must equal autodiff of `paired_logits`, for every salient count
(empty set, one row, each window boundary, all rows), lengths not divisible by the window
count, and with and without biases.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model import channel_units

D, H = 32, 8


def _units(rng, bias: bool):
  def unit():
    w = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32) * 0.3)
    return (w(D, H), w(H) if bias else None), (w(H, D), w(D) if bias else None)

  return unit(), unit()


def _loss(fn, salient):
  # A non-linear read-out, so that every row's gradient differs.
  return lambda x, a, b: (jnp.sin(fn(x, salient, a, b)) ** 2).sum()


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('length', [5, 33])
def test_windowed_equals_paired_values_and_gradients(bias, length):
  rng = np.random.default_rng(length + 100 * bias)
  unit_a, unit_b = _units(rng, bias)
  k = channel_units.WINDOWS
  counts = sorted({0, 1, length // k, length // 2, length // 2 + 1, length - 1, length})
  grad = lambda fn: jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))
  for count in counts:
    x = jnp.asarray(rng.normal(size=(1, length, D)).astype(np.float32))
    salient = np.zeros((1, length), bool)
    salient[0, rng.permutation(length)[:count]] = True
    salient = jnp.asarray(salient)
    want, want_grads = grad(_loss(channel_units.paired_logits, salient))(x, unit_a, unit_b)
    got, got_grads = grad(_loss(channel_units.own_unit_logits, salient))(x, unit_a, unit_b)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    leaves_want, leaves_got = jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)
    assert len(leaves_want) == len(leaves_got) == (9 if bias else 5)
    for w, g in zip(leaves_want, leaves_got, strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max() + 1e-30))


def test_each_unit_gets_only_its_rows_gradient():
  """All rows salient: the non-salient unit's gradient is exactly zero (not merely small)."""
  rng = np.random.default_rng(0)
  unit_a, unit_b = _units(rng, bias=True)
  x = jnp.asarray(rng.normal(size=(1, 12, D)).astype(np.float32))
  salient = jnp.ones((1, 12), bool)
  grads = jax.grad(_loss(channel_units.own_unit_logits, salient), argnums=2)(x, unit_a, unit_b)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_several_videos_take_the_paired_form():
  rng = np.random.default_rng(1)
  unit_a, unit_b = _units(rng, bias=False)
  x = jnp.asarray(rng.normal(size=(2, 9, D)).astype(np.float32))
  salient = jnp.asarray(rng.random((2, 9)) < 0.5)
  np.testing.assert_array_equal(
    channel_units.own_unit_logits(x, salient, unit_a, unit_b),
    channel_units.paired_logits(x, salient, unit_a, unit_b),
  )
