"""Helpers for the experiment files in `configs/` (big_vision style `get_config(arg)`).

Ablations are config ARGUMENTS, not copies of a file:
  --config configs/thumos14.py:saliency=l2,brm=add,update=direct,modules=base_brm
Arguments (paper tables):
  saliency  Table 3: l1 (default) | l2 | cosine | random | classification
  brm       Table 5: weighted (default) | self | no_salient | no_non_salient | add | temporal_only
  update    Table 6: ours (default) | direct | momentum
  modules   Table 4: full (default, Base+BRM+DEM) | base_brm | base
  mode      official (default) | paper  (saliency mode, A1)
  memory    sequential (default) | batched
  recipe    authors (default: the authors' released code) | spec_v1 (issf_jax/recipes.py)
  memory_class_index  own (default: a video's own classes) | released (class 0, the bug)
  dem       paper (default: Eq. 9) | residual | gated | background | all_classes: DEM reads
            beyond the paper (docs/fidelity.md, issue 18); `paper` adds nothing to the config
Under `recipe=authors`, `update=ours` selects the authors' memory update (`merge_blend`).
"""

from __future__ import annotations

import ml_collections

from issf_common import errors
from issf_jax import recipes

_ARG_DEFAULTS = dict(
  saliency='l1',
  brm='weighted',
  update='ours',
  modules='full',
  mode='official',
  memory='sequential',
  recipe='authors',
  memory_class_index='own',
  dem='paper',
)
_CHOICES = dict(
  saliency=('l1', 'l2', 'cosine', 'random', 'classification'),
  brm=('weighted', 'self', 'no_salient', 'no_non_salient', 'add', 'temporal_only'),
  update=('ours', 'direct', 'momentum'),
  modules=('full', 'base_brm', 'base'),
  mode=('official', 'paper'),
  memory=('sequential', 'batched'),
  recipe=recipes.RECIPES,
  memory_class_index=recipes.MEMORY_CLASS_INDEX,
  dem=recipes.DEM_READS,
)


def parse_arg(arg: str | None, **extra_defaults) -> ml_collections.ConfigDict:
  """'a=1,b=x' -> ConfigDict over the ablation defaults; unknown keys or values are errors."""
  defaults = dict(_ARG_DEFAULTS, **extra_defaults)
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    if '=' not in item:
      raise errors.ConfigError(f'Config argument {item!r} is not key=value (in {arg!r}).')
    key, value = item.split('=', 1)
    if key not in defaults:
      raise errors.ConfigError(f'Unknown config argument {key!r}; known: {sorted(defaults)}.')
    if key in _CHOICES and value not in _CHOICES[key]:
      raise errors.ConfigError(f'Config argument {key}={value!r}; choose from {_CHOICES[key]}.')
    default = defaults[key]
    out[key] = type(default)(value) if not isinstance(default, str) else value
  return out


def apply_ablations(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
  """Sets the recipe's fields, then the model/memory fields that the ablation arguments name."""
  recipes.apply_recipe(config, arg.recipe, arg.memory_class_index)
  m = config.model
  if arg.saliency in ('random', 'classification'):
    m.saliency_strategy = arg.saliency
  else:
    m.saliency_strategy, m.saliency_distance = 'distance', arg.saliency
  m.saliency_mode = arg.mode
  m.brm_variant = arg.brm
  update = arg['update']
  if update == 'ours' and arg.recipe == 'authors':
    update = 'merge_blend'
  config.memory.update_mode = update
  config.memory.mode = arg.memory
  if arg.modules == 'base':
    m.use_brm, m.use_dem, m.fusion = False, False, 'base'
  elif arg.modules == 'base_brm':
    m.use_brm, m.use_dem = True, False
  if not m.use_dem:
    config.train.memory_init_epoch = -1
  ablation = arg.to_dict()
  # The faithful read leaves no trace, so a config without the argument is unchanged; nor does
  # a read without a DEM (Base, Base+BRM: the same run whatever `dem=`).
  if ablation.pop('dem', 'paper') != 'paper':
    ablation['dem'] = arg.dem
    if m.use_dem:
      m.dem_read = arg.dem
  config.ablation = ablation
