"""Training recipes: whole sets of resolutions selected by one config argument.

Two recipes exist (docs/fidelity.md, "The authors' code"):

* `authors` (the default): what the authors' released training code (MICLAB-BUPT/ISSF @
  c24b7cb) does, since that code produced the paper's numbers. Against `spec_v1` it changes
  nine things: no k guard in the saliency (short videos have no salient snippet), an empty
  BRM set contributes a zero term with the weights kept, BRM MLPs without biases, 9 memory
  slots, a score-sorted merge of the memory row with the candidates that turns into an
  m-blend after `moment_up`, the memory built at the end of epoch index 1 (DEM from epoch 2),
  every slot of the read rows attended to, and the pseudo-label 0.8 T~ + 0.2 T^.
* `spec_v1`: the earlier resolutions of the paper's ambiguities (spec A1-A18), the
  behaviour of this repository before the authors' code was published.

`memory_class_index` is a separate switch: `own` (a video reads and updates its own classes'
rows, as the paper says) or `released` (the released loop's bug: every video reads and
updates class 0's row, once per label it has), for exact reproduction of the released code.

The authors' epoch-indexed events are defined for 180 epochs. With another `num_epochs` they
scale with it, lazily (an override of `train.num_epochs` moves them too):
  memory_init_epoch = ceil(2 E / 180) - 1      (1 at E = 180: built at the end of epoch 1)
  merge_until_epoch = round(85 E / 180)        (85 at E = 180, the code's `moment_up`)
"""

from __future__ import annotations

import ml_collections

RECIPES = ('authors', 'spec_v1')
MEMORY_CLASS_INDEX = ('own', 'released')
# How equal values are ordered (the `ties=` config argument): 'default' is 'index', except the
# memory merge under the released indexing (where ties are certain), which is 'torch'.
TIE_ORDERS = ('default', 'index', 'torch')
# model.dem_read: 'paper' is Eq. 9; the others are options beyond the paper (docs/fidelity.md,
# "DEM variants beyond the paper"), set by the config argument `dem=`.
DEM_READS = ('paper', 'residual', 'gated', 'background', 'all_classes')
# The other choices a config names, here rather than beside the code that runs them, so that
# checking a config (config_validation.py) imports neither JAX nor Flax: a bad flag is refused
# in a fraction of a second.
UPDATE_MODES = ('ours', 'direct', 'momentum', 'merge_blend')  # memory.update_mode
BRM_VARIANTS = ('self', 'no_salient', 'no_non_salient', 'add', 'weighted', 'temporal_only')
EMPTY_SET_RULES = ('renormalize', 'zero')  # model.brm_empty_set
ATTN_LOGITS = ('dot', 'dot_sqrt_d', 'cosine5')  # model.attn_logits
MATMUL_DTYPES = ('float32', 'bfloat16')  # model.matmul_dtype

# The authors' schedule, in epochs of their 180-epoch THUMOS14 run.
AUTHORS_EPOCHS = 180
AUTHORS_MEMORY_EPOCHS_BEFORE_INIT = 2  # the memory exists from epoch index 2
AUTHORS_MOMENT_UP = 85


def authors_memory_init_epoch(num_epochs):
  """ceil(2 E / 180) - 1; works on ints and on ml_collections FieldReferences."""
  before = AUTHORS_MEMORY_EPOCHS_BEFORE_INIT
  return (num_epochs * before + AUTHORS_EPOCHS - 1) // AUTHORS_EPOCHS - 1


def authors_merge_until_epoch(num_epochs):
  """round(85 E / 180) (half up); works on ints and on FieldReferences."""
  return (num_epochs * AUTHORS_MOMENT_UP + AUTHORS_EPOCHS // 2) // AUTHORS_EPOCHS


def apply_recipe(
  config: ml_collections.ConfigDict, recipe: str, class_index: str = 'own', ties: str = 'default'
) -> None:
  """Sets every field the recipe decides. `spec_v1` leaves the experiment file's values."""
  if recipe not in RECIPES:
    raise ValueError(f'Unknown recipe {recipe!r}; choose from {RECIPES}.')
  if class_index not in MEMORY_CLASS_INDEX:
    raise ValueError(f'Unknown memory_class_index {class_index!r}; choose {MEMORY_CLASS_INDEX}.')
  if ties not in TIE_ORDERS:
    raise ValueError(f'Unknown ties {ties!r}; choose {TIE_ORDERS}.')
  m, mem = config.model, config.memory
  mem.class_index = class_index
  if recipe == 'spec_v1':
    mem.merge_tie_order = 'index'
    m.saliency_min_selected = 1
    m.brm_empty_set = 'renormalize'
    m.brm_mlp_bias = True
    m.pseudo_label_brm_weight = m.pseudo_label_dem_weight = 1.0
    mem.slots = 5
    mem.update_mode = 'ours'
    mem.read_empty_slots = False
    return
  m.saliency_min_selected = 0
  # Equal values: `torch` orders them as the authors' torch CPU kernels do (docs/fidelity.md),
  # emulated on the host when such a tie occurs: equal tau at the saliency top-k's k-th
  # place, or equal scores in the memory merge's unstable sort. With the released indexing a
  # video's snippets meet themselves in row 0, so its merge needs them. Otherwise ties need
  # repeated feature rows, which real I3D features do not have, so the default is
  # `index` (lower index first, all on the device): a program with a host callback can be
  # neither kept in the persistent compilation cache nor run without a host round trip.
  m.saliency_tie_order = 'torch' if ties == 'torch' else 'index'
  torch_merge = ties == 'torch' or (ties == 'default' and class_index == 'released')
  mem.merge_tie_order = 'torch' if torch_merge else 'index'
  m.brm_empty_set = 'zero'
  m.brm_mlp_bias = False
  m.pseudo_label_brm_weight = 0.8
  m.pseudo_label_dem_weight = 0.2
  mem.slots = 9
  mem.update_mode = 'merge_blend'
  mem.momentum_scale = 0.5
  mem.read_empty_slots = True
  epochs = config.train.get_ref('num_epochs')
  config.train.memory_init_epoch = authors_memory_init_epoch(epochs)
  mem.merge_until_epoch = authors_merge_until_epoch(epochs)
