"""Losses (RSKP `model/losses.py`) and ISSF's full objective (`docs/design.md` §2.5).

Every function takes a batch and returns per-video values [B]; the caller decides how
to reduce over videos (RSKP sums gradients over the global batch, see train/optimizer.py).
Time reductions respect the mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# RSKP's NormalizedCrossEntropy normalises the target with this epsilon.
_TARGET_EPS = 1e-8


def normalized_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """NCE(p, t) = -sum_c t_hat_c log p_c, t_hat = t / (sum t + 1e-8), p = softmax(logits).

  Args:
    logits: [B, C+1] video logits.
    targets: [B, C+1] non-negative targets ([y, 0] for the CA head, [y, 1] for MIL).
  Returns:
    [B]; 0 for an all-zero target.
  """
  t_hat = targets / (targets.sum(-1, keepdims=True) + _TARGET_EPS)
  return -(t_hat * jax.nn.log_softmax(logits, axis=-1)).sum(-1)


def attention_loss(attention: jax.Array, mask: jax.Array, divisor: float = 8.0) -> jax.Array:
  """AttLoss: mean(bottom-k a) - mean(top-k a), k = max(floor(T / 8), 1) from the true T.

  Args:
    attention: [B, T] class-agnostic attention a.
    mask: [B, T] bool.
  Returns:
    [B], in [-1, 0]; 0 for a video with no true snippet (a padding video of the batch).
  """
  lengths = mask.sum(-1)
  k = jnp.maximum(jnp.floor(lengths / divisor), 1).astype(jnp.int32)
  k = jnp.where(lengths > 0, k, 0)  # else the top-k would read the +-inf of the padding
  ranks = jnp.arange(attention.shape[1])[None, :]
  top = -jnp.sort(jnp.where(mask, -attention, jnp.inf), axis=-1)  # descending, padding last
  bottom = jnp.sort(jnp.where(mask, attention, jnp.inf), axis=-1)  # ascending, padding last
  take = ranks < k[:, None]
  kf = jnp.maximum(k, 1).astype(attention.dtype)
  mean_top = jnp.where(take, top, 0.0).sum(-1) / kf
  mean_bottom = jnp.where(take, bottom, 0.0).sum(-1) / kf
  return mean_bottom - mean_top


def distillation_loss(
  student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array, temperature: float = 0.2
) -> jax.Array:
  """CategoryCrossEntropy: mean_t -sum_c q log softmax(S / T), q = sg(softmax(T^p / T)).

  Args:
    student_logits: [B, T, C+1] base-branch S.
    teacher_logits: [B, T, C+1] pseudo-label logits T^p (gradient stopped here).
    mask: [B, T] bool.
  Returns:
    [B].
  """
  q = jax.lax.stop_gradient(jax.nn.softmax(teacher_logits / temperature, axis=-1))
  per_frame = -(q * jax.nn.log_softmax(student_logits / temperature, axis=-1)).sum(-1)
  maskf = mask.astype(per_frame.dtype)
  return (per_frame * maskf).sum(-1) / jnp.maximum(maskf.sum(-1), 1.0)


def branch_cls_losses(head_out: dict, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(L_CA, L_MIL) of one branch, each [B]: NCE against [y, 0] and [y, 1]."""
  ones = jnp.ones_like(labels[:, :1])
  fg = normalized_cross_entropy(head_out['logits_ca'], jnp.concatenate([labels, 0 * ones], -1))
  bg = normalized_cross_entropy(head_out['logits_cw'], jnp.concatenate([labels, ones], -1))
  return fg, bg


def issf_objective(outputs: dict, labels, mask, lambda_s, config) -> tuple[jax.Array, dict]:
  """ISSF's full objective per video (docs/design.md §2.5, A8/A16):

    L_CA  = NCE(base.p_ca,[y,0]) + w_brm NCE(brm.p_ca,[y,0]) + w_dem NCE(dem.p_ca,[y,0])
    L_MIL = same with p_cw and [y,1]
    L     = L_CA + theta L_MIL + lambda_att AttLoss(base.a) + lambda_s CCE(base.S, sg(T^p))

  The DEM terms count only for videos that read memory (`has_memory`).

  Args:
    outputs: ISSF forward outputs (`base`, and `brm`/`dem`/`pseudo_logits` when present).
    labels: [B, C] multi-hot.
    mask: [B, T] bool.
    lambda_s: scalar KD weight (a function of the step, see train/schedules.py).
    config: the `loss` config section.
  Returns:
    total [B] and a dict of per-video terms [B].
  """
  fore, back = branch_cls_losses(outputs['base'], labels)
  terms = {'base_ca': fore, 'base_mil': back}
  if 'brm' in outputs:
    brm_fg, brm_bg = branch_cls_losses(outputs['brm'], labels)
    terms.update(brm_ca=brm_fg, brm_mil=brm_bg)
    fore = fore + config.brm_cls_weight * brm_fg
    back = back + config.brm_cls_weight * brm_bg
  if 'dem' in outputs:
    dem_fg, dem_bg = branch_cls_losses(outputs['dem'], labels)
    active = outputs['has_memory'].astype(dem_fg.dtype)
    terms.update(dem_ca=dem_fg * active, dem_mil=dem_bg * active)
    fore = fore + config.dem_cls_weight * dem_fg * active
    back = back + config.dem_cls_weight * dem_bg * active
  att = attention_loss(outputs['base']['attention'], mask, config.att_divisor)
  total = fore + config.theta * back + config.lambda_att * att
  terms.update(l_ca=fore, l_mil=back, att=att)
  if 'pseudo_logits' in outputs:
    kd = distillation_loss(
      outputs['base']['frame_logits'], outputs['pseudo_logits'], mask, config.kd_temperature
    )
    total = total + lambda_s * kd
    terms['kd'] = kd
  terms['total'] = total
  return total, terms


def rskp_base_objective(head_out, labels, teacher_logits, mask, config) -> tuple[jax.Array, dict]:
  """RSKP's base-branch loss with a given teacher (the parity goldens' `loss_total`):
  NCE_fore + theta NCE_back + lambda_att AttLoss + 1.0 CCE(S, teacher)."""
  fore, back = branch_cls_losses(head_out, labels)
  att = attention_loss(head_out['attention'], mask, config.att_divisor)
  kd = distillation_loss(head_out['frame_logits'], teacher_logits, mask, config.kd_temperature)
  total = fore + config.theta * back + config.lambda_att * att + config.lambda_s_before * kd
  return total, {'nce_fore': fore, 'nce_back': back, 'att': att, 'kd': kd, 'total': total}
