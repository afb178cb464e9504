"""The classification head (RSKP PredictionModule): the oracles of docs/design.md §10 (Head).

Every call uses one jitted head at one shape, [B, T, D] = [4, 16, 64], padded per video.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model.heads import ATTENTION_EPS, ClassificationHead
from tests.conftest import SMALL_C, SMALL_D, fast_jit

B, T, D, C = 4, 16, SMALL_D, SMALL_C
LENGTHS = np.array([16, 9, 1, 2])
SCALE = 20.0


@pytest.fixture(scope='module')
def head_params(small_params):
  return small_params['head']


@pytest.fixture(scope='module')
def head():
  """The jitted head: (params, feats [B, T, D], mask [B, T]) -> outputs."""
  return fast_jit(lambda p, f, m: ClassificationHead(C, SCALE).apply({'params': p}, f, m))


def _mask():
  return np.arange(T)[None, :] < LENGTHS[:, None]


def _n(v):
  return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


def _reference(params, feats, length):
  """docs/design.md §2.1 in float64 for one unpadded video."""
  f = np.asarray(feats[:length], np.float64)
  ac = np.asarray(params['ac_center'], np.float64)
  fg = np.asarray(params['fg_center'], np.float64)
  s = SCALE * _n(f) @ _n(ac).T
  a = 1 / (1 + np.exp(-(SCALE * _n(f) @ _n(fg)[0])))
  big_a = 1 / (1 + np.exp(-s))
  a_hat = a / (a.sum() + 1e-5)
  big_a_hat = big_a / (big_a.sum(0, keepdims=True) + 1e-5)
  v_ca = a_hat @ f
  v_cw = big_a_hat.T @ f  # [C+1, D]
  logits_ca = SCALE * _n(v_ca) @ _n(ac).T
  logits_cw = SCALE * np.sum(_n(v_cw) * _n(ac), -1)
  softmax = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()
  return {
    'frame_logits': s,
    'attention': a,
    'logits_ca': logits_ca,
    'logits_cw': logits_cw,
    'p_ca': softmax(logits_ca),
    'p_cw': softmax(logits_cw),
  }


def _random_feats(seed):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(B, T, D)).astype(np.float32)
  feats[0, 3] = 0.0  # a zero row among the true snippets
  return feats


def test_fg_center_init_is_minus_background_centre(head_params):
  np.testing.assert_array_equal(head_params['fg_center'], -head_params['ac_center'][C:])
  # Also for the head initialised on its own.
  init = lambda key: ClassificationHead(C).init(key, jnp.ones((1, 3, D)), jnp.ones((1, 3), bool))
  params = fast_jit(init)(jax.random.key(7))
  np.testing.assert_array_equal(params['params']['fg_center'], -params['params']['ac_center'][C:])
  assert params['params']['ac_center'].shape == (C + 1, D)
  assert params['params']['fg_center'].shape == (1, D)


def test_feature_parallel_to_a_centre_scores_the_scale(head, head_params):
  ac = np.asarray(head_params['ac_center'])
  rng = np.random.default_rng(0)
  classes = np.arange(B * T).reshape(B, T) % (C + 1)
  alpha = rng.uniform(0.01, 50.0, size=(B, T, 1)).astype(np.float32)
  feats = alpha * ac[classes]
  out = head(head_params, feats, np.ones((B, T), bool))
  s = np.asarray(out['frame_logits'])
  picked = np.take_along_axis(s, classes[..., None], -1)[..., 0]
  np.testing.assert_allclose(picked, SCALE, rtol=1e-6)
  assert np.all(s <= SCALE * (1 + 1e-6))


def test_ranges_and_normalisations(head, head_params):
  feats = _random_feats(1)
  mask = _mask()
  out = jax.tree.map(np.asarray, head(head_params, feats, mask))
  s, a = out['frame_logits'], out['attention']
  assert np.all(np.abs(s) <= SCALE * (1 + 1e-6))
  assert np.all((a[mask] > 0) & (a[mask] < 1))
  # Padding: no attention and zero frame logits.
  assert np.all(a[~mask] == 0) and np.all(s[~mask] == 0)
  for name in ('p_ca', 'p_cw'):
    np.testing.assert_allclose(out[name].sum(-1), 1.0, rtol=1e-6)
    assert np.all(out[name] > 0)
  # a_hat = a / (sum_t a + 1e-5) sums to 1 within 1e-5 relative once sum_t a >= 1.
  total = a.sum(1)
  a_hat_sum = (a / (total[:, None] + ATTENTION_EPS)).sum(1)
  long_enough = total >= 1.0
  assert long_enough.sum() >= 2
  np.testing.assert_allclose(a_hat_sum[long_enough], 1.0, rtol=1e-5)


def test_head_matches_the_spec_formula(head, head_params):
  feats = _random_feats(2)
  # Half the videos non-negative, as embedded features are.
  feats[::2] = np.abs(feats[::2])
  out = head(head_params, feats, _mask())
  for b, length in enumerate(LENGTHS):
    ref = _reference(head_params, feats[b], length)
    for name, want in ref.items():
      got = np.asarray(out[name][b])
      if name in ('frame_logits', 'attention'):
        got = got[:length]
      np.testing.assert_allclose(
        got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f'video {b} {name}'
      )


def test_equal_features_pool_to_that_feature(head, head_params):
  """All F_t equal: v_ca = F_t and V_cw[c] = F_t, so the video logits equal the frame's row."""
  rng = np.random.default_rng(3)
  row = np.abs(rng.normal(size=(B, 1, D))).astype(np.float32)
  feats = np.broadcast_to(row, (B, T, D)).copy()
  mask = _mask()
  feats[~mask] = 123.0  # garbage on padding must not be pooled either
  out = jax.tree.map(np.asarray, head(head_params, feats, mask))
  frame_row = out['frame_logits'][:, 0]
  np.testing.assert_allclose(out['logits_ca'], frame_row, rtol=1e-5, atol=1e-5 * SCALE)
  np.testing.assert_allclose(out['logits_cw'], frame_row, rtol=1e-5, atol=1e-5 * SCALE)


