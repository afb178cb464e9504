"""The composed model: output shapes, one trace per input shape, per-video randomness, fusion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from issf_jax.model import build_model, fuse_predictions
from tests.conftest import SMALL_C, SMALL_D, fast_jit, small_config

B, T, D, C, N = 3, 16, SMALL_D, SMALL_C, 5
LENGTHS = np.array([16, 9, 4])
CONFIG = small_config()
MODEL = build_model(CONFIG)


@pytest.fixture(scope='module')
def forward():
  """The jitted training forward with a trace counter (the shapes it was traced for)."""
  traces = []

  @fast_jit
  def fwd(params, feats, mask, keys, memory, slot_valid, labels):
    traces.append(feats.shape)
    return MODEL.apply(
      {'params': params},
      feats,
      mask,
      train=True,
      video_keys=keys,
      memory=memory,
      slot_valid=slot_valid,
      labels=labels,
    )

  fwd.traces = traces
  return fwd


def _inputs(seed, t=T, lengths=LENGTHS):
  rng = np.random.default_rng(seed)
  feats = np.abs(rng.normal(size=(B, t, D))).astype(np.float32)
  mask = np.arange(t)[None, :] < lengths[:, None]
  feats *= mask[..., None]
  memory = np.abs(rng.normal(size=(1, C, N, D))).astype(np.float32)
  slot_valid = np.ones((1, C, N), bool)
  labels = np.zeros((B, C), np.float32)
  labels[0, 1] = labels[1, [0, 4]] = 1  # video 2: no label, so no readable memory
  keys = jax.random.split(jax.random.key(seed), B)
  return feats, mask, keys, memory, slot_valid, labels


def _leaves(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope='module')
def outputs(small_params, forward):
  return jax.tree.map(np.asarray, forward(small_params, *_inputs(0)))


def test_output_shapes(outputs):
  head = {
    'frame_logits': (B, T, C + 1),
    'attention': (B, T),
    'logits_ca': (B, C + 1),
    'logits_cw': (B, C + 1),
    'p_ca': (B, C + 1),
    'p_cw': (B, C + 1),
  }
  expected = {
    'embedded': (B, T, D),
    'salient': (B, T),
    'refined': (B, T, D),
    'enhanced': (B, T, D),
    'has_memory': (B,),
    'pseudo_logits': (B, T, C + 1),
    **{f'{branch}/{k}': s for branch in ('base', 'brm', 'dem') for k, s in head.items()},
  }
  got = {}
  for key, value in outputs.items():
    if isinstance(value, dict):
      got.update({f'{key}/{k}': v for k, v in value.items()})
    else:
      got[key] = value
  assert {k: v.shape for k, v in got.items()} == expected
  assert got['salient'].dtype == bool and got['has_memory'].dtype == bool
  assert all(v.dtype == np.float32 for k, v in got.items() if k not in ('salient', 'has_memory'))


def test_structure_without_memory_or_brm(small_params):
  feats, mask, keys, *_ = _inputs(1)
  out = jax.eval_shape(
    lambda: MODEL.apply({'params': small_params}, feats, mask, train=True, video_keys=keys)
  )
  assert set(out) == {'embedded', 'base', 'salient', 'refined', 'brm', 'pseudo_logits'}
  base_only = build_model(small_config(use_brm=False))
  out = jax.eval_shape(lambda: base_only.apply({'params': small_params}, feats, mask, train=False))
  assert set(out) == {'embedded', 'base'}


def test_one_trace_per_input_shape(small_params, forward):
  before = list(forward.traces)
  a = _inputs(2)
  b = _inputs(3, lengths=np.array([3, 16, 1]))  # same shapes, other values and lengths
  c = _inputs(4, t=24, lengths=np.array([24, 5, 17]))
  forward(small_params, *a)
  forward(small_params, *b)
  assert forward.traces.count((B, T, D)) == 1
  forward(small_params, *c)
  forward(small_params, *a)
  forward(small_params, *c)
  new = forward.traces[len(before) :]
  assert len(new) == len({(B, T, D), (B, 24, D)} - set(before))
  assert sorted(forward.traces) == sorted(set(forward.traces)), forward.traces
  assert {(B, T, D), (B, 24, D)} <= set(forward.traces)


def test_pseudo_logits_sum_the_refined_branches(outputs):
  brm, dem = outputs['brm']['frame_logits'], outputs['dem']['frame_logits']
  np.testing.assert_array_equal(outputs['has_memory'], [True, True, False])
  np.testing.assert_allclose(outputs['pseudo_logits'][:2], brm[:2] + dem[:2], rtol=1e-6)
  np.testing.assert_array_equal(outputs['pseudo_logits'][2], brm[2])
  mask = np.arange(T)[None, :] < LENGTHS[:, None]
  assert np.all(outputs['enhanced'][~mask] == 0)
  assert np.all(outputs['enhanced'][2] == 0)


def test_dropout_is_inverted_and_per_video(small_params, forward, outputs):
  feats, mask, keys, memory, slot_valid, labels = _inputs(0)
  emb = small_params['embedding']['dense']
  kernel, bias = np.asarray(emb['kernel'], np.float64), np.asarray(emb['bias'], np.float64)
  clean = np.maximum(feats @ kernel + bias, 0)
  clean *= mask[..., None]
  got = outputs['embedded']
  kept = got != 0
  want = clean[kept] / (1 - CONFIG.dropout)
  np.testing.assert_allclose(got[kept], want, rtol=1e-5, atol=1e-6 * want.max())
  active = clean > 0
  frac = 1 - kept[active].mean()
  assert abs(frac - CONFIG.dropout) < 0.05, frac
  # A video gets the same randomness whichever batch slot it lands in.
  perm = np.array([2, 0, 1])
  swapped = forward(
    small_params, feats[perm], mask[perm], keys[perm], memory, slot_valid, labels[perm]
  )
  ref = _leaves(outputs)
  for name, leaf in _leaves(swapped).items():
    np.testing.assert_allclose(leaf, ref[name][perm], rtol=1e-6, atol=1e-6, err_msg=name)
  # Other keys: another mask.
  other = forward(
    small_params, feats, mask, jax.random.split(jax.random.key(99), B), memory, slot_valid, labels
  )
  assert not np.array_equal(np.asarray(other['embedded']) != 0, kept)


def test_errors_without_keys(small_params):
  feats, mask, *_ = _inputs(5)
  with pytest.raises(ValueError, match='video_keys'):
    jax.eval_shape(lambda: MODEL.apply({'params': small_params}, feats, mask, train=True))
  random = build_model(small_config(saliency_strategy='random'))
  with pytest.raises(ValueError, match='keys'):
    jax.eval_shape(lambda: random.apply({'params': small_params}, feats, mask, train=False))


def test_fusion(outputs):
  mask = np.arange(T)[None, :] < LENGTHS[:, None]
  base, brm = outputs['base'], outputs['brm']
  video, cas = jax.tree.map(np.asarray, fuse_predictions(outputs, mask, CONFIG))
  np.testing.assert_allclose(video, 0.6 * base['p_ca'] + 0.4 * brm['p_ca'], rtol=1e-6)
  soft = lambda s: np.asarray(jax.nn.softmax(jnp.asarray(s), -1))
  frame = 0.6 * soft(base['frame_logits']) + 0.4 * soft(brm['frame_logits'])
  np.testing.assert_allclose(cas, frame * base['attention'][..., None], rtol=1e-6, atol=1e-7)
  assert cas.shape == (B, T, C + 1) and np.all(cas[~mask] == 0)
  base_config = small_config(fusion='base')
  video, cas = fuse_predictions(outputs, mask, base_config)
  np.testing.assert_allclose(video, base['p_ca'], rtol=1e-6)
  np.testing.assert_allclose(
    cas, soft(base['frame_logits']) * base['attention'][..., None], rtol=1e-6, atol=1e-7
  )
  with pytest.raises(ValueError, match='fusion'):
    fuse_predictions(outputs, mask, small_config(fusion='nope'))
