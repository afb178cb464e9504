"""Saliency inference (Eq. 1-3, docs/design.md §2.2, and the oracles of §10)."""

import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model import saliency
from tests.conftest import fast_jit

EXAMPLE = np.array([[1, 0], [1, 0], [3, 0], [3, 0], [3, 1], [0, 0]], np.float32)
WRAP = np.array([[5, 0], [5, 0], [5, 0], [5, 1]], np.float32)


@fast_jit(static_argnames=('mode', 'distance', 'strategy', 'ratio'))
def _infer(feats, mask, mode='official', distance='l1', strategy='distance', ratio=0.5):
  return saliency.infer_saliency(
    feats, mask, mode=mode, distance=distance, strategy=strategy, ratio=ratio
  )


def _indices(salient):
  return set(np.flatnonzero(np.asarray(salient)).tolist())


def _pad_batch(videos, t_pad):
  feats = np.zeros((len(videos), t_pad, videos[0].shape[-1]), np.float32)
  mask = np.zeros((len(videos), t_pad), bool)
  for i, v in enumerate(videos):
    feats[i, : len(v)] = v
    mask[i, : len(v)] = True
  return feats, mask


def test_official_example():
  tau = saliency.saliency_scores(EXAMPLE[None], strategy='distance', distance='l1')
  np.testing.assert_array_equal(tau[0], [1, 0, 2, 0, 1, 4])
  salient = _infer(EXAMPLE[None], np.ones((1, 6), bool))
  assert _indices(salient[0]) == {1, 2, 4, 5}


def test_paper_example():
  salient = _infer(EXAMPLE[None], np.ones((1, 6), bool), mode='paper')
  assert _indices(salient[0]) == {2, 4, 5}


def test_wrap_around_example():
  tau = saliency.saliency_scores(WRAP[None], strategy='distance', distance='l1')
  np.testing.assert_array_equal(tau[0], [5, 0, 0, 1])
  assert _indices(_infer(WRAP[None], np.ones((1, 4), bool))[0]) == {0, 3}


def test_wrap_goes_to_the_last_true_snippet_and_padding_is_never_salient():
  feats, mask = _pad_batch([WRAP, EXAMPLE, WRAP[:1]], 7)
  feats[0, 4:] = 9.0  # loud padding: would win the top-k if it were not masked
  feats[2, 1:] = 9.0
  official = np.asarray(_infer(feats, mask))
  assert _indices(official[0]) == {0, 3}
  assert _indices(official[1]) == {1, 2, 4, 5}
  assert _indices(official[2]) == {0}  # T = 1: k = max(0 - 1, 1), index 0 wraps onto itself
  assert not official[~mask].any()
  paper = np.asarray(_infer(feats, mask, mode='paper'))
  assert _indices(paper[1]) == {2, 4, 5}
  assert not paper[2].any()  # T = 1: K = 0
  assert not paper[~mask].any()


def test_ties_go_to_the_lower_index():
  t = 10
  feats = np.ones((1, t, 2), np.float32)
  mask = np.ones((1, t), bool)
  # paper: every pair distance is 0, K = 5 -> the 5 lowest t >= 1.
  assert _indices(_infer(feats, mask, mode='paper')[0]) == {1, 2, 3, 4, 5}
  # official: tau = [2, 0, ...], k = 4 -> {0, 1, 2, 3}; 0 wraps to 9, i marks i - 1.
  assert _indices(_infer(feats, mask)[0]) == {0, 1, 2, 3, 9}


@pytest.mark.parametrize('ratio', [0.5, 0.9, 0.7, 0.3, 0.1, 0.35])
def test_count_is_exact_floor(ratio):
  lengths = np.arange(0, 3001)
  got = np.asarray(saliency._count(jnp.asarray(lengths), ratio))
  want = [int(fractions.Fraction(str(ratio)) * n) for n in lengths]
  np.testing.assert_array_equal(got, want)


LENGTHS = (1, 2, 3, 4, 5, 7, 10, 16, 31, 64)
STRATEGIES = (
  ('distance', 'l1'),
  ('distance', 'l2'),
  ('distance', 'cosine'),
  ('random', 'l1'),
  ('classification', 'l1'),
)


