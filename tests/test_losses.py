"""Losses: the hand-computed oracles (docs/design.md §10), the full ISSF objective, and parity
with RSKP's own values.

The parity goldens (`tests/testdata/rskp_parity/README.md` §2.3) hold RSKP's losses and
single-video gradients for the base branch. Every `parity_case*.npz` found in
`$ISSF_RSKP_PARITY_DIR` (cases kept aside) or in `tests/testdata/rskp_parity` is checked.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from issf_jax import interop, losses
from issf_jax.model import ISSF, build_model, init_params
from issf_jax.train import schedules

REPO = Path(__file__).resolve().parents[1]
REPO_PARITY = REPO / 'tests' / 'testdata' / 'rskp_parity'
ENV_DIR = 'ISSF_RSKP_PARITY_DIR'
# Tiny shapes: compile time dominates, and LLVM -O0 halves it.
fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _parity_dirs() -> list[Path]:
  dirs = []
  if os.environ.get(ENV_DIR):
    dirs.append(Path(os.environ[ENV_DIR]))
  dirs.append(REPO_PARITY)
  return dirs


def _find_cases() -> list[Path]:
  found = {}
  for d in _parity_dirs():
    for path in sorted(d.glob('parity_case*.npz')) if d.is_dir() else []:
      found.setdefault(path.name, path)  # the env var's copy wins
  return [found[k] for k in sorted(found)]


CASES = _find_cases()


def _weights_path(case_path: Path, dim: int, num_classes: int) -> Path:
  """The weights file of a case: from index.json when present, else by its dims."""
  name = f'weights_d{dim}_c{num_classes}.npz'
  index = case_path.parent / 'index.json'
  if index.is_file():
    entry = json.loads(index.read_text()).get('cases', {}).get(case_path.stem)
    if entry:
      name = entry['weights_file']
  for d in [case_path.parent] + _parity_dirs():
    if (d / name).is_file():
      return d / name
  raise FileNotFoundError(f'{name} (weights of {case_path}) not found in {_parity_dirs()}')


def _config(num_classes=5, dim=32, use_brm=True):
  c = ml_collections.ConfigDict()
  c.model = common.model_config(num_classes=num_classes, feature_dim=dim)
  c.model.use_brm = use_brm
  c.memory = common.memory_config()
  c.loss = common.loss_config()
  c.optim = common.optim_config(1e-3)
  c.train = ml_collections.ConfigDict(dict(num_epochs=10, memory_init_epoch=0))
  return c


# ----------------------------------------------------------------------------- oracles


def test_nce_oracle():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
  value = losses.normalized_cross_entropy(logits, jnp.array([[1.0, 1.0, 0.0]]))
  np.testing.assert_allclose(value, [0.5 * (math.log(2) + math.log(1 / 0.3))], rtol=1e-6)
  np.testing.assert_allclose(value, [0.9486], atol=1e-4)
  zero = losses.normalized_cross_entropy(logits, jnp.zeros((1, 3)))
  assert float(zero[0]) == 0.0


ATT_VALUES = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.0, 1.0, 0.05, 0.15, 0.25, 0.35, 0.45]


def test_attention_loss_oracle():
  a = jnp.array([ATT_VALUES])
  value = losses.attention_loss(a, jnp.ones((1, 16), bool))
  np.testing.assert_allclose(value, [-0.925], atol=1e-7)


def test_attention_loss_ignores_padding():
  # Padding holds values that would win both the top-k and the bottom-k, and a padded T of
  # 24 would give k = 3; the true T = 16 gives k = 2.
  a = np.full((2, 24), 0.0, np.float32)
  mask = np.zeros((2, 24), bool)
  a[0, :16], mask[0, :16] = ATT_VALUES, True
  a[0, 16:] = [5.0, -5.0] * 4
  a[1, 4:20], mask[1, 4:20] = ATT_VALUES, True  # padding on both sides
  a[1, :4], a[1, 20:] = 7.0, -7.0
  value = losses.attention_loss(jnp.asarray(a), jnp.asarray(mask))
  np.testing.assert_allclose(value, [-0.925, -0.925], atol=1e-7)
  # A video with no true snippet (a batch-padding video) gives 0, not inf - inf.
  empty = losses.attention_loss(jnp.asarray(a[:1]), jnp.zeros((1, 24), bool))
  np.testing.assert_array_equal(empty, [0.0])


def test_attention_loss_single_snippet_is_zero():
  a = jnp.array([[0.37, 0.9]])
  mask = jnp.array([[True, False]])
  value, grad = jax.value_and_grad(lambda x: losses.attention_loss(x, mask).sum())(a)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


def test_distillation_oracles():
  mask = jnp.ones((1, 3), bool)
  teacher = jnp.full((1, 3, 21), 4.2)
  value = losses.distillation_loss(jnp.zeros((1, 3, 21)), teacher, mask)
  np.testing.assert_allclose(value, [math.log(21)], rtol=1e-6)

  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.uniform(-20, 20, (1, 3, 21)).astype(np.float32))
  loss = lambda s, t: losses.distillation_loss(s, t, mask).sum()
  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(logits, logits)
  assert float(jnp.abs(g_student).max()) <= 1e-6  # RSKP: 7.7e-8
  np.testing.assert_array_equal(g_teacher, 0.0)  # sg(teacher): exactly no gradient
  # Elsewhere too: the teacher never gets a gradient.
  g_teacher = jax.grad(loss, argnums=1)(jnp.zeros_like(logits), logits)
  np.testing.assert_array_equal(g_teacher, 0.0)


def test_distillation_time_mean_respects_mask():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(1, 8, 6)).astype(np.float32)
  t = rng.normal(size=(1, 8, 6)).astype(np.float32)
  mask = np.arange(8)[None] < 5
  padded = losses.distillation_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask))
  s[:, 5:], t[:, 5:] = 100.0, -100.0  # garbage in the padding
  again = losses.distillation_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask))
  short = losses.distillation_loss(jnp.asarray(s[:, :5]), jnp.asarray(t[:, :5]), jnp.ones((1, 5)))
  np.testing.assert_allclose(padded, short, rtol=1e-6)
  np.testing.assert_allclose(again, short, rtol=1e-6)


# ----------------------------------------------------------------------------- full objective


@functools.cache
def _small_model():
  c = _config()
  model = build_model(c.model)
  params = fast_jit(lambda key: init_params(model, key))(jax.random.key(0))
  return c, model, params


def _videos(num_videos, num_snippets, dim, lengths, seed=0):
  rng = np.random.default_rng(seed)
  feats = rng.random((num_videos, num_snippets, dim), dtype=np.float32)
  mask = np.arange(num_snippets)[None] < np.asarray(lengths)[:, None]
  return feats * mask[..., None], mask


@functools.cache
def _forward_fn():
  c, model, _ = _small_model()

  @fast_jit
  def forward(params, feats, mask, memory, slot_valid, labels):
    no_mem = model.apply({'params': params}, feats, mask, train=False)
    with_mem = model.apply(
      {'params': params}, feats, mask, train=False, memory=memory, slot_valid=slot_valid,
      labels=labels,
    )  # fmt: skip
    return no_mem, with_mem

  return forward


def _memory(num_classes, slots, dim, filled_classes, seed=3):
  rng = np.random.default_rng(seed)
  feats = rng.random((1, num_classes, slots, dim), dtype=np.float32)
  valid = np.zeros((1, num_classes, slots), bool)
  valid[0, list(filled_classes)] = True
  return jnp.asarray(feats), jnp.asarray(valid)


def test_full_objective_dem_terms_only_after_memory_init():
  c, _, params = _small_model()
  assert schedules.lambda_s(c, False) == 1.0 and schedules.lambda_s(c, True) == 0.5
  assert not schedules.memory_ready(c, 1, 2) and schedules.memory_ready(c, 2, 2)
  feats, mask = _videos(3, 16, 32, [16, 11, 6])
  labels = np.zeros((3, 5), np.float32)
  labels[0, 0] = labels[1, [1, 3]] = labels[2, 2] = 1.0
  mem, valid = _memory(5, c.memory.slots, 32, filled_classes=[0, 1, 2, 3, 4])
  before, after = _forward_fn()(params, feats, mask, mem, valid, labels)

  lam = schedules.lambda_s(c, False)
  total, terms = losses.issf_objective(before, labels, mask, lam, c.loss)
  assert not any(k.startswith('dem') for k in terms)
  l_ca = terms['base_ca'] + terms['brm_ca']
  l_mil = terms['base_mil'] + terms['brm_mil']
  expect = l_ca + 0.2 * l_mil + 0.1 * terms['att'] + 1.0 * terms['kd']
  np.testing.assert_allclose(total, expect, rtol=1e-6)
  # Before the memory, the teacher is the BRM branch's S.
  kd = losses.distillation_loss(before['base']['frame_logits'], before['brm']['frame_logits'], mask)
  np.testing.assert_allclose(terms['kd'], kd, rtol=1e-6)

  lam = schedules.lambda_s(c, True)
  total, terms = losses.issf_objective(after, labels, mask, lam, c.loss)
  assert np.asarray(after['has_memory']).all()
  l_ca = terms['base_ca'] + terms['brm_ca'] + 0.5 * terms['dem_ca']
  l_mil = terms['base_mil'] + terms['brm_mil'] + 0.5 * terms['dem_mil']
  expect = l_ca + 0.2 * l_mil + 0.1 * terms['att'] + 0.5 * terms['kd']
  np.testing.assert_allclose(total, expect, rtol=1e-6)
  assert (np.asarray(terms['dem_ca']) > 0).all()
  teacher = after['brm']['frame_logits'] + after['dem']['frame_logits']
  kd = losses.distillation_loss(after['base']['frame_logits'], teacher, mask)
  np.testing.assert_allclose(terms['kd'], kd, rtol=1e-6)


def test_full_objective_video_without_memory_excludes_dem_terms():
  c, _, params = _small_model()
  feats, mask = _videos(3, 16, 32, [16, 11, 6])
  labels = np.zeros((3, 5), np.float32)
  labels[0, 0] = labels[1, [1, 3]] = labels[2, 2] = 1.0
  # Only class 0's row is filled: videos 1 and 2 have no readable slot.
  mem, valid = _memory(5, c.memory.slots, 32, filled_classes=[0])
  before, after = _forward_fn()(params, feats, mask, mem, valid, labels)
  np.testing.assert_array_equal(after['has_memory'], [True, False, False])
  lam = schedules.lambda_s(c, True)
  total, terms = losses.issf_objective(after, labels, mask, lam, c.loss)
  ref_total, ref_terms = losses.issf_objective(before, labels, mask, lam, c.loss)
  np.testing.assert_array_equal(terms['dem_ca'][1:], 0.0)
  np.testing.assert_array_equal(terms['dem_mil'][1:], 0.0)
  # Without a memory read, the video's loss is the pre-memory one (same lambda_s).
  np.testing.assert_allclose(total[1:], ref_total[1:], rtol=1e-6)
  np.testing.assert_allclose(terms['kd'][1:], ref_terms['kd'][1:], rtol=1e-6)
  assert abs(float(total[0]) - float(ref_total[0])) > 1e-3


def test_full_objective_padded_equals_unpadded():
  c, _, params = _small_model()
  lengths = [16, 11, 6]
  feats, mask = _videos(3, 16, 32, lengths)
  labels = np.zeros((3, 5), np.float32)
  labels[0, 0] = labels[1, [1, 3]] = labels[2, [2, 0]] = 1.0
  mem, valid = _memory(5, c.memory.slots, 32, filled_classes=[0, 1, 2])
  lam = schedules.lambda_s(c, True)
  _, out = _forward_fn()(params, feats, mask, mem, valid, labels)
  _, terms = losses.issf_objective(out, labels, mask, lam, c.loss)
  # Video 1 alone at its true length.
  t = lengths[1]
  _, single = _forward_fn()(params, feats[1:2, :t], mask[1:2, :t], mem, valid, labels[1:2])
  _, single_terms = losses.issf_objective(single, labels[1:2], mask[1:2, :t], lam, c.loss)
  assert set(single_terms) == set(terms)
  for name in terms:
    np.testing.assert_allclose(terms[name][1], single_terms[name][0], rtol=1e-5, atol=1e-6,
                               err_msg=name)  # fmt: skip


def test_full_objective_of_a_padding_video_is_finite():
  """pad_batch's invalid videos (no true snippet, no label) must not poison the batch."""
  c, _, params = _small_model()
  feats, mask = _videos(3, 16, 32, [16, 11, 0])
  labels = np.zeros((3, 5), np.float32)
  labels[0, 0] = labels[1, 1] = 1.0
  mem, valid = _memory(5, c.memory.slots, 32, filled_classes=[0, 1])
  outs = _forward_fn()(params, feats, mask, mem, valid, labels)
  for out, lam in zip(outs, (1.0, 0.5), strict=True):
    _, terms = losses.issf_objective(out, labels, mask, lam, c.loss)
    for name, value in terms.items():
      assert np.isfinite(np.asarray(value)).all(), name
    assert float(terms['att'][2]) == 0.0 and float(terms['kd'][2]) == 0.0


