"""The DEM memory bank: the hand-computed oracles (docs/design.md §10), initialisation against a
brute force, the update modes, and the rows a video may touch."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from issf_jax import memory as memory_lib
from issf_jax import sharding
from issf_jax.model import ISSF, build_model, init_params
from issf_jax.model.enhancement import read_memory
from issf_jax.train import schedules
from issf_jax.train import step as step_lib

fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
C, N, D = 3, 5, 4  # unit-test bank


@functools.partial(fast_jit, static_argnums=(6,))
def _update(memory, f, s, v, ids, eta, mode):
  return memory_lib.update(memory, f, s, v, ids, eta, mode)


def _bank(seed=0, filled=True):
  rng = np.random.default_rng(seed)
  scores = -np.sort(-rng.uniform(0.1, 0.9, (C, N)), axis=-1).astype(np.float32)
  return memory_lib.MemoryBank(
    features=jnp.asarray(rng.normal(size=(C, N, D)).astype(np.float32)),
    scores=jnp.asarray(scores),
    filled=jnp.full((C, N), filled),
    initialized=jnp.asarray(True),
  )


def _candidates(seed=1, scores=None, valid=None):
  """One video's rank-aligned candidates for one label slot: [1, N, ...]."""
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(1, N, D)).astype(np.float32)
  if scores is None:
    scores = -np.sort(-rng.uniform(0.1, 0.9, N))
  valid = np.ones(N, bool) if valid is None else np.asarray(valid, bool)
  return feats, np.asarray(scores, np.float32)[None], valid[None]


# ----------------------------------------------------------------------------- oracles


