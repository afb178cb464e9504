"""Discrimination enhancement module, DEM read (paper Eq. 9, `docs/design.md` §2.4).

F_hat = softmax(F~ . M_[c]^T) . M_[c], where M_[c] concatenates the memory slots of the
video's ground-truth classes and one softmax runs over all of them (A12). There is no
residual: every row of F_hat is a convex combination of memory slots. The memory is
stop-gradient; the gradient reaches F~ (the queries) only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from issf_jax.model.refinement import attention_logits, masked_softmax


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
