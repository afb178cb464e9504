"""Every branch's frame logits for videos with known labels: what the distillation teaches.

At test time only the base and BRM branches run (`inference.py`). To see why a run localises
as it does, `branch_logits` recomputes, in eval mode (no dropout), what the train step builds
for the base branch's distillation: the base student S, the BRM teacher T~, the DEM read T^ of
the memory rows of the video's classes (as in training, so the labels are needed; the rows
and the combination follow `model.dem_read`) and the pseudo-label T^p the recipe mixes from
them. `benchmarks/dem_diagnosis.py` and `issf-predict --branches` use it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from issf_jax import memory as memory_lib
from issf_jax.model import ISSF, build_model, pseudo_label_logits
from issf_jax.model.refinement import attention_logits, masked_softmax
from issf_jax.train import step as step_lib


def has_dem(config, memory) -> bool:
  """Whether the run has a DEM branch and `memory` (a MemoryBank on the host) is built."""
  return bool(
    config.model.use_brm and config.model.use_dem and memory is not None
    and bool(memory.initialized)
  )  # fmt: skip


def make_branch_logits_fn(config, *, with_dem: bool, attn_logits: str | None = None) -> Callable:
  """A jitted fn(params, memory, features, mask, labels) -> (logits, aux).

  Args:
    config: the run's config.
    with_dem: also read the memory (see `has_dem`); otherwise `memory` is ignored.
    attn_logits: recompute the attentions with another `model.attn_logits` (the same
      parameters and memory), to see what the flag would change. It applies to the BRM's
      attention too, as in training.
  The fn takes features [B, T, D], mask [B, T] bool and labels [B, C] (the video's classes).
  Returns:
    logits: {'base', 'brm', 'dem', 'mix'} -> [B, T, C+1] frame logits (present branches only;
      'mix' is the recipe's pseudo-label T^p); aux: {'attention': [B, T] the base branch's
      foreground attention, 'slots_read': [B, T] exp of the DEM read's attention entropy
      (1 = one slot; ones without the DEM)}.
  """
  model_config = config.model.copy_and_resolve_references()
  if attn_logits:
    model_config.attn_logits = attn_logits
  model = build_model(model_config)
  max_labels = step_lib.max_labels(config)

  @jax.jit
  def branch_logits(params, memory, features, mask, labels):
    out = model.apply({'params': params}, features, mask, train=False, method=ISSF.encode)
    logits = {'base': out['base']['frame_logits']}
    aux = {'attention': out['base']['attention'], 'slots_read': jnp.ones(mask.shape)}
    if 'brm' in out:
      logits['brm'] = out['brm']['frame_logits']
    if not with_dem:
      return logits, aux
    class_ids = memory_lib.label_slots(labels, max_labels)
    ids = step_lib.with_background_slot(config, step_lib.memory_class_ids(config, class_ids))
    ids, nonempty_rows = step_lib.read_slot_ids(config, ids)
    rows, readable = memory_lib.read_rows(
      memory, ids, config.memory.get('read_empty_slots'), nonempty_rows
    )
    slot_labels = (ids >= 0).astype(jnp.float32)
    out.update(model.apply({'params': params}, out['refined'], mask, rows, readable, slot_labels,
                           out['base']['attention'], method=ISSF.enhance))  # fmt: skip
    logits['dem'] = out['dem']['frame_logits']
    logits['mix'] = pseudo_label_logits(out, model_config)
    b, _, d = out['refined'].shape
    scores = attention_logits(out['refined'], rows.reshape(b, -1, d), model_config.attn_logits,
                              'btd,bmd->btm')  # fmt: skip
    weights = masked_softmax(scores, readable.reshape(b, 1, -1))
    entropy = -(weights * jnp.log(jnp.where(weights > 0, weights, 1.0))).sum(-1)
    aux['slots_read'] = jnp.exp(entropy)
    return logits, aux

  return branch_logits


def teacher_probs(logits: jax.Array, temperature: float) -> jax.Array:
  """softmax(logits / T) over the C+1 classes: the distillation's view of a branch."""
  return jax.nn.softmax(logits / temperature, axis=-1)