def test_rskp_base_objective_matches_its_formula():
  c, _, params = _small_model()
  feats, mask = _videos(3, 16, 32, [16, 9, 12])
  labels = np.eye(5, dtype=np.float32)[[1, 4, 0]]
  before, _ = _forward_fn()(params, feats, mask, *_memory(5, 5, 32, [0]), labels)
  teacher = before['brm']['frame_logits']
  total, terms = losses.rskp_base_objective(before['base'], labels, teacher, mask, c.loss)
  expect = terms['nce_fore'] + 0.2 * terms['nce_back'] + 0.1 * terms['att'] + 1.0 * terms['kd']
  np.testing.assert_allclose(total, expect, rtol=1e-6)


# ----------------------------------------------------------------------------- RSKP parity


def test_parity_cases_found():
  assert CASES, f'no parity_case*.npz in {[str(d) for d in _parity_dirs()]}'


@functools.cache
def _parity_setup(weights_path: str, dim: int, num_classes: int):
  c = _config(num_classes, dim, use_brm=False)
  model = build_model(c.model)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))  # no init compute
  params = interop.import_rskp_state_dict(dict(np.load(weights_path)), shapes)

  def objective(p, x, label, teacher, mask):
    out = model.apply({'params': p}, x, mask, train=False, method=ISSF.encode)
    total, terms = losses.rskp_base_objective(out['base'], label, teacher, mask, c.loss)
    return total[0], (terms, out)

  jitted = fast_jit(jax.value_and_grad(objective, has_aux=True))

  def pinned(*args):  # float32 matmuls: TF32 is the default on recent GPUs
    with jax.default_matmul_precision('float32'):
      return jitted(*args)

  return c, params, pinned


