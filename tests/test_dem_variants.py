"""The DEM variants beyond the paper (`model.dem_read`, docs/fidelity.md, issue 18).

Hand-computed cases (D = 2, one slot per row, 2 snippets) for each read, the background row's
candidates and update, the `dem=` argument (`paper` leaves the config unchanged), one memory
phase step of every variant (bank shape, which rows change, both memory modes), and a resume of
a `dem=background` run that restores bitwise the uninterrupted run's states.
"""

from __future__ import annotations

import functools
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import activitynet13, synthetic, thumos14
from issf_jax import memory as memory_lib
from issf_jax import recipes, sharding
from issf_jax.model.enhancement import combine, read_memory
from issf_jax.train import step as step_lib
from tests import multidevice_check as md

S = 1.0 / (1.0 + math.e**-2)  # softmax([2, 0])[0] = 0.8808
fast = functools.partial(jax.jit, compiler_options=md.FAST_COMPILE, static_argnums=(2,))


def _bank(rows):
  """A bank of one filled slot per row: rows [R, D]."""
  feats = jnp.asarray(rows, jnp.float32)[:, None, :]
  ones = jnp.ones(feats.shape[:2], bool)
  return memory_lib.MemoryBank(
    features=feats, scores=ones.astype(jnp.float32), filled=ones, initialized=jnp.asarray(True)
  )


def _config(variant, classes=2):
  c = md.make_config()
  c.model.num_classes = classes
  if variant != 'paper':
    c.model.dem_read = variant
  return c


def _dem_read(config, memory, refined, labels, attention=None):
  """F_hat as the train step builds it: rows named by the variant, then `combine`."""
  class_ids = memory_lib.label_slots(jnp.asarray(labels), config.model.num_classes)
  ids = step_lib.with_background_slot(config, step_lib.memory_class_ids(config, class_ids))
  ids, nonempty = step_lib.read_slot_ids(config, ids)
  rows, readable = memory_lib.read_rows(memory, ids, False, nonempty)
  read, has = read_memory(jnp.asarray(refined), rows, readable, (ids >= 0).astype(jnp.float32))
  variant = config.model.get('dem_read', 'paper')
  return np.asarray(combine(jnp.asarray(refined), read, variant, attention)), np.asarray(has)


# Two classes: prototype of class 0 = [1, 0], of class 1 = [0, 1]; the video is class 0.
F_TILDE = [[[2.0, 0.0], [0.0, 2.0]]]  # snippet 0 like class 0, snippet 1 like class 1
LABELS = [[1.0, 0.0]]


def test_paper_read_gives_every_snippet_the_video_class():
  out, has = _dem_read(_config('paper'), _bank([[1, 0], [0, 1]]), F_TILDE, LABELS)
  np.testing.assert_allclose(out, [[[1, 0], [1, 0]]], atol=1e-6)  # one readable slot: itself
  assert has.tolist() == [True]


def test_residual_read_adds_the_read_to_the_query():
  out, _ = _dem_read(_config('residual'), _bank([[1, 0], [0, 1]]), F_TILDE, LABELS)
  np.testing.assert_allclose(out, [[[3, 0], [1, 2]]], atol=1e-6)


def test_gated_read_keeps_low_attention_snippets():
  attention = jnp.asarray([[0.75, 0.25]])
  out, _ = _dem_read(_config('gated'), _bank([[1, 0], [0, 1]]), F_TILDE, LABELS, attention)
  # (1 - a) F~ + a read: 0.25 [2, 0] + 0.75 [1, 0]; 0.75 [0, 2] + 0.25 [1, 0].
  np.testing.assert_allclose(out, [[[1.25, 0], [0.25, 1.5]]], atol=1e-6)


def test_gated_read_passes_no_gradient_to_the_attention():
  refined, read = jnp.ones((1, 2, 2)), jnp.full((1, 2, 2), 3.0)
  grad = jax.grad(lambda a: combine(refined, read, 'gated', a).sum())(jnp.asarray([[0.5, 0.2]]))
  np.testing.assert_array_equal(grad, 0.0)
  with pytest.raises(ValueError, match='needs the base attention'):
    combine(refined, read, 'gated')
  with pytest.raises(ValueError, match='dem_read'):
    combine(refined, read, 'other')


def test_all_classes_read_attends_over_every_filled_row():
  out, _ = _dem_read(_config('all_classes'), _bank([[1, 0], [0, 1]]), F_TILDE, LABELS)
  # softmax([2, 0]) over the two class rows, whatever the video's label.
  np.testing.assert_allclose(out, [[[S, 1 - S], [1 - S, S]]], atol=1e-6)


def test_all_classes_read_skips_rows_never_filled():
  bank = _bank([[1, 0], [0, 1]])
  bank = bank.replace(filled=bank.filled.at[1].set(False))  # class 1: no slot yet
  out, _ = _dem_read(_config('all_classes'), bank, F_TILDE, LABELS)
  np.testing.assert_allclose(out, [[[1, 0], [1, 0]]], atol=1e-6)