def test_read_of_equal_slots_gives_that_slot():
  rng = np.random.default_rng(0)
  m = rng.normal(size=D).astype(np.float32)
  memory = jnp.broadcast_to(jnp.asarray(m), (1, C, N, D))
  refined = jnp.asarray(rng.normal(size=(2, 7, D)).astype(np.float32))
  labels = jnp.asarray([[1, 0, 1], [0, 1, 0]], jnp.float32)
  out, has = read_memory(refined, memory, jnp.ones((1, C, N), bool), labels)
  np.testing.assert_allclose(out, np.broadcast_to(m, (2, 7, D)), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(has, [True, True])


def test_update_of_empty_bank_with_eta_half():
  bank = memory_lib.empty(C, N, D)
  f, s, v = _candidates()
  new = _update(bank, f, s, v, jnp.array([1]), 0.5, 'ours')
  np.testing.assert_allclose(new.features[1], 0.5 * f[0], rtol=1e-7)
  np.testing.assert_allclose(new.scores[1], 0.5 * s[0], rtol=1e-7)
  assert bool(new.filled[1].all())
  for row in (0, 2):
    np.testing.assert_array_equal(new.features[row], 0.0)
    assert not bool(new.filled[row].any())


def test_eta_schedule():
  eta0, total = 0.1, 180
  np.testing.assert_allclose(memory_lib.eta(0, total, eta0), math.log(2) * eta0, rtol=1e-6)
  np.testing.assert_allclose(memory_lib.eta(0, total, eta0), 0.6931 * eta0, rtol=1e-4)
  np.testing.assert_allclose(memory_lib.eta(total, total, eta0), 1.3133 * eta0, rtol=1e-4)
  np.testing.assert_allclose(memory_lib.eta(100, total, eta0), 0.101, atol=5e-4)
  c = ml_collections.ConfigDict(dict(memory=common.memory_config(), train=dict(num_epochs=total)))
  # Step k belongs to epoch k // steps_per_epoch.
  np.testing.assert_allclose(
    schedules.memory_weight(c, 20 * 100 + 19, 20), memory_lib.eta(100, total, 0.1)
  )


# ----------------------------------------------------------------------------- update modes


def test_update_mode_ours_blends_rank_aligned_then_resorts():
  bank = _bank()
  f, s, v = _candidates(scores=[0.99, 0.98, 0.05, 0.04, 0.03])
  eta = 0.3
  new = _update(bank, f, s, v, jnp.array([2]), eta, 'ours')
  old_f, old_s = np.asarray(bank.features[2]), np.asarray(bank.scores[2])
  blend_f = (1 - eta) * old_f + eta * f[0]
  blend_s = (1 - eta) * old_s + eta * s[0]
  order = np.argsort(-blend_s, kind='stable')
  np.testing.assert_allclose(new.scores[2], blend_s[order], rtol=1e-6)
  np.testing.assert_allclose(new.features[2], blend_f[order], rtol=1e-6, atol=1e-7)
  assert np.all(np.diff(np.asarray(new.scores[2])) <= 0)


def test_update_mode_direct_replaces_then_resorts():
  bank = _bank()
  f, s, v = _candidates(scores=[0.95, 0.6, 0.02, 0.01, 0.005], valid=[1, 1, 1, 0, 0])
  new = _update(bank, f, s, v, jnp.array([0]), 0.3, 'direct')
  exp_f, exp_s = np.asarray(bank.features[0]).copy(), np.asarray(bank.scores[0]).copy()
  exp_f[:3], exp_s[:3] = f[0, :3], s[0, :3]  # slots with a candidate take it as is
  order = np.argsort(-exp_s, kind='stable')
  np.testing.assert_array_equal(new.scores[0], exp_s[order])
  np.testing.assert_array_equal(new.features[0], exp_f[order])


def test_update_mode_momentum_blends_the_mean_salient_feature():
  rng = np.random.default_rng(4)
  feats = rng.normal(size=(2, 6, D)).astype(np.float32)
  salient = np.array([[True, False, True, True, False, False], [False] * 5 + [True]])
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 6, C + 1)).astype(np.float32)), -1)
  ids = jnp.array([[1, -1], [2, 0]])
  cf, cs, cv, _ = memory_lib.candidates(feats, salient, probs, ids, N, mode='momentum')
  for b in range(2):  # each video its own mean (no mixing across the batch)
    mean_f = feats[b, salient[b]].mean(0)
    np.testing.assert_allclose(cf[b, 0], np.broadcast_to(mean_f, (N, D)), rtol=1e-6, atol=1e-7)
    for slot in range(2):
      if ids[b, slot] >= 0:
        mean_p = np.asarray(probs)[b, salient[b], int(ids[b, slot])].mean()
        np.testing.assert_allclose(cs[b, slot], np.full(N, mean_p), rtol=1e-6)
  np.testing.assert_array_equal(cv[0], [[True] * N, [False] * N])  # empty label slot: nothing
  np.testing.assert_array_equal(cv[1], [[True] * N, [True] * N])
  mean_f = feats[0, salient[0]].mean(0)
  mean_p = np.asarray(probs)[0, salient[0], 1].mean()
  cf, cs, cv, ids = cf[:1], cs[:1], cv[:1], ids[:1]
  bank = _bank()
  eta = 0.25
  new = _update(bank, cf[0], cs[0], cv[0], ids[0], eta, 'momentum')
  # Every slot moves towards the mean; the slot order is kept (no re-sort).
  np.testing.assert_allclose(
    new.features[1], (1 - eta) * bank.features[1] + eta * mean_f, rtol=1e-6, atol=1e-7
  )
  np.testing.assert_allclose(new.scores[1], (1 - eta) * bank.scores[1] + eta * mean_p, rtol=1e-6)
  for row in (0, 2):
    np.testing.assert_array_equal(new.features[row], bank.features[row])


def test_unknown_update_mode_raises():
  with pytest.raises(ValueError, match='update mode'):
    memory_lib.update(_bank(), *_candidates(), jnp.array([0]), 0.1, 'average')


def test_fewer_salient_snippets_than_slots():
  rng = np.random.default_rng(5)
  for num_snippets in (8, 3):  # T >= N and T < N (top_k needs the padded path)
    feats = rng.normal(size=(1, num_snippets, D)).astype(np.float32)
    salient = np.zeros((1, num_snippets), bool)
    salient[0, [0, 2]] = True
    probs = jax.nn.softmax(
      jnp.asarray(rng.normal(size=(1, num_snippets, C + 1)).astype(np.float32)), -1
    )
    cf, cs, cv, pos = memory_lib.candidates(feats, salient, probs, jnp.array([[2]]), N)
    np.testing.assert_array_equal(cv[0, 0], [True, True, False, False, False])
    assert set(np.asarray(pos[0, 0, :2]).tolist()) == {0, 2}
    empty = _update(memory_lib.empty(C, N, D), cf[0], cs[0], cv[0], jnp.array([2]), 0.5, 'ours')
    assert int(empty.filled.sum()) == 2
    np.testing.assert_array_equal(empty.features[2, 2:], 0.0)
    bank = _bank()
    new = _update(bank, cf[0], cs[0], cv[0], jnp.array([2]), 0.5, 'ours')
    old_rows = {tuple(r) for r in np.asarray(bank.features[2])}
    new_rows = {tuple(r) for r in np.asarray(new.features[2])}
    assert len(old_rows & new_rows) == N - 2  # exactly two slots changed


