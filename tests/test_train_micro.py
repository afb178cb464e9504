"""Micro-batched steps (`data.batching = 'micro'`) make the one-program step's optimizer step.

A memory-phase step on 6 videos of 2 to 16 snippets with a partly filled memory:
* one video per micro-batch, each padded only to its own bucket (8 or 16 snippets), in batch
  order, gives the exact step's loss terms, memory, gradient norm and params (float tolerance:
  the gradient is summed in another order), with each bucket's program traced on its own or
  both lowered from one trace with a symbolic length (`precompile`, as the trainer runs);
* three videos per micro-batch, sorted by length as the pipeline orders them, give the exact
  step on the batch permuted into that order with each video's original position (dropout key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import sampling
from issf_jax import memory as memory_lib
from issf_jax import sharding
from issf_jax.train import micro as micro_lib
from tests import multidevice_check as md

VIDEOS = 6
KEY = jax.random.key_data(jax.random.key(3))


def _state():
  c, mesh, create, _, _ = md.programs(1)
  state = create(jax.random.key(0))
  rng = np.random.default_rng(5)
  filled = np.zeros((md.NUM_CLASSES, c.memory.slots), bool)
  filled[0], filled[1, :2] = True, True
  feats = rng.random(filled.shape + (c.model.embed_dim,), dtype=np.float32) * filled[..., None]
  memory = memory_lib.MemoryBank(
    features=jnp.asarray(feats), scores=jnp.asarray(0.5 * filled, jnp.float32),
    filled=jnp.asarray(filled), initialized=jnp.asarray(True),
  )  # fmt: skip
  return sharding.replicate(state.replace(step=jnp.asarray(2, jnp.int32), memory=memory), mesh)


def _micro_batches(data, order, size, mesh):
  """Micro-batches of `size` videos in `order`, each cut to a multiple-of-8 geometric bucket."""
  out = []
  lengths = data['mask'].sum(1)
  for g in range(0, len(order), size):
    rows = order[g : g + size]
    t = sampling.geometric_bucket_length(lengths[rows].max(), 1.2, multiple=8)
    batch = {k: v[rows] for k, v in data.items()}
    batch['features'], batch['mask'] = batch['features'][:, :t], batch['mask'][:, :t]
    batch['position'] = rows.astype(np.int32)
    out.append(sharding.shard_batch(sharding.pad_batch(batch, 1), mesh))
  return out


def _exact(data, order):
  c, mesh, _, steps, _ = md.programs(1)
  batch = {k: v[order] for k, v in data.items()}
  batch['position'] = order.astype(np.int32)
  state, metrics = steps[True](_state(), sharding.shard_batch(sharding.pad_batch(batch, 1), mesh),
                               KEY)  # fmt: skip
  metrics.pop('grads')
  return jax.device_get(state), jax.device_get(metrics)


def _assert_close(a, b, what):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6,
                               err_msg=f'{what}{jax.tree_util.keystr(path)}')  # fmt: skip


@pytest.mark.parametrize(
  'size,precompiled', [(1, False), (1, True), pytest.param(3, False, marks=pytest.mark.slow)]
)
def test_micro_step_equals_the_one_program_step(size, precompiled):
  c, mesh, _, _, _ = md.programs(1)
  data = md.make_dataset(VIDEOS, seed=2)
  lengths = data['mask'].sum(1)
  assert len({sampling.geometric_bucket_length(t, 1.2, multiple=8) for t in lengths}) == 2
  order = np.arange(VIDEOS) if size == 1 else np.argsort(lengths, kind='stable')
  step = micro_lib.make_micro_train_step(
    c, mesh, memory_ready=True, steps_per_epoch=2, compiler_options=md.FAST_COMPILE
  )
  micro_batches = _micro_batches(data, order, size, mesh)
  if precompiled:  # as the trainer does: both buckets' programs from one symbolic-T trace
    step.precompile(_state(), micro_batches[0], KEY, [8, 16])
    assert step.symbolic_ranges() == [(8, 16)]
    assert len(step.compile_seconds) == 2
  state, metrics = step(_state(), micro_batches, KEY)
  want_state, want_metrics = _exact(data, order)
  assert int(state.step) == 3
  assert set(metrics) == set(want_metrics)
  _assert_close(jax.device_get(metrics), want_metrics, 'metrics')
  _assert_close(jax.device_get(state.memory), want_state.memory, 'memory')
  _assert_close(jax.device_get(state.params), want_state.params, 'params')
  _assert_close(jax.device_get(state.opt_state), want_state.opt_state, 'opt_state')


def test_batched_memory_mode_is_refused():
  c, mesh, _, _, _ = md.programs(1)
  c = c.copy_and_resolve_references()
  c.memory.mode = 'batched'
  with pytest.raises(ValueError, match='sequential'):
    micro_lib.make_micro_train_step(c, mesh, memory_ready=True, steps_per_epoch=2)