def test_background_read_lets_a_background_snippet_read_background():
  # Classes: one, prototype [1, 0]; the background row (index C = 1) holds [0, 1].
  config = _config('background', classes=1)
  refined = [[[3.0, 0.0], [0.0, 3.0]]]
  out, has = _dem_read(config, _bank([[1, 0], [0, 1]]), refined, [[1.0]])
  w = 1.0 / (1.0 + math.e**-3)  # softmax([3, 0])[0] = 0.9526
  np.testing.assert_allclose(out, [[[w, 1 - w], [1 - w, w]]], atol=1e-6)
  assert has.tolist() == [True]
  assert step_lib.memory_rows(config) == 2
  # A video with no label reads (and updates) nothing, the background row included.
  ids = step_lib.with_background_slot(config, jnp.asarray([[0], [-1]]))
  assert ids.tolist() == [[0, 1], [-1, -1]]


def test_background_candidates_are_the_lowest_attention_true_snippets():
  feats = jnp.arange(8, dtype=jnp.float32).reshape(1, 4, 2)  # snippet t = [2t, 2t + 1]
  attention = jnp.asarray([[0.9, 0.1, 0.5, 0.0]])
  mask = jnp.asarray([[True, True, True, False]])  # snippet 3 is padding
  f, s, v, pos = memory_lib.background_candidates(feats, attention, mask, 2)
  assert f.shape == (1, 1, 2, 2)
  np.testing.assert_array_equal(pos, [[[1, 2]]])
  np.testing.assert_allclose(s, [[[0.9, 0.5]]], atol=1e-6)  # 1 - a, best first
  np.testing.assert_array_equal(f[0, 0], [[2, 3], [4, 5]])
  assert v.tolist() == [[[True, True]]]
  # Fewer true snippets than slots: the extra slots are invalid.
  f, s, v, _ = memory_lib.background_candidates(feats[:, :1], attention[:, :1], mask[:, :1], 2)
  assert v.tolist() == [[[True, False]]] and s.shape == (1, 1, 2)
  s_all, v_all = memory_lib.all_background_candidates(attention, mask)
  np.testing.assert_allclose(s_all, [[[0.1, 0.9, 0.5, 1.0]]], atol=1e-6)
  assert v_all.tolist() == [[[True, True, True, False]]]


@pytest.mark.parametrize('mode', ['ours', 'merge_blend'])
def test_background_row_is_updated_by_the_class_rows_rule(mode):
  """One class (row 0) and the background row (1), 2 slots; an empty bank, eta (or 1 - m)."""
  bank = memory_lib.empty(2, 2, 2)
  cand_f = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]])  # [L=2, N, D]
  cand_s = jnp.asarray([[0.8, 0.0], [0.9, 0.6]])
  cand_v = jnp.asarray([[True, False], [True, True]])
  ids = jnp.asarray([0, 1])
  weight = 0.5 if mode == 'ours' else 0.0  # eta of `ours`; m (old row's weight) of the merge
  new = memory_lib.update(bank, cand_f, cand_s, cand_v, ids, weight, mode)
  scale = 0.5 if mode == 'ours' else 1.0  # (1 - eta) 0 + eta cand, or the merged candidates
  np.testing.assert_allclose(new.features[1], scale * np.asarray([[0, 1], [0, 2]]), atol=1e-6)
  np.testing.assert_allclose(new.scores[1], scale * np.asarray([0.9, 0.6]), atol=1e-6)
  np.testing.assert_allclose(new.features[0, 0], [scale, 0], atol=1e-6)
  assert new.filled.tolist() == [[True, False], [True, True]]


def test_scan_reads_the_rows_named_by_read_ids():
  bank = _bank([[1, 0], [0, 1]])
  f, s = jnp.zeros((1, 1, 1, 2)), jnp.zeros((1, 1, 1))
  v, ids = jnp.zeros((1, 1, 1), bool), jnp.asarray([[0]])
  _, rows, readable = memory_lib.scan_updates(
    bank, f, s, v, ids, 0.1, 'ours', read_ids=jnp.asarray([[0, 1]])
  )
  np.testing.assert_array_equal(rows[0, :, 0], [[1, 0], [0, 1]])
  assert readable.tolist() == [[[True], [True]]]


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize('module', [thumos14, activitynet13, synthetic])
def test_dem_paper_leaves_the_config_unchanged(module):
  assert module.get_config('dem=paper').to_json() == module.get_config().to_json()
  assert 'dem_read' not in module.get_config().model
  c = module.get_config('dem=background')
  assert c.model.dem_read == 'background' and c.ablation['dem'] == 'background'
  # A run without a DEM is the same run whatever dem= says.
  brm = module.get_config('modules=base_brm,dem=residual')
  assert 'dem_read' not in brm.model
  assert brm.model.to_json() == module.get_config('modules=base_brm').model.to_json()
  with pytest.raises(ValueError, match="dem='nope'"):
    module.get_config('dem=nope')
  assert set(recipes.DEM_READS) == {'paper', 'residual', 'gated', 'background', 'all_classes'}


# ------------------------------------------------------------------------------ the step


