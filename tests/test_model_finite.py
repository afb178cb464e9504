"""No NaN or Inf, in outputs or gradients, on degenerate inputs.

Degenerate cases: T = 1 (a length-1 video in a padded batch, where official mode leaves the
non-salient set empty; test_model_padding.py checks the outputs of an unpadded T = 1), an
empty salient or non-salient set (BRM calls with no snippet or every snippet salient, for
every attention-logit kind), all-zero features and features scaled by 1e3. Training mode
(dropout) and the DEM branch are on.
"""

import jax
import jax.numpy as jnp
import numpy as np

from issf_jax.model import build_model
from issf_jax.model.refinement import BoundaryRefinement
from issf_jax.recipes import ATTN_LOGITS
from tests.conftest import SMALL_C, SMALL_D, fast_jit, small_config

D, C, N = SMALL_D, SMALL_C, 5
MODEL = build_model(small_config())


def _loss(out):
  """A loss touching every output: log-probabilities, logits, attention, features."""
  total = 0.0
  for branch in ('base', 'brm', 'dem'):
    o = out[branch]
    total += jnp.sum(jnp.log(o['p_ca'])) + jnp.sum(jnp.log(o['p_cw']))
    total += jnp.mean(o['frame_logits']) + jnp.sum(o['attention'])
  total += jnp.mean(out['refined']) + jnp.mean(out['enhanced']) + jnp.mean(out['pseudo_logits'])
  return total


@fast_jit
def _grads(params, feats, mask, keys, memory, slot_valid, labels):
  def loss(p, x):
    out = MODEL.apply(
      {'params': p},
      x,
      mask,
      train=True,
      video_keys=keys,
      memory=memory,
      slot_valid=slot_valid,
      labels=labels,
    )
    return _loss(out), out

  (value, out), g = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, feats)
  return {'loss': value, 'out': out, 'grads': g}


def _memory(batch):
  rng = np.random.default_rng(0)
  memory = (np.abs(rng.normal(size=(1, C, N, D))) * 0.5).astype(np.float32)
  slot_valid = np.ones((1, C, N), bool)
  labels = np.zeros((batch, C), np.float32)
  labels[:, 0] = 1
  return memory, slot_valid, labels


def _assert_finite(tree, what):
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    assert np.isfinite(np.asarray(leaf)).all(), f'{what}: non-finite {jax.tree_util.keystr(path)}'


def test_degenerate_inputs_are_finite(small_params):
  """[4, 8]: T = 1; all-zero features; features x 1e3; an ordinary video.

  Unpadded T = 1 (outputs) is checked by test_model_padding.py.
  """
  rng = np.random.default_rng(1)
  feats = np.zeros((4, 8, D), np.float32)
  mask = np.zeros((4, 8), bool)
  feats[0, :1] = np.abs(rng.normal(size=(1, D)))
  mask[0, :1] = True
  mask[1] = True  # all-zero features
  feats[2] = np.abs(rng.normal(size=(8, D))) * 1e3
  mask[2] = True
  feats[3, :5] = np.abs(rng.normal(size=(5, D)))
  mask[3, :5] = True
  batch = (feats, mask, jax.random.split(jax.random.key(3), 4), *_memory(4))
  padded = _grads(small_params, *batch)
  _assert_finite(padded, 'padded batch')
  # T = 1 in official mode: the only snippet is salient, the non-salient set is empty.
  assert np.asarray(padded['out']['salient'])[0, 0]
  # The loss reaches the parameters: the gradients are not identically zero.
  g = padded['grads'][0]
  assert float(jnp.abs(g['head']['ac_center']).max()) > 0
  assert float(jnp.abs(g['brm']['salient_unit']['fc2']['kernel']).max()) > 0


@fast_jit
def _brm_grads(params, feats, mask, salient):
  result = {}
  pairs = [(kind, 'weighted') for kind in ATTN_LOGITS] + [('dot', 'no_salient')]
  for kind, variant in pairs:

    def loss(p, x, kind=kind, variant=variant):
      brm = BoundaryRefinement(variant=variant, attn_logits=kind)
      refined = brm.apply({'params': p}, x, mask, salient)
      return jnp.sum(jnp.sin(refined)), refined

    result[kind, variant] = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, feats)
  return result


def test_brm_with_an_empty_set_has_finite_gradients(small_params):
  """Salient all False (empty salient set) and all True (empty non-salient set)."""
  rng = np.random.default_rng(5)
  feats = np.abs(rng.normal(size=(3, 6, D))).astype(np.float32)
  feats[1] = 0.0  # all-zero features
  feats[2] *= 1e3
  mask = np.ones((3, 6), bool)
  mask[1, 4:] = False
  for salient in (np.zeros_like(mask), mask.copy()):
    result = _brm_grads(small_params['brm'], feats, mask, salient)
    for name, ((_, refined), g) in result.items():
      _assert_finite((refined, g), f'{name} salient all {bool(salient.any())}')
      assert np.all(np.asarray(refined)[~mask] == 0)