# ----------------------------------------------------------------------------- rows touched


def test_rows_of_absent_classes_are_never_updated():
  bank = _bank()
  f, s, v = _candidates()
  new = _update(bank, f, s, v, jnp.array([1]), 0.7, 'ours')
  for row in (0, 2):
    np.testing.assert_array_equal(new.features[row], bank.features[row])
    np.testing.assert_array_equal(new.scores[row], bank.scores[row])
  assert not np.array_equal(new.features[1], bank.features[1])
  # A video with no label at all changes nothing.
  none = _update(bank, f, s, v, jnp.array([-1]), 0.7, 'ours')
  for a, b in zip(jax.tree.leaves(none), jax.tree.leaves(bank), strict=True):
    np.testing.assert_array_equal(a, b)


def test_rows_of_absent_classes_are_never_read():
  rng = np.random.default_rng(6)
  bank = _bank()
  refined = jnp.asarray(rng.normal(size=(2, 5, D)).astype(np.float32))
  class_ids = jnp.array([[1, -1, -1], [0, 2, -1]])
  rows, readable = memory_lib.read_rows(bank, class_ids)
  np.testing.assert_array_equal(readable[0], [[True] * N, [False] * N, [False] * N])
  np.testing.assert_array_equal(rows[1, :2], bank.features[jnp.array([0, 2])])
  slot_labels = (class_ids >= 0).astype(jnp.float32)
  out, has = read_memory(refined, rows, readable, slot_labels)
  # Garbage in the other rows changes nothing.
  poisoned = bank.replace(features=bank.features.at[jnp.array([0, 2])].set(1e6))
  rows_p, readable_p = memory_lib.read_rows(poisoned, class_ids[:1])
  out_p, _ = read_memory(refined[:1], rows_p, readable_p, slot_labels[:1])
  np.testing.assert_array_equal(out_p[0], out[0])
  # The full-bank form, with labels over all C classes, agrees.
  labels = jnp.array([[0, 1, 0], [1, 0, 1]], jnp.float32)
  full, _ = read_memory(refined, bank.features[None], bank.filled[None], labels)
  np.testing.assert_allclose(full, out, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(has, [True, True])
  # Unfilled slots are not read either: a video whose rows are all empty reads nothing.
  out_e, has_e = read_memory(refined, rows, jnp.zeros_like(readable), slot_labels)
  np.testing.assert_array_equal(has_e, [False, False])
  np.testing.assert_array_equal(out_e, 0.0)


def test_scan_updates_is_the_sequential_loop():
  bank = _bank(filled=False).replace(filled=jnp.zeros((C, N), bool).at[0, :2].set(True))
  rng = np.random.default_rng(7)
  ids = jnp.array([[0, -1], [0, 2], [2, -1]])
  feats = rng.normal(size=(3, 2, N, D)).astype(np.float32)
  scores = rng.uniform(size=(3, 2, N)).astype(np.float32)
  valid = rng.uniform(size=(3, 2, N)) > 0.3
  final, rows, readable = fast_jit(memory_lib.scan_updates, static_argnums=(6,))(
    bank, feats, scores, valid, ids, 0.4, 'ours'
  )
  mem = bank
  for j in range(3):
    r, rd = memory_lib.read_rows(mem, ids[j : j + 1])
    np.testing.assert_allclose(rows[j], r[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(readable[j], rd[0])
    mem = _update(mem, feats[j], scores[j], valid[j], ids[j], 0.4, 'ours')
  np.testing.assert_allclose(final.features, mem.features, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(final.scores, mem.scores, rtol=1e-6)
  np.testing.assert_array_equal(final.filled, mem.filled)
  np.testing.assert_array_equal(final.features[1], bank.features[1])  # class 1: in no video


def test_label_slots():
  labels = jnp.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], jnp.float32)
  np.testing.assert_array_equal(memory_lib.label_slots(labels, 2), [[1, 3], [-1, -1], [0, -1]])
  np.testing.assert_array_equal(memory_lib.label_slots(labels, 5)[0], [1, 3, -1, -1, -1])


# ----------------------------------------------------------------------------- initialisation

IC, ID, IT, IV = 5, 32, 16, 8  # classes, width, padded length, videos


@functools.cache
def _init_setup():
  c = ml_collections.ConfigDict()
  c.model = common.model_config(num_classes=IC, feature_dim=ID)
  c.memory = common.memory_config()
  c.loss = common.loss_config()
  c.optim = common.optim_config(1e-3)
  c.train = ml_collections.ConfigDict(dict(num_epochs=10, memory_init_epoch=0))
  model = build_model(c.model)
  params = fast_jit(lambda k: init_params(model, k))(jax.random.key(0))
  rng = np.random.default_rng(11)
  lengths = np.array([16, 3, 9, 12, 16, 7, 2, 14])
  mask = np.arange(IT)[None] < lengths[:, None]
  feats = rng.random((IV, IT, ID), dtype=np.float32) * mask[..., None]
  labels = np.zeros((IV, IC), np.float32)
  for v, classes in enumerate([[0], [0, 2], [2], [1], [0], [1, 2], [0], [2]]):
    labels[v, classes] = 1.0  # class 3 and 4: in no video; video 1 (T=3) holds few salient
  data = dict(features=feats, mask=mask, labels=labels, video_index=np.arange(IV, dtype=np.int32))
  mesh = sharding.make_mesh(1)
  init = step_lib.make_memory_init_step(
    c, mesh, compiler_options={'xla_backend_optimization_level': 0}
  )
  key = jax.random.key_data(jax.random.key(3))
  return c, model, params, data, mesh, init, key


def _run_init(order, batch_size):
  c, _, params, data, mesh, init, key = _init_setup()
  memory = memory_lib.empty(IC, c.memory.slots, ID)
  ids = step_lib.initial_snippet_ids(c)
  for start in range(0, len(order), batch_size):
    take = order[start : start + batch_size]
    batch = sharding.pad_batch({k: v[take] for k, v in data.items()}, 1)
    memory, ids = init(params, memory, ids, sharding.shard_batch(batch, mesh), key)
  return memory.replace(initialized=True), np.asarray(ids)


def test_init_picks_the_top_n_salient_snippets_by_class_probability():
  c, model, params, data, _, _, _ = _init_setup()
  memory, ids = _run_init(np.arange(IV), 4)
  out = fast_jit(lambda p, x, m: model.apply({'params': p}, x, m, train=False, method=ISSF.encode))(
    params, data['features'], data['mask']
  )
  probs = np.asarray(jax.nn.softmax(out['base']['frame_logits'], -1))
  embedded, salient = np.asarray(out['embedded']), np.asarray(out['salient'])
  slots = c.memory.slots
  for cls in range(IC):
    pool = [
      (probs[v, t, cls], v, t)
      for v in range(IV)
      if data['labels'][v, cls] > 0
      for t in range(IT)
      if salient[v, t]
    ]
    pool.sort(key=lambda e: -e[0])
    top = pool[:slots]
    filled = np.asarray(memory.filled[cls])
    assert filled.sum() == len(top), cls
    if not top:  # classes absent from the data stay empty
      np.testing.assert_array_equal(memory.features[cls], 0.0)
      continue
    np.testing.assert_allclose(memory.scores[cls, : len(top)], [e[0] for e in top], rtol=1e-5)
    expect_feats = np.stack([embedded[v, t] for _, v, t in top])
    np.testing.assert_allclose(memory.features[cls, : len(top)], expect_feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ids[cls, : len(top)], [v * (1 << 15) + t for _, v, t in top])


def test_init_is_independent_of_video_order_and_batch_split():
  ref_mem, ref_ids = _run_init(np.arange(IV), 4)
  perm = np.random.default_rng(0).permutation(IV)
  for order, batch_size in ((perm, 4), (perm[::-1].copy(), 1)):
    mem, ids = _run_init(order, batch_size)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mem.filled, ref_mem.filled)
    np.testing.assert_allclose(mem.scores, ref_mem.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mem.features, ref_mem.features, rtol=1e-6, atol=1e-6)