def _checksum(a):
  a = np.asarray(a, np.float64)
  return np.array([a.sum(), np.abs(a).sum(), np.square(a).sum()])


@pytest.mark.parametrize('case_path', CASES, ids=[p.stem for p in CASES])
def test_rskp_parity(case_path):
  d = dict(np.load(case_path))
  _, num_snippets, dim = d['X'].shape
  num_classes = d['label'].shape[0]
  weights = _weights_path(case_path, dim, num_classes)
  _, params, fn = _parity_setup(str(weights), dim, num_classes)
  mask = jnp.ones((1, num_snippets), bool)
  (total, (terms, out)), grads = fn(params, d['X'], d['label'][None], d['teacher'][None], mask)

  np.testing.assert_array_equal(out['embedded'], d['embedded'])
  base = out['base']
  np.testing.assert_allclose(base['frame_logits'][0], d['frm_scr'], atol=1e-5)
  np.testing.assert_allclose(base['attention'][0], d['class_agno_att'], atol=5e-6)
  np.testing.assert_allclose(base['p_ca'][0], d['ca_vid_pred'], atol=5e-6)
  np.testing.assert_allclose(base['p_cw'][0], d['cw_vid_pred'], atol=5e-6)

  for name in ('nce_fore', 'nce_back', 'att', 'kd', 'total'):
    np.testing.assert_allclose(terms[name][0], d[f'loss_{name}'], rtol=1e-5, atol=1e-6,
                               err_msg=name)  # fmt: skip
  np.testing.assert_allclose(total, d['loss_total'], rtol=1e-5, atol=1e-6)

  tol = dict(rtol=1e-4, atol=1e-5)
  g_head, g_emb = grads['head'], grads['embedding']['dense']
  np.testing.assert_allclose(g_head['ac_center'], d['grad/ac_center'], **tol)
  if num_snippets == 1:  # ~1e-15 in RSKP: numerically zero (parity README §2.6), atol only
    np.testing.assert_allclose(g_head['fg_center'], d['grad/fg_center'], rtol=0, atol=1e-5)
  else:
    np.testing.assert_allclose(g_head['fg_center'], d['grad/fg_center'], **tol)
  np.testing.assert_allclose(g_emb['bias'], d['grad/feature_embedding.0.bias'], **tol)
  g_w = np.asarray(g_emb['kernel']).T  # Flax kernel = W.T
  if 'grad/feature_embedding.0.weight' in d:
    np.testing.assert_allclose(g_w, d['grad/feature_embedding.0.weight'], **tol)
  else:
    rows = d['grad_rows_index']
    np.testing.assert_allclose(g_w[rows], d['grad_rows/feature_embedding.0.weight'], **tol)
    np.testing.assert_allclose(
      _checksum(g_w), d['grad_checksum/feature_embedding.0.weight'], rtol=1e-4
    )


def test_rskp_parity_padded_equals_unpadded():
  """A parity case padded in time (as the train step pads) gives the same losses."""
  case = next((p for p in CASES if np.load(p)['X'].shape[1] > 1), None)
  if case is None:
    pytest.fail('no parity case with T > 1')
  d = dict(np.load(case))
  _, num_snippets, dim = d['X'].shape
  num_classes = d['label'].shape[0]
  _, params, fn = _parity_setup(str(_weights_path(case, dim, num_classes)), dim, num_classes)
  pad = 16 - num_snippets % 16
  x = np.pad(d['X'], ((0, 0), (0, pad), (0, 0)), constant_values=1.0)  # non-zero padding
  teacher = np.pad(d['teacher'], ((0, pad), (0, 0)), constant_values=9.0)[None]
  mask = np.arange(num_snippets + pad)[None] < num_snippets
  (_, (terms, _)), _ = fn(params, x, d['label'][None], teacher, mask)
  for name in ('nce_fore', 'nce_back', 'att', 'kd', 'total'):
    np.testing.assert_allclose(terms[name][0], d[f'loss_{name}'], rtol=1e-5, atol=1e-6,
                               err_msg=name)  # fmt: skip
