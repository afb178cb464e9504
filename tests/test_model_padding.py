"""Padded = unpadded: a video's outputs do not depend on the padding or on its batch mates.

One batch [6, 400] holds six videos of lengths 1, 2, 3, 7, 64 and 333 (mixed lengths, zero
and loud padding). Each video is also run alone at its true length. Every output of every
branch (embedded, base/brm/dem head outputs, salient, refined, enhanced, has_memory,
pseudo_logits) must agree on the true snippets to 1e-5 relative, in eval mode.

Every option value is covered by six configs, each of which changes several options at once
(the padding logic of each module does not depend on the others), so the test compiles
seven programs: one padded, one per length. Every config runs the DEM branch with a memory.
Dropout and the random saliency strategy draw with the padded shape [T_pad], so they are not
padding-invariant by construction; the random strategy is only checked to never mark padding.
"""

import jax
import numpy as np
import pytest

from issf_jax.model import build_model
from tests.conftest import SMALL_C, SMALL_D, fast_jit, small_config

LENGTHS = (1, 2, 3, 7, 64, 333)
T_PAD = 400  # the next multiple of 64 above 333, plus 16
D, C, N = SMALL_D, SMALL_C, 5

CONFIGS = {
  'weighted/official/l1/dot': {},
  'self/paper/l2/dot_sqrt_d': dict(
    brm_variant='self', saliency_mode='paper', saliency_distance='l2', attn_logits='dot_sqrt_d'
  ),
  'no_salient/official/cosine/cosine5/p0.9': dict(
    brm_variant='no_salient', saliency_distance='cosine', attn_logits='cosine5', saliency_ratio=0.9
  ),
  'no_non_salient/paper/classification/dot': dict(
    brm_variant='no_non_salient', saliency_mode='paper', saliency_strategy='classification'
  ),
  'add/official/classification/dot_sqrt_d/raw': dict(
    brm_variant='add',
    saliency_strategy='classification',
    attn_logits='dot_sqrt_d',
    saliency_input='raw',
  ),
  'temporal_only/paper/l1/cosine5/p0.9': dict(
    brm_variant='temporal_only', saliency_mode='paper', attn_logits='cosine5', saliency_ratio=0.9
  ),
}
RANDOM = {'random/official': dict(saliency_strategy='random')}
MODELS = {name: build_model(small_config(**o)) for name, o in {**CONFIGS, **RANDOM}.items()}


def _make_apply(names):
  @fast_jit
  def apply(params, feats, mask, video_keys, memory, slot_valid, labels):
    return {
      name: MODELS[name].apply(
        {'params': params},
        feats,
        mask,
        train=False,
        video_keys=video_keys,
        memory=memory,
        slot_valid=slot_valid,
        labels=labels,
      )
      for name in names
    }

  return apply


_apply_padded = _make_apply(tuple(CONFIGS) + tuple(RANDOM))
_apply_alone = _make_apply(tuple(CONFIGS))


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  videos = [np.abs(rng.normal(size=(t, D))).astype(np.float32) for t in LENGTHS]
  feats = np.zeros((len(LENGTHS), T_PAD, D), np.float32)
  mask = np.zeros((len(LENGTHS), T_PAD), bool)
  for i, v in enumerate(videos):
    feats[i, : len(v)] = v
    mask[i, : len(v)] = True
  feats[1::2][~mask[1::2]] = 7.0  # loud padding in every other video
  memory = (np.abs(rng.normal(size=(1, C, N, D))) * 0.5).astype(np.float32)
  slot_valid = rng.random((1, C, N)) < 0.7
  slot_valid[..., 0] = True
  labels = np.zeros((len(LENGTHS), C), np.float32)
  labels[[0, 2, 3, 4, 5], [1, 0, 4, 2, 3]] = 1
  labels[5, 1] = 1
  # video 1 (T = 2) has no label: nothing to read, has_memory False.
  keys = jax.random.split(jax.random.key(5), len(LENGTHS))
  return dict(
    videos=videos,
    feats=feats,
    mask=mask,
    memory=memory,
    slot_valid=slot_valid,
    labels=labels,
    keys=keys,
  )


@pytest.fixture(scope='module')
def padded(small_params, data):
  d = data
  out = _apply_padded(
    small_params, d['feats'], d['mask'], d['keys'], d['memory'], d['slot_valid'], d['labels']
  )
  return jax.tree.map(np.asarray, out)


def _leaves(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_padding_outputs_are_zero_and_finite(padded, data):
  mask = data['mask']
  for name, leaf in _leaves(padded).items():
    assert np.isfinite(leaf).all(), name
    if leaf.ndim >= 2 and leaf.shape[1] == T_PAD:
      assert np.all(leaf[~mask] == 0), f'{name} is not zero on padding'
  expected = {
    "['enhanced']",
    "['base']['frame_logits']",
    "['brm']['p_ca']",
    "['dem']['p_cw']",
    "['salient']",
    "['pseudo_logits']",
    "['has_memory']",
  }
  names = {n.split(']', 1)[1] for n in _leaves(padded)}
  assert expected <= names
  np.testing.assert_array_equal(
    padded['weighted/official/l1/dot']['has_memory'], [True, False, True, True, True, True]
  )


def test_random_saliency_never_marks_padding(padded, data):
  salient = padded['random/official']['salient']
  lengths = np.asarray(LENGTHS)
  k = np.maximum(lengths // 2 - 1, 1)
  count = salient.sum(-1)
  assert not salient[~data['mask']].any()
  assert np.all(count >= k) and np.all(count <= np.minimum(lengths, 2 * k))


@pytest.mark.parametrize('index', range(len(LENGTHS)), ids=[f'T{t}' for t in LENGTHS])
def test_padded_equals_unpadded(small_params, data, padded, index):
  d = data
  t = LENGTHS[index]
  alone = _apply_alone(
    small_params,
    d['videos'][index][None],
    np.ones((1, t), bool),
    d['keys'][index : index + 1],
    d['memory'],
    d['slot_valid'],
    d['labels'][index : index + 1],
  )
  alone = _leaves(jax.tree.map(np.asarray, alone))
  pad = _leaves(padded)
  assert set(alone) <= set(pad)
  for name, ref in alone.items():
    assert np.isfinite(ref).all(), name
    got = pad[name][index]
    if pad[name].ndim >= 2 and pad[name].shape[1] == T_PAD:
      got = got[:t]
    ref = ref[0]
    assert got.shape == ref.shape, name
    if ref.dtype == bool:
      np.testing.assert_array_equal(got, ref, err_msg=name)
    else:
      atol = 1e-5 * float(np.abs(ref).max()) if ref.size else 0.0
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=atol, err_msg=name)