@functools.cache
def _programs(variant, memory_mode):
  c = md.make_config()
  c.memory.mode = memory_mode
  if variant != 'paper':
    c.model.dem_read = variant
  mesh = sharding.make_mesh(1)
  create = jax.jit(
    lambda key: step_lib.create_train_state(c, key), compiler_options=md.FAST_COMPILE
  )
  train = step_lib.make_train_step(
    c, mesh, memory_ready=True, steps_per_epoch=2, compiler_options=md.FAST_COMPILE
  )
  init = step_lib.make_memory_init_step(c, mesh, compiler_options=md.FAST_COMPILE)
  return c, mesh, create, train, init


@pytest.mark.parametrize(
  'variant,memory_mode',
  [('residual', 'sequential'), ('gated', 'sequential'), ('background', 'sequential'),
   ('background', 'batched'), ('all_classes', 'sequential'), ('all_classes', 'batched')],
)  # fmt: skip
def test_every_variant_runs_the_init_and_a_memory_step(variant, memory_mode):
  c, mesh, create, train, init = _programs(variant, memory_mode)
  rows = md.NUM_CLASSES + (variant == 'background')
  state = create(jax.random.key(0))
  assert state.memory.features.shape == (rows, c.memory.slots, c.model.embed_dim)
  data = md.make_dataset(8)
  batch = sharding.place_batch({**data, 'valid': np.ones(8, np.float32)}, mesh)
  key = jax.random.key_data(jax.random.key(1))
  ids = sharding.replicate(step_lib.initial_snippet_ids(c), mesh)
  assert ids.shape == (rows, c.memory.slots)
  memory, _ = init(state.params, sharding.replicate(state.memory, mesh), ids, batch, key)
  filled = np.asarray(memory.filled)
  assert filled[4].sum() == 0  # class 4: in no video
  if variant == 'background':
    assert filled[-1].all()  # every video has low-attention snippets
  state = state.replace(memory=memory.replace(initialized=jnp.asarray(True)))
  before = jax.tree.map(np.array, state.memory)
  state, metrics = train(sharding.replicate(state, mesh), batch, key)
  assert np.isfinite(float(metrics['loss']))
  assert float(metrics['dem_ca']) > 0  # the DEM branch ran
  after = np.asarray(state.memory.features)
  assert after.shape == before.features.shape
  np.testing.assert_array_equal(after[4], before.features[4])  # never updated
  if variant == 'background':
    assert not np.array_equal(after[-1], before.features[-1])  # the background row moved


def test_dem_paper_step_is_the_default_step():
  """`dem_read='paper'` set explicitly compiles the same program as the default config."""
  c0 = md.make_config()
  c1 = md.make_config()
  c1.model.dem_read = 'paper'
  mesh = sharding.make_mesh(1)
  data = md.make_dataset(4)
  batch = {**data, 'valid': np.ones(4, np.float32)}
  batch = sharding.place_batch(batch, mesh)
  key = jax.random.key_data(jax.random.key(1))
  outs = []
  for c in (c0, c1):
    state = step_lib.create_train_state(c, jax.random.key(0))
    memory = memory_lib.empty(md.NUM_CLASSES, c.memory.slots, c.model.embed_dim)
    memory = memory.replace(
      features=jnp.ones_like(memory.features), filled=jnp.ones_like(memory.filled),
      initialized=jnp.asarray(True),
    )  # fmt: skip
    step = step_lib.make_train_step(
      c, mesh, memory_ready=True, steps_per_epoch=2, compiler_options=md.FAST_COMPILE
    )
    state, metrics = step(sharding.replicate(state.replace(memory=memory), mesh), batch, key)
    outs.append(jax.tree.map(np.asarray, (state, metrics)))
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ resume


def test_background_variant_resumes_bitwise(tmp_path, tiny_shards, jax_cache_dir):
  """A tiny `dem=background` run, then a copy with its checkpoints after the memory init (step
  12) removed, run again: the resumed steps 18 and 24 restore to bitwise the same states."""
  from tests.conftest import (
    REPO_DIR,
    TINY_TRAIN_OVERRIDES,
    config_flags,
    run_python,
    subprocess_env,
  )
  from tests.test_trainer_resume import assert_states_bitwise_equal, restore_leaves

  config = f'{REPO_DIR / "configs" / "synthetic.py"}:dem=background'

  def args(workdir):
    return ['-m', 'launch.train', '--config', config,
            '--workdir', workdir, f'--config.data.shards_dir={tiny_shards}',
            *config_flags(TINY_TRAIN_OVERRIDES)]  # fmt: skip

  env = subprocess_env(jax_cache_dir)
  full = tmp_path / 'full'
  run_python(args(full), env)
  resumed = tmp_path / 'resumed'
  shutil.copytree(full, resumed)
  for step in (18, 24):
    shutil.rmtree(resumed / 'checkpoints' / str(step))
  second = run_python(args(resumed), env)
  assert 'Resumed from step 12 ' in second.stderr, second.stderr[-3000:]
  for step in (12, 18, 24):
    a, b = restore_leaves(full, step), restore_leaves(resumed, step)
    assert a['.memory.features'].shape[0] == synthetic.get_config().model.num_classes + 1
    assert_states_bitwise_equal(a, b, f'step {step}')
