"""Gradient accumulation + Adam against RSKP's own 3-step run (`tests/testdata/rskp_parity`,
its README §2.4): 10 videos, base-branch loss with fixed teachers, dropout off, gradients SUMMED
over the videos, then `torch.optim.Adam(lr=5e-5, betas=(0.9, 0.99), weight_decay=5e-4)`.

Two layouts: d64 (full gradients, params and Adam moments after each of 3 steps) and d2048
(kept aside; rows of W and full-matrix checksums). Every `optim_*.npz` found in
`$ISSF_RSKP_PARITY_DIR` or `tests/testdata/rskp_parity` is checked.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from issf_jax import interop, losses
from issf_jax.model import ISSF, build_model, init_params
from issf_jax.train.optimizer import make_optimizer

REPO = Path(__file__).resolve().parents[1]
REPO_PARITY = REPO / 'tests' / 'testdata' / 'rskp_parity'
ENV_DIR = 'ISSF_RSKP_PARITY_DIR'
fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
LR = 5e-5

# torch name -> (path in our params, transpose)
NAMES = {
  'ac_center': (('head', 'ac_center'), False),
  'fg_center': (('head', 'fg_center'), False),
  'feature_embedding.0.bias': (('embedding', 'dense', 'bias'), False),
  'feature_embedding.0.weight': (('embedding', 'dense', 'kernel'), True),  # kernel = W.T
}


def _dirs() -> list[Path]:
  return ([Path(os.environ[ENV_DIR])] if os.environ.get(ENV_DIR) else []) + [REPO_PARITY]


def _find() -> list[Path]:
  found = {}
  for d in _dirs():
    for path in sorted(d.glob('optim_*.npz')) if d.is_dir() else []:
      found.setdefault(path.name, path)
  return [found[k] for k in sorted(found)]


FILES = _find()


def _weights(path: Path, dim: int, num_classes: int) -> Path:
  name = f'weights_d{dim}_c{num_classes}.npz'
  for d in [path.parent] + _dirs():
    if (d / name).is_file():
      return d / name
  raise FileNotFoundError(f'{name} (weights of {path}) not found in {_dirs()}')


def _get(tree, name):
  path, transpose = NAMES[name]
  for k in path:
    tree = tree[k]
  tree = np.asarray(tree)
  return tree.T if transpose else tree


def _checksum(a):
  a = np.asarray(a, np.float64)
  return np.array([a.sum(), np.abs(a).sum(), np.square(a).sum()])


@functools.cache
def _run(path_str: str):
  """Our 3 steps on the padded batch; returns per-step losses, grads, params and Adam state."""
  path = Path(path_str)
  d = dict(np.load(path))
  num_videos, num_snippets, dim = d['X'].shape
  num_classes = d['labels'].shape[1]
  c = ml_collections.ConfigDict()
  c.model = common.model_config(num_classes=num_classes, feature_dim=dim)
  c.model.use_brm = False  # the base branch only
  c.loss = common.loss_config()
  model = build_model(c.model)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  weights = dict(np.load(_weights(path, dim, num_classes)))
  params0 = interop.import_rskp_state_dict(weights, shapes)
  mask = np.arange(num_snippets)[None] < d['lengths'][:, None]

  def per_video(params, x, labels, teacher, mask):
    out = model.apply({'params': params}, x, mask, train=False, method=ISSF.encode)
    total, terms = losses.rskp_base_objective(out['base'], labels, teacher, mask, c.loss)
    return total, terms

  def summed(params, *batch):
    total, terms = per_video(params, *batch)
    return total.sum(), terms  # RSKP: one backward per video, gradients summed

  optimizer = make_optimizer(common.optim_config(LR))

  @fast_jit
  def step(params, opt_state):
    (loss, terms), grads = jax.value_and_grad(summed, has_aux=True)(
      params, d['X'], d['labels'], d['teacher'], mask
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, terms, grads

  params, opt_state = params0, optimizer.init(params0)
  history = []
  for _ in range(3):
    with jax.default_matmul_precision('float32'):  # TF32 is the default on recent GPUs
      params, opt_state, loss, terms, grads = step(params, opt_state)
    adam = opt_state[1]
    assert isinstance(adam, optax.ScaleByAdamState)
    history.append(dict(loss=loss, terms=terms, grads=grads, params=params, m=adam.mu, v=adam.nu))
  return d, params0, history, (model, c, per_video, mask)


def test_optim_files_found():
  assert FILES, f'no optim_*.npz in {[str(d) for d in _dirs()]}'


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_losses_per_step(path):
  d, _, history, _ = _run(str(path))
  names = ('nce_fore', 'nce_back', 'att', 'kd', 'total')
  per_video = np.stack([np.asarray(history[0]['terms'][n]) for n in names], -1)
  np.testing.assert_allclose(per_video, d['per_video_losses_step1'], rtol=1e-5, atol=1e-6)
  losses_per_step = [float(h['loss']) for h in history]
  np.testing.assert_allclose(losses_per_step, d['summed_total_loss_per_step'], rtol=1e-5)


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_summed_gradients(path):
  d, _, history, _ = _run(str(path))
  for s in (1, 2, 3):
    tol = dict(rtol=1e-4, atol=1e-5) if s == 1 else dict(rtol=0, atol=1e-4)
    grads = history[s - 1]['grads']
    for name in NAMES:
      key = f'grad_step{s}/{name}'
      if key in d:
        np.testing.assert_allclose(_get(grads, name), d[key], **tol, err_msg=key)
    rows_key = f'grad_step{s}_rows/feature_embedding.0.weight'
    if rows_key in d:  # d2048 layout
      g_w = _get(grads, 'feature_embedding.0.weight')
      np.testing.assert_allclose(g_w[d['w_rows_index']], d[rows_key], **tol, err_msg=rows_key)
      np.testing.assert_allclose(
        _checksum(g_w), d[f'grad_step{s}_checksum/feature_embedding.0.weight'], rtol=1e-4
      )


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_params_and_adam_moments(path):
  d, params0, history, _ = _run(str(path))
  checked = 0
  for s in (1, 2, 3):
    h = history[s - 1]
    for name in NAMES:  # `mu` is RSKP's only (ISSF drops it): skipped
      for prefix, tree, tol in (
        ('params_after', h['params'], dict(rtol=0, atol=5e-7)),
        ('adam_exp_avg_after', h['m'], dict(rtol=1e-4, atol=1e-6)),
        ('adam_exp_avg_sq_after', h['v'], dict(rtol=2e-4, atol=1e-9)),
      ):
        key = f'{prefix}{s}/{name}'
        if key in d:
          np.testing.assert_allclose(_get(tree, name), d[key], **tol, err_msg=key)
          checked += 1
    rows_key = f'params_after{s}_rows/feature_embedding.0.weight'
    if rows_key in d:  # d2048 layout
      w = _get(h['params'], 'feature_embedding.0.weight')
      np.testing.assert_allclose(w[d['w_rows_index']], d[rows_key], rtol=0, atol=5e-7)
      delta = w.astype(np.float64) - _get(params0, 'feature_embedding.0.weight')
      np.testing.assert_allclose(
        _checksum(delta), d[f'params_after{s}_delta_checksum/feature_embedding.0.weight'],
        rtol=1e-4,
      )  # fmt: skip
      checked += 1
  assert checked >= 4


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_first_adam_step_is_lr_times_sign(path):
  """Oracle (docs/design.md §10): the first step is -lr (g + wd theta) / (|g + wd theta| + 1e-8),
  g the SUMMED gradient."""
  _, params0, history, _ = _run(str(path))
  for name in NAMES:
    theta = _get(params0, name).astype(np.float64)
    g = _get(history[0]['grads'], name).astype(np.float64) + 5e-4 * theta
    expect = theta - LR * g / (np.abs(g) + 1e-8)
    actual = _get(history[0]['params'], name)
    # float32: one rounding of theta + update, plus a relative 1e-6 on the update itself.
    tol = np.spacing(np.abs(expect).astype(np.float32)).astype(np.float64) + 1e-6 * LR
    assert np.all(np.abs(actual - expect) <= tol), name


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_unpadded_videos_match_the_padded_batch(path):
  """Each video alone at its true length gives the padded batch's loss (RSKP has no padding)."""
  d, params0, history, (model, c, per_video, _) = _run(str(path))
  jitted = fast_jit(per_video)

  def fn(*args):
    with jax.default_matmul_precision('float32'):
      return jitted(*args)

  lengths = d['lengths']
  for v in (int(np.argmin(lengths)), int(np.argmax(lengths))):  # T = 1 (or 2) and T = 89
    t = int(lengths[v])
    total, _ = fn(
      params0, d['X'][v : v + 1, :t], d['labels'][v : v + 1], d['teacher'][v : v + 1, :t],
      jnp.ones((1, t), bool),
    )  # fmt: skip
    np.testing.assert_allclose(total[0], history[0]['terms']['total'][v], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total[0], d['per_video_losses_step1'][v, 4], rtol=1e-5, atol=1e-6)
