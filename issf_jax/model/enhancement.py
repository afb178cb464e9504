"""Discrimination enhancement module, DEM read (paper Eq. 9, `docs/design.md` §2.4).

F_hat = softmax(F~ . M_[c]^T) . M_[c], where M_[c] concatenates the memory slots of the
video's ground-truth classes and one softmax runs over all of them (A12). There is no
residual: every row of F_hat is a convex combination of memory slots. The memory is
stop-gradient; the gradient reaches F~ (the queries) only.

`combine` builds F_hat from the read for the variants beyond the paper (`model.dem_read`,
docs/fidelity.md "DEM variants beyond the paper"): `paper` F_hat = read (Eq. 9), `residual`
F~ + read, `gated` (1 - a) F~ + a read with a the stop-gradient base attention. The variants
`background` and `all_classes` change which memory rows are read (train/step.py), not this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from issf_jax.model.refinement import attention_logits, masked_softmax
from issf_jax.recipes import DEM_READS


def read_memory(
  refined: jax.Array,
  memory: jax.Array,
  slot_valid: jax.Array,
  labels: jax.Array,
  *,
  attn_logits: str = 'dot',
) -> tuple[jax.Array, jax.Array]:
  """The DEM read for a batch of videos.

  Args:
    refined: [B, T, D] queries F~.
    memory: [B or 1, C, N, D] memory features each video reads (sequential mode gives
      every video its own state; batched mode broadcasts one).
    slot_valid: [B or 1, C, N] bool, filled slots.
    labels: [B, C] multi-hot ground truth; rows of other classes are never read.
  Returns:
    F_hat [B, T, D] (zeros for a video with no readable slot) and has_memory [B] bool.
  """
  memory = jax.lax.stop_gradient(memory)
  num_videos, _, dim = refined.shape
  classes, slots = memory.shape[1], memory.shape[2]
  memory = jnp.broadcast_to(memory, (num_videos, classes, slots, dim)).reshape(
    num_videos, classes * slots, dim
  )
  readable = jnp.broadcast_to(slot_valid, (num_videos, classes, slots)) & (labels[:, :, None] > 0)
  readable = readable.reshape(num_videos, classes * slots)
  logits = attention_logits(refined, memory, attn_logits, 'btd,bmd->btm')
  weights = masked_softmax(logits, readable[:, None, :])
  return jnp.einsum('btm,bmd->btd', weights, memory), readable.any(-1)


def combine(refined: jax.Array, read: jax.Array, variant: str = 'paper', attention=None):
  """F_hat from the read of the memory.

  Args:
    refined: [B, T, D] F~; read: [B, T, D] the read (`read_memory`).
    variant: one of DEM_READS.
    attention: [B, T] the base branch's foreground attention (needed for `gated`).
  """
  if variant not in DEM_READS:
    raise ValueError(f'Unknown model.dem_read {variant!r}; choose from {DEM_READS}.')
  if variant == 'residual':
    return refined + read
  if variant == 'gated':
    if attention is None:
      raise ValueError("model.dem_read='gated' needs the base attention.")
    gate = jax.lax.stop_gradient(attention)[..., None]
    return (1.0 - gate) * refined + gate * read
  return read
