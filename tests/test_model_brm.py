"""Boundary refinement module (Eq. 4-6, docs/design.md §2.3, and the BRM oracles of §10).

One jitted program applies every variant (and every attention-logit kind) to one [5, 12, 64]
batch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model import refinement
from issf_jax.model.refinement import (
  BoundaryRefinement,
  ChannelUnit,
  masked_softmax,
  temporal_unit,
)
from issf_jax.recipes import ATTN_LOGITS, BRM_VARIANTS
from tests.conftest import SMALL_D, fast_jit

B, T, D = 5, 12, SMALL_D
SIGMA = 0.88
REDUCTION = 4
LENGTHS = np.array([12, 7, 1, 2, 12])


# Every variant with the default logits, and the other logit kinds on two variants (the kind
# only changes the temporal unit, which every variant shares).
PAIRS = [(variant, 'dot') for variant in BRM_VARIANTS] + [
  ('weighted', 'dot_sqrt_d'),
  ('weighted', 'cosine5'),
  ('temporal_only', 'cosine5'),
]


@fast_jit
def _all_variants(params, feats, mask, salient):
  out = {}
  for variant, kind in PAIRS:
    brm = BoundaryRefinement(REDUCTION, SIGMA, variant, kind)
    out[variant, kind] = brm.apply({'params': params}, feats, mask, salient)
  return out


@fast_jit
def _channel(unit_params, feats):
  return ChannelUnit(REDUCTION).apply({'params': unit_params}, feats)


@pytest.fixture(scope='module')
def brm_params(small_params):
  return small_params['brm']


def _mask():
  return np.arange(T)[None, :] < LENGTHS[:, None]


def _feats(seed, scale=0.3):
  rng = np.random.default_rng(seed)
  feats = (np.abs(rng.normal(size=(B, T, D))) * scale).astype(np.float32)
  return feats * _mask()[..., None]


def _salient(seed):
  """Salient sets: mixed; one row; the whole (length-1) video; empty; everything."""
  rng = np.random.default_rng(seed)
  salient = np.zeros((B, T), bool)
  salient[0] = rng.random(T) < 0.5
  salient[1, 3] = True
  salient[2, 0] = True
  salient[4] = True
  return salient & _mask()


# ---------------------------------------------------------------- float64 reference


def _softmax(z, axis=-1):
  z = z - z.max(axis, keepdims=True)
  return np.exp(z) / np.exp(z).sum(axis, keepdims=True)


def _ref_channel(p, f):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  hidden = np.maximum(f @ p['fc1']['kernel'] + p['fc1']['bias'], 0)
  return _softmax(hidden @ p['fc2']['kernel'] + p['fc2']['bias']) * f + f


def _ref_temporal(queries, keys, kind):
  if kind == 'dot':
    logits = queries @ keys.T
  elif kind == 'dot_sqrt_d':
    logits = queries @ keys.T / math.sqrt(queries.shape[-1])
  else:
    n = lambda v: v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)
    logits = 5.0 * n(queries) @ n(keys).T
  return _softmax(logits) @ keys


def _ref_brm(params, f, salient, variant, kind):
  """Eq. 4-6 literally on one unpadded video: gather F^a = F[b] and F^b = F[~b]."""
  f = np.asarray(f, np.float64)
  if variant == 'self':
    return _ref_temporal(f, _ref_channel(params['salient_unit'], f), kind)
  f_a, f_b = f[salient], f[~salient]
  if variant == 'temporal_only':
    fh_a, fh_b = f_a, f_b
  else:
    fh_a = _ref_channel(params['salient_unit'], f_a)
    fh_b = _ref_channel(params['non_salient_unit'], f_b)
  term_a = _ref_temporal(f, fh_a, kind) if len(f_a) and variant != 'no_salient' else None
  term_b = _ref_temporal(f, fh_b, kind) if len(f_b) and variant != 'no_non_salient' else None
  if term_a is not None and term_b is not None:
    w_a, w_b = (1.0, 1.0) if variant == 'add' else (SIGMA, 1 - SIGMA)
    return w_a * term_a + w_b * term_b
  if term_a is not None:
    return term_a
  if term_b is not None:
    return term_b
  return f


# ---------------------------------------------------------------- tests


def test_matches_the_literal_gather_reference(brm_params):
  feats, mask, salient = _feats(0), _mask(), _salient(1)
  out = jax.tree.map(np.asarray, _all_variants(brm_params, feats, mask, salient))
  for (variant, kind), refined in out.items():
    assert np.all(refined[~mask] == 0), (variant, kind)
    for b, length in enumerate(LENGTHS):
      want = _ref_brm(brm_params, feats[b, :length], salient[b, :length], variant, kind)
      np.testing.assert_allclose(
        refined[b, :length],
        want,
        rtol=2e-5,
        atol=2e-5 * np.abs(want).max(),
        err_msg=f'{variant}/{kind} video {b}',
      )


def test_zero_last_layer_gives_uniform_channel_weights(brm_params):
  unit = jax.tree.map(np.asarray, brm_params['salient_unit'])
  unit['fc2'] = {k: np.zeros_like(v) for k, v in unit['fc2'].items()}
  feats = _feats(2, scale=3.0)
  np.testing.assert_allclose(_channel(unit, feats), feats * (1 + 1 / D), rtol=1e-6)


def test_single_salient_row_is_every_row_of_the_salient_term(brm_params):
  feats, mask = _feats(3), _mask()
  salient = np.zeros((B, T), bool)
  rows = np.array([5, 2, 0, 1, 11])
  salient[np.arange(B), rows] = True
  out = _all_variants(brm_params, feats, mask, salient)
  fh_a = np.asarray(_channel(brm_params['salient_unit'], feats))
  refined = np.asarray(out['no_non_salient', 'dot'])
  for b, length in enumerate(LENGTHS):
    want = np.broadcast_to(fh_a[b, rows[b]], (length, D))
    np.testing.assert_allclose(refined[b, :length], want, rtol=1e-5)


def test_one_row_per_set(brm_params):
  """A 2-snippet video, one salient and one not: every row is the same convex mix (Eq. 6)."""
  feats, mask = _feats(4), _mask()
  salient = np.zeros((B, T), bool)
  salient[3, 1] = True  # video 3 has length 2: v_a = F[1], v_b = F[0]
  out = jax.tree.map(np.asarray, _all_variants(brm_params, feats, mask, salient))
  fh_a = np.asarray(_channel(brm_params['salient_unit'], feats))[3]
  fh_b = np.asarray(_channel(brm_params['non_salient_unit'], feats))[3]
  v_a, v_b = feats[3, 1], feats[3, 0]
  expected = {
    'weighted': SIGMA * fh_a[1] + (1 - SIGMA) * fh_b[0],
    'add': fh_a[1] + fh_b[0],
    'no_salient': fh_b[0],
    'no_non_salient': fh_a[1],
    'temporal_only': SIGMA * v_a + (1 - SIGMA) * v_b,
  }
  for variant, kind in PAIRS:
    if variant in expected:
      got = out[variant, kind][3, :2]
      want = np.stack([expected[variant]] * 2)
      np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f'{variant}/{kind}')


def test_empty_sets_drop_their_term(brm_params):
  feats, mask = _feats(5), _mask()
  none = np.zeros((B, T), bool)
  out_none = _all_variants(brm_params, feats, mask, none)
  out_all = _all_variants(brm_params, feats, mask, mask)
  for variant in ('weighted', 'add'):
    np.testing.assert_allclose(out_none[variant, 'dot'], out_none['no_salient', 'dot'], rtol=1e-6)
    np.testing.assert_allclose(out_all[variant, 'dot'], out_all['no_non_salient', 'dot'], rtol=1e-6)
  # No usable set at all: F is kept.
  np.testing.assert_array_equal(out_all['no_salient', 'dot'], feats)
  np.testing.assert_array_equal(out_none['no_non_salient', 'dot'], feats)
  for out in (out_none, out_all):
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


def test_masked_softmax_rows_sum_to_one():
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(4, 6, 9)).astype(np.float32) * 30
  logits[0, 0, 0] = 1e30
  logits[0, 1, :] = -1e30
  key_mask = rng.random((4, 6, 9)) < 0.4
  key_mask[1, 2] = False  # a row with no valid key
  key_mask[2, 3] = True
  weights, grads = fast_jit(
    lambda z, m: (masked_softmax(z, m), jax.grad(lambda z: (masked_softmax(z, m) ** 2).sum())(z))
  )(logits, key_mask)
  weights = np.asarray(weights)
  has_key = key_mask.any(-1)
  np.testing.assert_allclose(weights.sum(-1)[has_key], 1.0, rtol=1e-6)
  assert np.all(weights.sum(-1)[~has_key] == 0)
  assert np.all(weights[~key_mask] == 0)
  assert np.isfinite(weights).all() and np.isfinite(np.asarray(grads)).all()


def test_duplicate_keys_order_invariance(brm_params):
  feats, mask = _feats(7), _mask()
  feats[0, 2] = feats[0, 5]  # duplicate keys in both sets
  feats[0, 7] = feats[0, 9]
  feats[0, 8] = feats[0, 9]
  salient = np.zeros((B, T), bool)
  salient[0, [2, 5, 9, 10]] = True
  salient[1:] = _salient(8)[1:]
  # Permute snippets within the salient set and within the non-salient set of video 0.
  perm = np.arange(T)
  perm[[2, 5, 9, 10]] = [10, 9, 2, 5]
  perm[[0, 1, 3, 7, 8, 11]] = [8, 11, 7, 3, 0, 1]
  assert np.array_equal(salient[0, perm], salient[0])
  permuted = feats.copy()
  permuted[0] = feats[0, perm]
  out = _all_variants(brm_params, feats, mask, salient)
  out_p = _all_variants(brm_params, permuted, mask, salient)
  for name in out:
    ref = np.asarray(out[name])[0, perm]
    np.testing.assert_allclose(
      out_p[name][0], ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max(), err_msg=str(name)
    )
    np.testing.assert_array_equal(out_p[name][1:], out[name][1:])

  # The temporal unit alone: queries fixed, keys (with duplicates) reordered.
  queries = jnp.asarray(feats[:1])
  key_mask = jnp.asarray(salient[:1] | True)
  for kind in ATTN_LOGITS:
    unit = fast_jit(lambda q, k, m, kind=kind: temporal_unit(q, k, m, kind))
    a = unit(queries, queries, key_mask)
    b = unit(queries, queries[:, perm], key_mask)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * float(jnp.abs(a).max()))


def test_unknown_options_raise(brm_params):
  feats, mask = _feats(9), _mask()
  with pytest.raises(ValueError, match='brm_variant'):
    jax.eval_shape(
      lambda: BoundaryRefinement(variant='nope').apply({'params': brm_params}, feats, mask, mask)
    )
  with pytest.raises(ValueError, match='attn_logits'):
    jax.eval_shape(lambda: refinement.attention_logits(feats, feats, 'nope', 'btd,bsd->bts'))


def test_channel_attention_gradient_is_autodiffs():
  """Eq. 4's outer part has a written-out gradient (an einsum for the softmax's row products):
  its values are the formula's bit for bit, its gradient autodiff's of the formula."""
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(2, 9, 40)).astype(np.float32)
  feats[1, 6:] = 0.0  # padding rows
  feats, logits = jnp.asarray(feats), jnp.asarray(rng.normal(size=(2, 9, 40)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=feats.shape).astype(np.float32))

  def formula(f, z):
    return jax.nn.softmax(z, axis=-1) * f + f

  loss = lambda fn: lambda f, z: (jnp.sin(fn(f, z)) * weights).sum()  # noqa: E731
  np.testing.assert_array_equal(
    refinement._channel_attention(feats, logits), formula(feats, logits)
  )
  got = jax.jit(jax.grad(loss(refinement._channel_attention), argnums=(0, 1)))(feats, logits)
  want = jax.jit(jax.grad(loss(formula), argnums=(0, 1)))(feats, logits)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1][1, 6:], 0.0)  # zero rows: no gradient to the logits


def test_set_softmax_is_two_masked_softmaxes():
  """Eq. 5-6's weights w_a A + w_b B in one pass (shared exp, written-out gradient) against the
  two masked softmaxes they replace: values and gradients, with an empty salient set, padding
  and a zero weight among the videos."""
  rng = np.random.default_rng(0)
  b, t = 3, 50
  logits = jnp.asarray(rng.normal(size=(b, t, t)).astype(np.float32) * 20)
  mask = np.ones((b, t), bool)
  mask[1, 30:] = False
  mask[2, 1:] = False
  salient = (rng.random((b, t)) < 0.5) & mask
  salient[2] = False
  salient, non_salient = jnp.asarray(salient), jnp.asarray(~salient & mask)
  weight_a = jnp.asarray([SIGMA, 1.0, 0.0])[:, None, None]
  weight_b = 1.0 - weight_a

  def two_softmaxes(z):
    return weight_a * masked_softmax(z, salient[:, None, :]) + weight_b * masked_softmax(
      z, non_salient[:, None, :]
    )

  def one_pass(z):
    return refinement._set_softmax(z, salient, non_salient, weight_a, weight_b)

  np.testing.assert_allclose(
    jax.jit(one_pass)(logits), jax.jit(two_softmaxes)(logits), rtol=1e-6, atol=1e-7
  )
  cot = jnp.asarray(rng.normal(size=(b, t, t)).astype(np.float32))
  loss = lambda fn: lambda z: (jnp.sin(fn(z)) * cot).sum()  # noqa: E731
  got, want = (jax.jit(jax.grad(loss(fn)))(logits) for fn in (one_pass, two_softmaxes))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1][:, 30:], 0.0)  # padded keys: no gradient
