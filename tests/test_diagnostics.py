"""issf_jax.diagnostics: every branch's frame logits, with hand-computed DEM oracles.

A memory whose rows hold one vector per class makes the DEM read exact by hand: a video of
class c reads F_hat = v_c at every snippet (a convex combination of identical slots), so its
DEM logits are the same at every snippet and its attention is uniform over the N slots read
(exp of the entropy = N). The pseudo-label is the recipe's mix of the BRM and DEM logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from issf_jax import diagnostics
from issf_jax import memory as memory_lib
from issf_jax.model import build_model, init_params

T, C, D = 12, 4, 32


def _config(args: str):
  config = synthetic.get_config(f'scale=tiny,{args}')
  config.model.num_classes, config.model.feature_dim, config.model.embed_dim = C, D, D
  return config


def _params(config):
  model = build_model(config.model)
  return jax.jit(lambda key: init_params(model, key))(jax.random.key(0))


def _inputs():
  rng = np.random.default_rng(0)
  features = np.abs(rng.normal(size=(2, T, D))).astype(np.float32)
  mask = np.arange(T)[None] < np.array([[T], [7]])  # the second video is padded
  labels = np.zeros((2, C), np.float32)
  labels[0, 1] = 1
  labels[1, 3] = 1
  return features, mask, labels


def _constant_rows_memory(config, values: np.ndarray):
  """Every slot of class c holds values[c] ([C, D]); all slots filled."""
  slots = config.memory.slots
  return memory_lib.MemoryBank(
    features=jnp.asarray(np.repeat(values[:, None], slots, axis=1)),
    scores=jnp.ones((C, slots)),
    filled=jnp.ones((C, slots), bool),
    initialized=jnp.ones((), bool),
  )


@pytest.mark.parametrize('recipe, weights', [('authors', (0.8, 0.2)), ('spec_v1', (1.0, 1.0))])
def test_dem_read_of_identical_slots_and_the_recipes_mix(recipe, weights):
  config = _config(f'recipe={recipe}')
  params = _params(config)
  features, mask, labels = _inputs()
  values = np.abs(np.random.default_rng(1).normal(size=(C, D))).astype(np.float32)
  memory = _constant_rows_memory(config, values)
  assert diagnostics.has_dem(config, memory)
  fn = diagnostics.make_branch_logits_fn(config, with_dem=True)
  logits, aux = fn(params, memory, features, mask, labels)
  assert sorted(logits) == ['base', 'brm', 'dem', 'mix']
  for b, t in ((0, T), (1, 7)):
    dem = np.asarray(logits['dem'][b, :t])
    np.testing.assert_allclose(dem, np.broadcast_to(dem[0], dem.shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux['slots_read'][b, :t], config.memory.slots, rtol=1e-4)
  w_brm, w_dem = weights
  np.testing.assert_allclose(
    logits['mix'], w_brm * logits['brm'] + w_dem * logits['dem'], rtol=1e-5, atol=1e-5
  )
  # Another class's memory gives other DEM logits: the read follows the video's labels.
  other = fn(params, memory, features, mask, labels[::-1])[0]['dem']
  assert not np.allclose(other[0, 0], logits['dem'][0, 0])
  # The branches before the memory do not depend on it.
  empty = memory_lib.empty(C, config.memory.slots, D)
  assert not diagnostics.has_dem(config, empty)
  no_dem, aux0 = diagnostics.make_branch_logits_fn(config, with_dem=False)(
    params, empty, features, mask, labels
  )
  assert sorted(no_dem) == ['base', 'brm']
  np.testing.assert_array_equal(no_dem['base'], logits['base'])
  np.testing.assert_array_equal(no_dem['brm'], logits['brm'])
  np.testing.assert_array_equal(aux0['slots_read'], 1.0)
  np.testing.assert_array_equal(aux0['attention'], aux['attention'])


def test_base_only_run_and_teacher_probs():
  config = _config('modules=base')
  assert not diagnostics.has_dem(config, _constant_rows_memory(config, np.ones((C, D))))
  params = _params(config)
  features, mask, labels = _inputs()
  logits, aux = diagnostics.make_branch_logits_fn(config, with_dem=False)(
    params, None, features, mask, labels
  )
  assert sorted(logits) == ['base'] and aux['attention'].shape == (2, T)
  probs = np.asarray(diagnostics.teacher_probs(logits['base'], 0.2))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  x = np.asarray(logits['base'][0, 0], np.float64) / 0.2
  np.testing.assert_allclose(probs[0, 0], np.exp(x - x.max()) / np.exp(x - x.max()).sum(), 1e-5)


def test_timeline_with_the_branches_panel(tmp_path):
  from issf_jax import viz

  rng = np.random.default_rng(0)
  probs = {name: rng.dirichlet(np.ones(C + 1), size=T) for name in ('base', 'brm', 'dem', 'mix')}
  path = tmp_path / 'timeline.png'
  viz.plot_timeline(
    str(path), cas=rng.random((T, C + 1)), attention=rng.random(T),
    video_scores=rng.random(C + 1), detections=np.array([[1, 0.5, 2.0, 0.3]]),
    class_names=[f'c{i}' for i in range(C)], seconds_per_snippet=0.64,
    ground_truth=[('c1', 0.6, 1.9)], branches=probs,
  )  # fmt: skip
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 10_000
