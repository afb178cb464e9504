"""RSKP weight import and base-branch parity with RSKP's own PyTorch outputs.

Cases come from `$ISSF_RSKP_PARITY_DIR` when set, else `tests/testdata/rskp_parity`
(its README.md §2.2-2.6). Every `parity_case*.npz` found is checked, so the same test also
checks cases kept aside when the variable points to them. Tolerances (README §2.6):
`embedded` exact; `frm_scr` atol 1e-5; probabilities and attention atol 5e-6; rtol 1e-5.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import common
from issf_jax import interop
from issf_jax.model import build_model, init_params
from tests.conftest import SMALL_C, SMALL_D, TESTDATA_DIR, fast_jit, small_config

ENV_VAR = 'ISSF_RSKP_PARITY_DIR'
WEIGHTS_BY_DIM = {2048: 'weights_d2048_c20.npz', 64: 'weights_d64_c5.npz'}
# golden key -> (branch output, atol)
COMPARED = {
  'ca_vid_pred': ('p_ca', 5e-6),
  'cw_vid_pred': ('p_cw', 5e-6),
  'class_agno_att': ('attention', 5e-6),
  'frm_scr': ('frame_logits', 1e-5),
}


def _parity_dir() -> Path:
  override = os.environ.get(ENV_VAR)
  return Path(override) if override else TESTDATA_DIR / 'rskp_parity'


def _case_files() -> list[Path]:
  folder = _parity_dir()
  if not folder.is_dir():
    return []
  return sorted(folder.glob('parity_case*.npz'))


def test_parity_cases_are_found():
  folder = _parity_dir()
  assert folder.is_dir(), f'{ENV_VAR}={folder} is not a directory'
  assert _case_files(), f'no parity_case*.npz in {folder}'


def _weights_file(folder: Path, case: Path, d_in: int) -> Path:
  index = folder / 'index.json'
  if index.is_file():
    entry = json.loads(index.read_text()).get('cases', {}).get(case.stem)
    if entry is not None:
      return folder / entry['weights_file']
  return folder / WEIGHTS_BY_DIM[d_in]


_MODELS: dict = {}


def _imported_model(weights: Path, num_classes: int, dim: int, small_params):
  """(jitted eval apply, imported params), cached per weights file."""
  if weights not in _MODELS:
    config = common.model_config(num_classes=num_classes, feature_dim=dim)
    model = build_model(config)
    if config == small_config():
      params = small_params  # the same model: reuse the session's initial parameters
    else:
      params = fast_jit(lambda key: init_params(model, key))(jax.random.key(0))
    with np.load(weights) as state:
      params = interop.import_rskp_state_dict(state, params)

    # The compared forward keeps the default (production) compiler settings, with float32
    # matmuls: on recent GPUs JAX's default is TF32 (10-bit mantissa), about 1e-3 off RSKP's
    # float32. On CPU this changes nothing.
    @jax.jit
    def apply(p, x, m):
      with jax.default_matmul_precision('float32'):
        return model.apply({'params': p}, x, m, train=False)

    _MODELS[weights] = (apply, params)
  return _MODELS[weights]


@pytest.mark.parametrize('case', _case_files(), ids=lambda p: p.stem)
def test_base_branch_matches_rskp(case, small_params):
  golden = dict(np.load(case))
  x = golden['X']
  num_classes, d_in = golden['label'].shape[0], x.shape[-1]
  weights = _weights_file(case.parent, case, d_in)
  apply, params = _imported_model(weights, num_classes, d_in, small_params)
  out = apply(params, x, np.ones(x.shape[:2], bool))
  np.testing.assert_array_equal(np.asarray(out['embedded']), golden['embedded'])
  for key, (name, atol) in COMPARED.items():
    np.testing.assert_allclose(
      np.asarray(out['base'][name][0]), golden[key], rtol=1e-5, atol=atol, err_msg=key
    )


# ---------------------------------------------------------------- interop


def _state_dict(params, rng=None):
  """An RSKP-layout state dict with the shapes of `params` (random values, plus `mu`)."""
  rng = rng or np.random.default_rng(0)
  shapes = {k: v.shape for k, v in interop.export_rskp_state_dict(params).items()}
  state = {k: rng.normal(size=shape).astype(np.float32) for k, shape in shapes.items()}
  state['mu'] = rng.normal(size=(8, SMALL_D)).astype(np.float32)
  return state


def test_import_places_every_weight(small_params):
  state = _state_dict(small_params)
  before = jax.tree.map(np.array, small_params)
  new = interop.import_rskp_state_dict(state, small_params)
  dense = new['embedding']['dense']
  np.testing.assert_array_equal(dense['kernel'], state['feature_embedding.0.weight'].T)
  np.testing.assert_array_equal(dense['bias'], state['feature_embedding.0.bias'])
  np.testing.assert_array_equal(new['head']['ac_center'], state['ac_center'])
  np.testing.assert_array_equal(new['head']['fg_center'], state['fg_center'])
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(new))
  # BRM parameters (RSKP has none) are kept, and the input tree is not modified.
  jax.tree.map(np.testing.assert_array_equal, new['brm'], before['brm'])
  jax.tree.map(np.testing.assert_array_equal, small_params, before)
  assert jax.tree.structure(new) == jax.tree.structure(small_params)


def test_round_trip(small_params):
  state = _state_dict(small_params)
  exported = interop.export_rskp_state_dict(interop.import_rskp_state_dict(state, small_params))
  assert set(exported) == set(state) - {'mu'}
  for key, value in exported.items():
    np.testing.assert_array_equal(value, state[key], err_msg=key)
  again = interop.import_rskp_state_dict(interop.export_rskp_state_dict(small_params), small_params)
  jax.tree.map(np.testing.assert_array_equal, again, small_params)


def test_round_trip_of_the_golden_weights(small_params):
  path = _parity_dir() / WEIGHTS_BY_DIM[SMALL_D]
  if not path.is_file() and os.environ.get(ENV_VAR):
    pytest.skip(f'{ENV_VAR} names a folder without {path.name}')
  with np.load(path) as weights:
    state = dict(weights)
  assert state['ac_center'].shape == (SMALL_C + 1, SMALL_D)
  exported = interop.export_rskp_state_dict(interop.import_rskp_state_dict(state, small_params))
  for key, value in exported.items():
    np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_import_errors(small_params):
  state = _state_dict(small_params)
  missing = {k: v for k, v in state.items() if k != 'fg_center'}
  with pytest.raises(ValueError, match='missing.*fg_center'):
    interop.import_rskp_state_dict(missing, small_params)
  with pytest.raises(ValueError, match='cannot place.*em_token'):
    interop.import_rskp_state_dict({**state, 'em_token': state['mu']}, small_params)
  wrong = {**state, 'ac_center': np.zeros((SMALL_C + 2, SMALL_D), np.float32)}
  with pytest.raises(ValueError, match='head.ac_center'):
    interop.import_rskp_state_dict(wrong, small_params)
  transposed = {**state, 'feature_embedding.0.weight': np.zeros((SMALL_D, SMALL_D + 1), np.float32)}
  with pytest.raises(ValueError, match='embedding.kernel'):
    interop.import_rskp_state_dict(transposed, small_params)
