"""The RSKP base model that ISSF keeps: embedding and the shared classification head.

Shapes: B videos, T snippets (padded; `mask` [B, T] marks the true ones), D_in input
width, D embedded width, C action classes (C+1 centres, background last).
Reference: `docs/design.md` §2.1 (RSKP `model/main_branch.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from issf_jax.model import precision, random_bits

# RSKP's `calculate_l1_norm` adds this to the L2 norm (it is an L2 normalisation).
NORM_EPS = 1e-9
# RSKP normalises the attentions over time with this epsilon.
ATTENTION_EPS = 1e-5


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / (||x||_2 + 1e-9) along `axis`, as RSKP does (so a zero row stays zero).

  The norm is a safe sqrt: d||x||/dx at x = 0 is 0/0 in `jnp.linalg.norm` (NaN even under a
  zero cotangent), and padded rows are exactly zero. Torch's norm backward gives 0 there.
  Along the last axis the gradient is written out (`_normalize_last`), same values.
  """
  if axis in (-1, x.ndim - 1):
    return _normalize_last(x)
  return x / (_safe_norm(x, axis) + NORM_EPS)


def _safe_norm(x, axis=-1):
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


# x * (1 / n), not x / n: XLA's simplifier rewrites x / broadcast(n) into this product where it
# sees the broadcast (the same bits), but not in a program lowered with a symbolic length
# (train/length_polymorphic.py), where it left a division over [T, D] in every normalisation.
@jax.custom_vjp
def _normalize_last(x):
  return x * (1.0 / (_safe_norm(x) + NORM_EPS))


def _normalize_last_fwd(x):
  norm = _safe_norm(x)
  return x * (1.0 / (norm + NORM_EPS)), (x, norm)


def _normalize_last_bwd(saved, g):
  """dx = g / n - x (g . x) / (n^2 ||x||), n = ||x|| + eps (g / n on a zero row, whose norm's
  gradient is 0). The row products g . x are an einsum: autodiff's broadcast transpose is a
  reduce that XLA:CPU hands to YNNPACK, which took 24 ms where the einsum takes 0.4 ms ([1024,
  2048], docs/results.md "Against the authors' code")."""
  x, norm = saved
  n = norm + NORM_EPS
  dots = jnp.einsum('...d,...d->...', g, x)[..., None]
  positive = norm > 0
  coef = jnp.where(positive, dots / (n * n * jnp.where(positive, norm, 1.0)), 0.0)
  return (g * (1.0 / n) - x * coef,)


_normalize_last.defvjp(_normalize_last_fwd, _normalize_last_bwd)


def bilinear(equation: str, grad_a: str, grad_b: str):
  """`f(a, b) = jnp.einsum(equation, a, b)` with its gradients the einsums `grad_a` (of the
  cotangent g and b) and `grad_b` (of a and g), each written in the order its operand has.

  Why: autodiff's transpose of an einsum ends in a transpose, and XLA:CPU then computed, e.g.,
  the features' gradient of an attention pooling as [D, T] and transposed it inside each
  consumer, a strided pass over [T, D] (docs/results.md, change 20). The values are the same
  products, summed in another order.
  """

  @jax.custom_vjp
  def product(a, b):
    return jnp.einsum(equation, a, b)

  def forward(a, b):
    return product(a, b), (a, b)

  def backward(saved, g):
    a, b = saved
    return jnp.einsum(grad_a, g, b), jnp.einsum(grad_b, a, g)

  product.defvjp(forward, backward)
  return product


# [B, K, D] sum_t weights[b, t, k] feats[b, t, d]: the class-wise attention pooling.
class_pool = bilinear('btk,btd->bkd', 'bkd,btd->btk', 'btk,bkd->btd')
# [B, D] sum_t weights[b, t] feats[b, t, d]: the class-agnostic attention pooling.
video_pool = bilinear('bt,btd->bd', 'bd,btd->bt', 'bt,bd->btd')


