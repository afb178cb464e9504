"""Import RSKP PyTorch weights (a state_dict as a dict of numpy arrays) into ISSF params.

RSKP (`LeonHLJ/RSKP:model/main_branch.py`) keys:
  feature_embedding.0.weight  [D, D_in]  torch Linear layout (y = x W^T + b)
  feature_embedding.0.bias    [D]
  ac_center                   [C+1, D]
  fg_center                   [1, D]
  mu                          [8, D]     RSKP's EM tokens; ISSF drops them (ignored)
Parameters RSKP does not have (the BRM MLPs) keep the values of `params`.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax
import jax.numpy as jnp
import numpy as np

_REQUIRED = ('feature_embedding.0.weight', 'feature_embedding.0.bias', 'ac_center', 'fg_center')
_IGNORED = ('mu',)


def import_rskp_state_dict(state_dict: Mapping[str, np.ndarray], params: dict) -> dict:
  """Returns a copy of `params` with RSKP's embedding and head weights.

  Args:
    state_dict: RSKP `WSTAL.state_dict()` converted to numpy (e.g. `np.load('w.npz')`).
    params: ISSF params whose shapes the weights must match (from `init_params`).
  Raises:
    ValueError: a missing or unknown key, or a shape that does not match.
  """
  missing = [k for k in _REQUIRED if k not in state_dict]
  if missing:
    raise ValueError(f'RSKP state_dict is missing {missing}; it has {sorted(state_dict)}.')
  unknown = [k for k in state_dict if k not in _REQUIRED + _IGNORED]
  if unknown:
    raise ValueError(f'RSKP state_dict has keys ISSF cannot place: {unknown}.')
  new = flax.core.unfreeze(params)
  emb = new['embedding']['dense']
  head = new['head']
  assign = [
    ('embedding.kernel', emb, 'kernel', np.asarray(state_dict['feature_embedding.0.weight']).T),
    ('embedding.bias', emb, 'bias', np.asarray(state_dict['feature_embedding.0.bias'])),
    ('head.ac_center', head, 'ac_center', np.asarray(state_dict['ac_center'])),
    ('head.fg_center', head, 'fg_center', np.asarray(state_dict['fg_center'])),
  ]
  for name, tree, leaf, value in assign:
    if tuple(tree[leaf].shape) != value.shape:
      raise ValueError(
        f'RSKP weight for {name} has shape {value.shape}, ISSF expects {tuple(tree[leaf].shape)}'
        ' (check model.num_classes, model.feature_dim and model.embed_dim).'
      )
    tree[leaf] = jnp.asarray(value, jnp.float32)
  return new


def export_rskp_state_dict(params: dict) -> dict[str, np.ndarray]:
  """The inverse, for the parts RSKP has: torch-layout numpy arrays."""
  return {
    'feature_embedding.0.weight': np.asarray(params['embedding']['dense']['kernel']).T,
    'feature_embedding.0.bias': np.asarray(params['embedding']['dense']['bias']),
    'ac_center': np.asarray(params['head']['ac_center']),
    'fg_center': np.asarray(params['head']['fg_center']),
  }


# The authors' ISSF (MICLAB-BUPT/ISSF `arch/model.py`): RSKP's four tensors plus the BRM MLPs
# (torch Linear layout [out, in], no biases). The rest is created but never used by forward.
_AUTHORS_BRM = {
  'channel_weights.0.weight': ('salient_unit', 'fc1'),
  'channel_weights.2.weight': ('salient_unit', 'fc2'),
  'channel_back_weights.0.weight': ('non_salient_unit', 'fc1'),
  'channel_back_weights.2.weight': ('non_salient_unit', 'fc2'),
}
AUTHORS_UNUSED = (
  'saliency',
  'saliency_back',
  'weight_linear.weight',
  'channel_fore_factors',
  'channel_back_factors',
)


def import_issf_authors_state_dict(state_dict: Mapping[str, np.ndarray], params: dict) -> dict:
  """Returns a copy of `params` with the authors' ISSF weights (their `ISSF.state_dict()`).

  Args:
    state_dict: torch names -> numpy arrays (e.g. `np.load('w.npz')`); the parameters their
      forward never uses (`AUTHORS_UNUSED`) are ignored.
    params: ISSF params of a model with `use_brm` and `brm_mlp_bias=False` (recipe=authors).
  Raises:
    ValueError: a missing or unknown key, a shape that does not match, or a model whose
      BRM MLPs have biases the authors' model does not have.
  """
  brm_state = {k: v for k, v in state_dict.items() if k in _AUTHORS_BRM}
  missing = [k for k in _AUTHORS_BRM if k not in brm_state]
  if missing:
    raise ValueError(f'ISSF state_dict is missing {missing}; it has {sorted(state_dict)}.')
  rskp_state = {
    k: v for k, v in state_dict.items() if k not in _AUTHORS_BRM and k not in AUTHORS_UNUSED
  }
  new = import_rskp_state_dict(rskp_state, params)
  if 'brm' not in new:
    raise ValueError("The model has no BRM (modules=base); the authors' weights need one.")
  for key, (unit, layer) in _AUTHORS_BRM.items():
    dense = new['brm'][unit][layer]
    if 'bias' in dense:
      raise ValueError(
        f"The model's BRM layer {unit}/{layer} has a bias; the authors' has none "
        '(use recipe=authors, i.e. model.brm_mlp_bias=False).'
      )
    value = np.asarray(state_dict[key]).T
    if tuple(dense['kernel'].shape) != value.shape:
      raise ValueError(
        f'ISSF weight {key} has shape {value.T.shape}, the model expects '
        f'{tuple(dense["kernel"].shape[::-1])} (check model.embed_dim and brm_reduction).'
      )
    dense['kernel'] = jnp.asarray(value, jnp.float32)
  return new
