"""`model.matmul_dtype='bfloat16'`: bfloat16 operands, float32 accumulation, forward and backward.

Oracles: products of bfloat16 numbers are exact in float32, so a bfloat16 product equals the
float32 product of the operands rounded to bfloat16 (up to the summation order), and its
gradient the float32 products of the cotangent rounded to bfloat16 with the rounded operands;
the windowed channel units in bfloat16 equal the paired form in bfloat16 (the same roundings
in the same places); 'float32' is the plain product.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from issf_jax.model import build_model, channel_units, init_params, precision

EQUATIONS = ('...i,io->...o', 'bqd,bkd->bqk', 'bqk,bkd->bqd')


def _operands(rng, equation):
  shapes = {
    '...i,io->...o': ((2, 5, 12), (12, 7)),
    'bqd,bkd->bqk': ((2, 5, 12), (2, 6, 12)),
    'bqk,bkd->bqd': ((2, 5, 6), (2, 6, 12)),
  }[equation]
  return [jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in shapes]


def _round(x):
  return x.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize('equation', EQUATIONS)
def test_bf16_product_and_gradient_are_the_rounded_float32_ones(equation):
  rng = np.random.default_rng(len(equation))
  a, b = _operands(rng, equation)
  out = precision.einsum(equation, a, b, 'bfloat16')
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, jnp.einsum(equation, _round(a), _round(b)), rtol=1e-6, atol=1e-6)
  # not the float32 product: the operands were rounded
  assert float(jnp.abs(out - jnp.einsum(equation, a, b)).max()) > 1e-4

  cotangent = jnp.asarray(rng.normal(size=out.shape).astype(np.float32))
  _, vjp = jax.vjp(functools.partial(precision.einsum, equation, dtype='bfloat16'), a, b)
  grad_a, grad_b = vjp(cotangent)
  _, want_vjp = jax.vjp(functools.partial(jnp.einsum, equation), _round(a), _round(b))
  want_a, want_b = want_vjp(_round(cotangent))
  assert grad_a.dtype == grad_b.dtype == jnp.float32
  np.testing.assert_allclose(grad_a, want_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_b, want_b, rtol=1e-5, atol=1e-5)


def test_float32_is_the_plain_product_and_unknown_dtypes_are_refused():
  a, b = _operands(np.random.default_rng(0), 'bqd,bkd->bqk')
  np.testing.assert_array_equal(
    precision.einsum('bqd,bkd->bqk', a, b), jnp.einsum('bqd,bkd->bqk', a, b)
  )
  with pytest.raises(ValueError, match='matmul_dtype'):
    precision.einsum('bqd,bkd->bqk', a, b, 'float16')


def test_windowed_channel_units_in_bf16_equal_the_paired_form_in_bf16():
  rng = np.random.default_rng(3)
  dim, hidden, length = 32, 8, 21

  def unit():
    w = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32) * 0.3)  # noqa: E731
    return (w(dim, hidden), w(hidden)), (w(hidden, dim), w(dim))

  unit_a, unit_b = unit(), unit()
  x = jnp.asarray(rng.normal(size=(1, length, dim)).astype(np.float32))
  salient = jnp.asarray(rng.random((1, length)) < 0.4)

  def loss(fn, dtype):
    return lambda x, a, b: (jnp.sin(fn(x, salient, a, b, dtype=dtype)) ** 2).sum()

  grad = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2))(x, unit_a, unit_b)  # noqa: E731
  want, want_grads = grad(loss(channel_units.paired_logits, 'bfloat16'))
  got, got_grads = grad(loss(channel_units.own_unit_logits, 'bfloat16'))
  full, _ = grad(loss(channel_units.own_unit_logits, 'float32'))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(float(got) - float(full)) > 1e-6 * abs(float(full))  # bfloat16 did take effect
  for w, g in zip(jax.tree.leaves(want_grads), jax.tree.leaves(got_grads), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))


def test_bf16_model_keeps_float32_parameters_and_is_close_to_float32():
  config = synthetic.get_config()
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(1, 24, config.model.feature_dim)).astype(np.float32))
  mask = jnp.ones((1, 24), bool)
  outputs = {}
  for dtype in ('float32', 'bfloat16'):
    config.model.matmul_dtype = dtype
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    outputs[dtype] = model.apply({'params': params}, features, mask, train=False)
  for branch in ('base', 'brm'):
    want, got = outputs['float32'][branch]['p_ca'], outputs['bfloat16'][branch]['p_ca']
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=2e-2)
  assert not np.array_equal(outputs['float32']['brm']['p_ca'], outputs['bfloat16']['brm']['p_ca'])