@fast_jit
def _all_strategies(feats, mask, keys, class_probs):
  """Every (mode, strategy, distance, ratio) on one batch, in one program."""
  out = {}
  for mode in ('official', 'paper'):
    for strategy, distance in STRATEGIES:
      for ratio in (0.5, 0.9):
        out[mode, strategy, distance, ratio] = saliency.infer_saliency(
          feats,
          mask,
          mode=mode,
          distance=distance,
          strategy=strategy,
          ratio=ratio,
          key=keys,
          class_probs=class_probs,
        )
  return out


@pytest.fixture(scope='module')
def strategy_batch():
  rng = np.random.default_rng(0)
  videos = [np.abs(rng.normal(size=(n, 8))).astype(np.float32) for n in LENGTHS]
  feats, mask = _pad_batch(videos, 70)
  feats[~mask] = 50.0  # loud padding
  keys = jax.random.split(jax.random.key(1), len(LENGTHS))
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(len(LENGTHS), 70, 6)) * 3), -1)
  return feats, mask, keys, probs


def test_every_strategy_gives_the_expected_counts(strategy_batch):
  feats, mask, keys, probs = strategy_batch
  results = jax.tree.map(np.asarray, _all_strategies(feats, mask, keys, probs))
  lengths = np.asarray(LENGTHS)
  for (mode, strategy, distance, ratio), salient in results.items():
    name = f'{mode}/{strategy}/{distance}/p={ratio}'
    assert salient.dtype == bool
    assert not salient[~mask].any(), f'{name}: padding marked salient'
    count = salient.sum(-1)
    big_k = np.floor(lengths * fractions.Fraction(str(ratio))).astype(int)
    if mode == 'official':
      k = np.maximum(big_k - 1, 1)
      assert np.all(count >= k) and np.all(count <= np.minimum(lengths, 2 * k)), (name, count)
    else:
      np.testing.assert_array_equal(count, big_k, err_msg=name)
      if strategy == 'distance':
        assert not salient[:, 0].any(), name  # tau_t is defined for t >= 1 only


def test_random_strategy_depends_on_the_keys_only(strategy_batch):
  feats, mask, keys, probs = strategy_batch
  a = _all_strategies(feats, mask, keys, probs)
  b = _all_strategies(feats * 2 + 1, mask, keys, probs)
  other = jax.random.split(jax.random.key(2), len(LENGTHS))
  c = _all_strategies(feats, mask, other, probs)
  for mode in ('official', 'paper'):
    key = (mode, 'random', 'l1', 0.5)
    np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a[key], c[key])


def test_classification_strategy_ranks_by_action_confidence():
  # Background (last column) is the most probable class on snippets 0 and 1: it must not count.
  probs = np.array(
    [
      [0.10, 0.05, 0.85],
      [0.20, 0.10, 0.70],
      [0.60, 0.30, 0.10],
      [0.30, 0.50, 0.20],
      [0.45, 0.45, 0.10],
      [0.30, 0.40, 0.30],
    ],
    np.float32,
  )[None]
  feats = np.zeros((1, 6, 2), np.float32)
  salient = saliency.infer_saliency(
    feats, np.ones((1, 6), bool), mode='paper', strategy='classification', class_probs=probs
  )
  assert _indices(salient[0]) == {2, 3, 4}  # K = 3: confidences .6, .5, .45


def test_unknown_options_raise():
  feats, mask = EXAMPLE[None], np.ones((1, 6), bool)
  trace = lambda **kw: jax.eval_shape(lambda: saliency.infer_saliency(feats, mask, **kw))
  with pytest.raises(ValueError, match='mode'):
    trace(mode='nope')
  with pytest.raises(ValueError, match='distance'):
    trace(distance='nope')
  with pytest.raises(ValueError, match='strategy'):
    trace(strategy='nope')
  with pytest.raises(ValueError, match='keys'):
    trace(strategy='random')
  with pytest.raises(ValueError, match='class probs'):
    trace(strategy='classification')