def dropout(
  x: jax.Array, rate: float, keys: jax.Array | None, mask: jax.Array | None = None
) -> jax.Array:
  """Inverted dropout with one key per video, so masks do not depend on the device split.

  Args:
    x: [B, T, D].
    rate: drop probability.
    keys: [B] typed PRNG keys, or None for eval mode (identity).
    mask: [B, T] bool, the true snippets, where the caller zeroes the others afterwards (the
      embedding): the keep mask is then made once, not once per consumer (below).
  """
  if keys is None or rate == 0.0:
    return x
  if random_bits.supported(keys):  # the same masks, one fused pass (random_bits.py)
    shape = x.shape[1:]
    if mask is None:
      keep = random_bits.keep_mask(keys, 1.0 - rate, shape)
    else:
      # XLA:CPU fuses the hash (integer operations, which it deems cheap) into every consumer
      # of the dropped-out features: 11 copies of it over [T, D] in a warm-up training step,
      # 12 in the memory phase, about 5 % of the step (docs/results.md, change 19). A
      # conditional's result is made once, and XLA keeps it where the predicate is only known
      # at run time. Where no snippet is true the caller zeroes every row, so the
      # all-dropped branch changes nothing.
      keep = jax.lax.cond(
        jnp.any(mask),
        lambda: random_bits.keep_mask(keys, 1.0 - rate, shape),
        # Under shard_map the hash varies over the devices as the keys do; so must this.
        lambda: precision.varying_like(
          jax.random.key_data(keys), jnp.zeros(keys.shape + shape, bool)
        ),
      )
  else:
    keep = jax.vmap(lambda k, xi: jax.random.bernoulli(k, 1.0 - rate, xi.shape))(keys, x)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class Embedding(nn.Module):
  """Linear(D_in -> D), ReLU, Dropout: the embedded snippet features F (docs/design.md §2.1)."""

  embed_dim: int
  dropout_rate: float
  matmul_dtype: str = 'float32'  # precision.py

  @nn.compact
  def __call__(self, features: jax.Array, mask: jax.Array, dropout_keys: jax.Array | None):
    """[B, T, D_in] -> [B, T, D]; padded snippets are zeroed so they never leak into sums."""
    if self.matmul_dtype == 'float32':
      x = nn.Dense(
        self.embed_dim,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.zeros,
        name='dense',
      )(features)
    else:  # the same parameters, the product in matmul_dtype
      kernel, bias = precision.DenseWeights(self.embed_dim, name='dense')(features.shape[-1])
      x = precision.einsum('...i,io->...o', features, kernel, self.matmul_dtype) + bias
    x = jax.nn.relu(x)
    # The mask made once (`dropout`) was measured on CPU only; XLA:GPU runs a conditional by
    # reading its predicate on the host, a wait inside the step that no GPU run has weighed.
    once = mask if jax.default_backend() == 'cpu' else None
    x = dropout(x, self.dropout_rate, dropout_keys, once)
    return x * mask[..., None].astype(x.dtype)


class ClassificationHead(nn.Module):
  """Cosine classifier with C+1 class centres and a foreground centre (RSKP PredictionModule).

  It holds both heads of the paper: the class-agnostic (CA) attention head (p_ca, a) and
  the class-wise MIL head (p_cw). Every branch (base, BRM, DEM) shares these parameters.
  """

  num_classes: int
  scale: float = 20.0

  @nn.compact
  def __call__(self, feats: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Classifies embedded features.

    Args:
      feats: [B, T, D] features (embedded, refined or enhanced).
      mask: [B, T] bool, true snippets.

    Returns:
      dict with `frame_logits` S [B, T, C+1] (cosine x s), `attention` a [B, T],
      `logits_ca`/`logits_cw` [B, C+1] and their softmaxes `p_ca`/`p_cw` [B, C+1].
    """
    dim = feats.shape[-1]
    ac_center = self.param(
      'ac_center', nn.initializers.xavier_uniform(), (self.num_classes + 1, dim)
    )
    # RSKP initialises the foreground centre to minus the background centre, then trains it freely.
    fg_center = self.param('fg_center', lambda _: -ac_center[self.num_classes :])
    maskf = mask.astype(feats.dtype)

    feats_n = l2_normalize(feats)
    ac_n = l2_normalize(ac_center)
    frame_logits = self.scale * jnp.einsum('btd,cd->btc', feats_n, ac_n)
    fg_logit = self.scale * jnp.einsum('btd,d->bt', feats_n, l2_normalize(fg_center)[0])
    attention = jax.nn.sigmoid(fg_logit) * maskf
    class_attention = jax.nn.sigmoid(frame_logits) * maskf[..., None]

    att_hat = attention / (attention.sum(axis=1, keepdims=True) + ATTENTION_EPS)
    cls_att_hat = class_attention / (class_attention.sum(axis=1, keepdims=True) + ATTENTION_EPS)
    video_ca = video_pool(att_hat, feats)  # un-normalised F, as RSKP.
    video_cw = class_pool(cls_att_hat, feats)  # [B, C+1, D]
    logits_ca = self.scale * jnp.einsum('bd,cd->bc', l2_normalize(video_ca), ac_n)
    # Diagonal: class c is scored with the feature pooled by its own attention.
    logits_cw = self.scale * jnp.einsum('bcd,cd->bc', l2_normalize(video_cw), ac_n)
    return {
      'frame_logits': frame_logits * maskf[..., None],
      'attention': attention,
      'logits_ca': logits_ca,
      'logits_cw': logits_cw,
      'p_ca': jax.nn.softmax(logits_ca, axis=-1),
      'p_cw': jax.nn.softmax(logits_cw, axis=-1),
    }