def test_padding_content_is_ignored(head, head_params):
  feats = _random_feats(4)
  mask = _mask()
  garbage = feats.copy()
  garbage[~mask] = np.random.default_rng(5).normal(size=(int((~mask).sum()), D)) * 1e3
  clean = feats.copy()
  clean[~mask] = 0.0
  out_g = head(head_params, garbage, mask)
  out_c = head(head_params, clean, mask)
  for name in out_c:
    np.testing.assert_array_equal(out_g[name], out_c[name], err_msg=name)


def test_l2_normalize_gradient_is_autodiffs():
  """The written-out gradient of the last-axis normalisation against autodiff of its formula,
  zero rows (padding) included; the values are the formula's, bit for bit."""
  from issf_jax.model.heads import NORM_EPS, l2_normalize

  def formula(x):
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return x / (norm + NORM_EPS)

  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 33)).astype(np.float32)
  x[0, 3] = 0.0
  x = jnp.asarray(x)
  weights = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
  row_mask = jnp.asarray(np.abs(np.asarray(x)).sum(-1, keepdims=True) > 0)
  loss = lambda f: lambda x: (jnp.sin(f(x)) * weights * row_mask).sum()  # noqa: E731
  np.testing.assert_array_equal(l2_normalize(x), formula(x))
  got, want = jax.grad(loss(l2_normalize))(x), jax.grad(loss(formula))(x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[0, 3], 0.0)  # a masked zero row gets no gradient
  np.testing.assert_allclose(
    l2_normalize(x, axis=1), x / (jnp.linalg.norm(x, axis=1, keepdims=True) + NORM_EPS), rtol=1e-6
  )


@pytest.mark.parametrize('which', ['class_pool', 'video_pool', 'attend'])
def test_pooling_gradients_are_autodiffs(which):
  """The written-out gradients of the attention poolings (heads.class_pool, heads.video_pool)
  and of the BRM's attention product (refinement.attend) against autodiff of their einsums;
  the forward values are those einsums, bit for bit."""
  from issf_jax.model import heads, refinement

  fn, equation, w_shape = {
    'class_pool': (heads.class_pool, 'btk,btd->bkd', (2, 7, 5)),
    'video_pool': (heads.video_pool, 'bt,btd->bd', (2, 7)),
    'attend': (refinement.attend, 'bqk,bkd->bqd', (2, 7, 7)),
  }[which]
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=w_shape).astype(np.float32))
  f = jnp.asarray(rng.normal(size=(2, 7, 33)).astype(np.float32))
  np.testing.assert_array_equal(jax.jit(fn)(w, f), jnp.einsum(equation, w, f))
  out_shape = jnp.einsum(equation, w, f).shape
  probe = jnp.asarray(rng.normal(size=out_shape).astype(np.float32))

  def loss(g):
    return lambda w, f: (jnp.sin(g(w, f)) * probe).sum()

  got = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))(w, f)
  want = jax.grad(loss(lambda w, f: jnp.einsum(equation, w, f)), argnums=(0, 1))(w, f)
  for a, b in zip(got, want, strict=True):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
