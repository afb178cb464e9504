"""The data-parallel train step (docs/design.md §4).

* Sequential mode equals a plain Python loop over the videos, one at a time, with the same pure
  functions, the same per-video keys, the memory updated after each video, the gradients summed
  and one optimizer step. `batched` mode equals the same loop with every video reading the
  memory of the start of the step, and differs from sequential mode.
* 1 device and 2 / 8 simulated devices (subprocesses: the device count is fixed when JAX starts)
  give the same params, gradients and memory after 5 steps that cross the memory
  initialisation; every device holds bitwise the same memory; a padded global batch (6 videos
  on 8 devices) gives what 6 videos give on 1 device.
* No retrace from step to step; a new T compiles once more.
* A non-finite loss raises on the host, naming the step and the terms.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from issf_jax import losses, sharding
from issf_jax import memory as memory_lib
from issf_jax.model import ISSF, build_model, pseudo_label_logits
from issf_jax.train import schedules
from issf_jax.train.loop import check_finite
from issf_jax.train.optimizer import make_optimizer
from tests import multidevice_check as md

REPO = Path(__file__).resolve().parents[1]
fast_jit = functools.partial(jax.jit, compiler_options=md.FAST_COMPILE)
BATCH = 8  # global batch of the step tests (md.run uses the same)
STEP = 2  # the first memory-phase step with steps_per_epoch = 2
KEY = jax.random.key_data(jax.random.key(42))


def _batch(videos=BATCH, seed=0, snippets=md.SNIPPETS):
  data = md.make_dataset(2 * videos, seed, snippets)
  return {k: v[:videos] for k, v in data.items()}


def _hand_memory(c, seed=5):
  """A bank with full, partly filled and empty rows (and a class no video has)."""
  rng = np.random.default_rng(seed)
  slots, dim = c.memory.slots, c.model.embed_dim
  filled = np.zeros((md.NUM_CLASSES, slots), bool)
  filled[0], filled[1, :2], filled[3] = True, True, True  # class 2 empty, class 4 in no video
  scores = -np.sort(-rng.uniform(0.05, 0.9, (md.NUM_CLASSES, slots)), -1) * filled
  feats = rng.random((md.NUM_CLASSES, slots, dim), dtype=np.float32) * filled[..., None]
  return memory_lib.MemoryBank(
    features=jnp.asarray(feats), scores=jnp.asarray(scores, jnp.float32),
    filled=jnp.asarray(filled), initialized=jnp.asarray(True),
  )  # fmt: skip


def _fresh_state(mode='sequential'):
  """A replicated memory-phase state (a new copy each time: the step donates it)."""
  c, mesh, create, _, _ = md.programs(1)  # the same initial state for either mode
  state = create(jax.random.key(0))
  state = state.replace(step=jnp.asarray(STEP, jnp.int32), memory=_hand_memory(c))
  return sharding.replicate(state, mesh)


def _host(tree):
  return jax.tree.map(np.asarray, tree)


# ----------------------------------------------------------------------------- the reference loop


@functools.cache
def _reference_fns():
  c = md.make_config()
  model = build_model(c.model)
  slots, mode = c.memory.slots, c.memory.update_mode
  optimizer = make_optimizer(c.optim)

  @fast_jit
  def one_video(params, memory, read_from, x, mask, labels, position):
    """One video, RSKP-style: its loss and gradient, then its memory update."""
    step_key = jax.random.fold_in(jax.random.wrap_key_data(KEY), STEP)
    key = jax.random.fold_in(step_key, position)[None]  # (seed, step, global position)
    class_ids = memory_lib.label_slots(labels, c.model.num_classes)
    rows, readable = memory_lib.read_rows(read_from, class_ids)

    def loss(p):
      out = model.apply({'params': p}, x, mask, train=True, video_keys=key, method=ISSF.encode)
      probs = jax.nn.softmax(out['base']['frame_logits'], axis=-1)
      cand = memory_lib.candidates(out['embedded'], out['salient'], probs, class_ids, slots, mode)
      slot_labels = (class_ids >= 0).astype(jnp.float32)
      out.update(model.apply({'params': p}, out['refined'], mask, rows, readable, slot_labels,
                             method=ISSF.enhance))  # fmt: skip
      out['pseudo_logits'] = pseudo_label_logits(out)
      total, _ = losses.issf_objective(out, labels, mask, schedules.lambda_s(c, True), c.loss)
      return total.sum(), cand

    (value, cand), grads = jax.value_and_grad(loss, has_aux=True)(params)
    eta = schedules.memory_weight(c, STEP, 2)
    memory = memory_lib.update(memory, *(a[0] for a in cand[:3]), class_ids[0], eta, mode)
    return value, grads, memory

  @fast_jit
  def apply_optimizer(grads, opt_state, params):
    updates, _ = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates)

  return one_video, apply_optimizer


def _reference_step(state, batch, *, batched: bool):
  """RSKP's order with the library's pure functions: one video at a time, memory updated after
  each video, gradients summed, one Adam step."""
  one_video, apply_optimizer = _reference_fns()
  memory = state.memory
  grads, total = None, 0.0
  for j in range(len(batch['features'])):
    video = [batch[k][j : j + 1] for k in ('features', 'mask', 'labels')]
    read_from = state.memory if batched else memory
    loss, g, memory = one_video(state.params, memory, read_from, *video, j)
    g = jax.tree.map(np.asarray, g)
    grads = g if grads is None else jax.tree.map(np.add, grads, g)  # RSKP: .grad += per video
    total += float(loss)
  params = apply_optimizer(grads, state.opt_state, state.params)
  return params, memory, grads, total


def _assert_trees_close(actual, expected, atol, rtol=0.0, what=''):
  flat_a = jax.tree_util.tree_leaves_with_path(actual)
  flat_e = jax.tree.leaves(expected)
  assert len(flat_a) == len(flat_e)
  for (path, a), e in zip(flat_a, flat_e, strict=True):
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f'{what}{path}')


def _step_and_reference(mode):
  _, mesh, _, steps, _ = md.programs(1, memory_mode=mode)
  batch = _batch()
  reference = _reference_step(_host(_fresh_state(mode)), batch, batched=mode == 'batched')
  state, metrics = steps[True](
    _fresh_state(mode), sharding.shard_batch(sharding.pad_batch(batch, 1), mesh), KEY
  )
  return _host(state), _host(metrics), reference


@functools.cache
def _sequential():
  return _step_and_reference('sequential')


@functools.cache
def _batched():
  return _step_and_reference('batched')


def test_sequential_step_equals_the_one_video_at_a_time_loop():
  state, metrics, (params, memory, grads, total) = _sequential()
  assert int(state.step) == STEP + 1
  np.testing.assert_allclose(metrics['loss'], total, rtol=1e-5)
  _assert_trees_close(state.params, params, atol=1e-5, what='params')
  np.testing.assert_allclose(state.memory.features, memory.features, atol=1e-5)
  np.testing.assert_allclose(state.memory.scores, memory.scores, atol=1e-5)
  np.testing.assert_array_equal(state.memory.filled, memory.filled)
  # The batch really exercised the memory: rows changed, the empty row 2 got filled if read.
  assert not np.allclose(state.memory.features, _hand_memory(md.make_config()).features)


def test_global_gradient_is_the_sum_of_the_per_video_gradients():
  """RSKP accumulates one backward() per video: the step's gradient (of the psum'd loss, before
  weight decay) must be the plain SUM of single-video gradients, not a mean or N x the sum."""
  _, metrics, (_, _, grads, _) = _sequential()
  _assert_trees_close(metrics['grads'], grads, atol=1e-5, rtol=1e-5, what='grads')
  mean = jax.tree.map(lambda g: g / BATCH, grads)
  with pytest.raises(AssertionError):
    _assert_trees_close(metrics['grads'], mean, atol=1e-5, rtol=1e-5)


def test_batched_mode_reads_the_start_of_step_memory_and_differs_from_sequential():
  seq_state, seq_metrics, _ = _sequential()
  state, metrics, (params, memory, grads, total) = _batched()
  np.testing.assert_allclose(metrics['loss'], total, rtol=1e-5)
  _assert_trees_close(metrics['grads'], grads, atol=1e-5, rtol=1e-5, what='grads')
  _assert_trees_close(state.params, params, atol=1e-5, what='params')
  # The same final memory (the same scan of updates) ...
  np.testing.assert_allclose(state.memory.features, seq_state.memory.features, atol=1e-6)
  # ... but videos that share a class with an earlier video read another memory.
  d_loss = abs(float(metrics['loss']) - float(seq_metrics['loss']))
  d_params = max(
    float(np.abs(a - b).max())
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(seq_state.params), strict=True)
  )
  g_b = np.concatenate([np.ravel(g) for g in jax.tree.leaves(metrics['grads'])])
  g_s = np.concatenate([np.ravel(g) for g in jax.tree.leaves(seq_metrics['grads'])])
  d_grad = float(np.linalg.norm(g_b - g_s) / np.linalg.norm(g_s))
  print(
    f'\nbatched vs sequential after 1 step (B={BATCH}): |dloss| = {d_loss:.4g} '
    f'(of {float(seq_metrics["loss"]):.4g}), max|dparam| = {d_params:.3g}, '
    f'|dgrad|/|grad| = {d_grad:.3g}'
  )
  assert d_loss > 1e-4 and d_grad > 1e-4


# ----------------------------------------------------------------------------- device counts


@functools.cache
def _local_run(videos):
  return md.run(1, videos, 5, 0)


_RUNS = {}


def _subprocess_run(devices, videos, tmp_dir: Path):
  key = (devices, videos)
  if key not in _RUNS:
    out = tmp_dir / f'run_{devices}dev_{videos}videos.npz'
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(
      [sys.executable, str(REPO / 'tests' / 'multidevice_check.py'), '--devices', str(devices),
       '--videos', str(videos), '--steps', '5', '--out', str(out)],
      env=env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, f'rc {proc.returncode}\n{proc.stderr[-4000:]}'
    _RUNS[key] = dict(np.load(out))
  return _RUNS[key]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('multidevice')


def _compare_runs(one, many, devices):
  assert int(many['num_shards']) == devices
  assert many['same_on_every_device'].all(), many['same_on_every_device']
  assert one['same_on_every_device'].all()
  np.testing.assert_array_equal(many['cache_sizes'], [1, 1, 1])  # no retrace across steps
  assert int(many['step']) == int(one['step']) == 5
  assert bool(many['memory/initialized'])
  np.testing.assert_allclose(many['losses'], one['losses'], rtol=1e-5)
  np.testing.assert_array_equal(many['memory/filled'], one['memory/filled'])
  for name in one:
    if name.startswith('params/') or name.startswith('memory/f') or name == 'memory/scores':
      np.testing.assert_allclose(many[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    elif name.startswith('grads/'):
      np.testing.assert_allclose(many[name], one[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
  ('devices', 'videos'),
  [
    (2, 8),  # global batch 8
    (8, 6),  # 6 videos padded to 8: two devices hold only invalid videos
    pytest.param(8, 8, marks=pytest.mark.slow),
    pytest.param(4, 6, marks=pytest.mark.slow),
  ],
)
def test_device_count_does_not_change_the_result(devices, videos, run_dir):
  _compare_runs(_local_run(videos), _subprocess_run(devices, videos, run_dir), devices)


# ----------------------------------------------------------------------------- tracing, NaN


def test_no_retrace_across_steps_and_one_more_for_a_new_length():
  run = _local_run(BATCH)  # 2 warm-up steps, the memory init, 3 memory steps
  np.testing.assert_array_equal(run['cache_sizes'], [1, 1, 1])
  c, mesh, create, steps, _ = md.programs(1)
  warm = steps[False]
  state = sharding.replicate(create(jax.random.key(0)), mesh)
  batch = sharding.shard_batch(sharding.pad_batch(_batch(), 1), mesh)
  for _ in range(3):  # the state a step returns goes back in: same types, same shardings
    state, _ = warm(state, batch, KEY)
  assert warm._cache_size() == 1
  longer = sharding.shard_batch(sharding.pad_batch(_batch(snippets=24), 1), mesh)
  state, metrics = warm(state, longer, KEY)
  state, metrics = warm(state, longer, KEY)
  jax.block_until_ready(metrics)
  assert warm._cache_size() == 2


def test_non_finite_loss_raises_on_the_host():
  _, mesh, _, steps, _ = md.programs(1)
  batch = _batch()
  _, metrics = steps[True](
    _fresh_state(), sharding.shard_batch(sharding.pad_batch(batch, 1), mesh), KEY
  )
  host = {k: v for k, v in jax.device_get(metrics).items() if k != 'grads'}
  check_finite(host, STEP)  # finite: no error
  batch['features'][3, 1] = np.nan
  _, metrics = steps[True](
    _fresh_state(), sharding.shard_batch(sharding.pad_batch(batch, 1), mesh), KEY
  )
  host = {k: v for k, v in jax.device_get(metrics).items() if k != 'grads'}
  with pytest.raises(FloatingPointError, match=f'step {STEP}') as err:
    check_finite(host, STEP)
  for term in ('loss', 'total', 'base_ca', 'kd'):
    assert f"'{term}'" in str(err.value)
