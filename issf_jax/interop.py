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
