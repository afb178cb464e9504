"""The DEM read (Eq. 9, docs/design.md §2.4, and the DEM read oracles of §10)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model.enhancement import read_memory
from issf_jax.recipes import ATTN_LOGITS
from tests.conftest import SMALL_C, SMALL_D, fast_jit

B, T, D, C, N = 4, 10, SMALL_D, SMALL_C, 5


@fast_jit
def _read_all(refined, memory, slot_valid, labels):
  """{attn kind: (F_hat, has_memory)} for every attention-logit kind."""
  return {
    kind: read_memory(refined, memory, slot_valid, labels, attn_logits=kind) for kind in ATTN_LOGITS
  }


@pytest.fixture(scope='module')
def inputs():
  rng = np.random.default_rng(0)
  refined = (np.abs(rng.normal(size=(B, T, D))) * 0.3).astype(np.float32)
  memory = (np.abs(rng.normal(size=(B, C, N, D))) * 0.3).astype(np.float32)
  slot_valid = rng.random((B, C, N)) < 0.7
  slot_valid[:, :, 0] = True
  labels = np.zeros((B, C), np.float32)
  labels[0, 1] = 1
  labels[1, [0, 3]] = 1
  labels[2, [2, 3, 4]] = 1  # video 3: no label, nothing to read
  return refined, memory, slot_valid, labels


def _reference(refined, memory, slot_valid, labels, kind):
  """Eq. 9 with M_[c] gathered: the valid slots of the labelled classes, one softmax."""
  rows = memory[(labels[:, None] > 0) & slot_valid].astype(np.float64)  # [m, D]
  q = refined.astype(np.float64)
  if kind == 'dot':
    logits = q @ rows.T
  elif kind == 'dot_sqrt_d':
    logits = q @ rows.T / math.sqrt(D)
  else:
    n = lambda v: v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)
    logits = 5.0 * n(q) @ n(rows).T
  w = np.exp(logits - logits.max(-1, keepdims=True))
  return (w / w.sum(-1, keepdims=True)) @ rows


def test_matches_the_gather_reference(inputs):
  refined, memory, slot_valid, labels = inputs
  out = _read_all(refined, memory, slot_valid, labels)
  for kind, (enhanced, has_memory) in out.items():
    np.testing.assert_array_equal(has_memory, [True, True, True, False])
    np.testing.assert_array_equal(enhanced[3], 0.0)
    for b in range(3):
      want = _reference(refined[b], memory[b], slot_valid[b], labels[b], kind)
      np.testing.assert_allclose(
        enhanced[b], want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f'{kind} {b}'
      )


def test_equal_slots_read_back_exactly(inputs):
  refined, _, slot_valid, labels = inputs
  m = np.random.default_rng(1).normal(size=(D,)).astype(np.float32)
  memory = np.broadcast_to(m, (B, C, N, D))
  for kind, (enhanced, _) in _read_all(refined, memory, slot_valid, labels).items():
    np.testing.assert_allclose(
      enhanced[:3], np.broadcast_to(m, (3, T, D)), rtol=1e-6, atol=1e-6, err_msg=kind
    )


def test_absent_classes_and_empty_slots_are_never_read(inputs):
  refined, memory, slot_valid, labels = inputs
  changed = memory.copy()
  unread = ~((labels[:, :, None] > 0) & slot_valid)
  changed[unread] = 1e4 * np.random.default_rng(2).normal(size=(int(unread.sum()), D))
  a = _read_all(refined, memory, slot_valid, labels)
  b = _read_all(refined, changed, slot_valid, labels)
  for kind in ATTN_LOGITS:
    np.testing.assert_array_equal(a[kind][0], b[kind][0], err_msg=kind)


def test_one_shared_memory_broadcasts(inputs):
  refined, memory, slot_valid, labels = inputs
  shared = _read_all(refined, memory[:1], slot_valid[:1], labels)
  tiled = _read_all(
    refined,
    np.broadcast_to(memory[:1], memory.shape),
    np.broadcast_to(slot_valid[:1], slot_valid.shape),
    labels,
  )
  for kind in ATTN_LOGITS:
    np.testing.assert_allclose(shared[kind][0], tiled[kind][0], rtol=1e-6)
    np.testing.assert_array_equal(shared[kind][1], tiled[kind][1])


def test_gradient_reaches_the_queries_only(inputs):
  refined, memory, slot_valid, labels = inputs

  def loss(r, m):
    enhanced, _ = read_memory(r, m, slot_valid, labels, attn_logits='dot')
    return jnp.sum(jnp.sin(enhanced))

  g_refined, g_memory = fast_jit(jax.grad(loss, argnums=(0, 1)))(refined, memory)
  assert np.all(np.asarray(g_memory) == 0)
  assert np.isfinite(g_refined).all()
  assert np.abs(g_refined[:3]).max() > 0
  assert np.all(np.asarray(g_refined[3]) == 0)  # nothing read: no path to the query
