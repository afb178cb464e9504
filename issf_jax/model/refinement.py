"""Boundary refinement module, BRM (paper Eq. 4-6, `docs/design.md` §2.3, Table 5).

Static shapes: the salient set F^a = F[b] and the non-salient set F^b = F[~b] are never
gathered. The channel unit runs on all T rows, and the temporal unit masks its key axis
to the set (and to the true snippets). An empty set either drops out with the other term
taking weight 1 (`empty_set='renormalize'`, spec A4) or contributes a zero term with the
weights kept (`'zero'`, the authors' code). The two temporal units share one T x T logits
matrix and one weighted sum (`temporal_units`, `set_weights`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from issf_jax.model import channel_units, precision
from issf_jax.model.heads import bilinear, l2_normalize
from issf_jax.recipes import ATTN_LOGITS, BRM_VARIANTS, EMPTY_SET_RULES


def attention_logits(
  queries: jax.Array, keys: jax.Array, kind: str, equation: str, matmul_dtype: str = 'float32'
) -> jax.Array:
  """Unnormalised attention logits between queries and keys (Eq. 5 and Eq. 9, A3).

  `dot` is the paper's literal product, `dot_sqrt_d` divides it by sqrt(D), and `cosine5`
  is RSKP's 5 x cosine affinity. matmul_dtype: `precision.einsum`.
  """
  product = functools.partial(precision.einsum, equation, dtype=matmul_dtype)
  if kind == 'dot':
    return product(queries, keys)
  if kind == 'dot_sqrt_d':
    return product(queries, keys) / math.sqrt(queries.shape[-1])
  if kind == 'cosine5':
    return 5.0 * product(l2_normalize(queries), l2_normalize(keys))
  raise ValueError(f'Unknown attn_logits {kind!r}; expected one of {ATTN_LOGITS}.')


def masked_softmax(logits: jax.Array, key_mask: jax.Array, axis=-1) -> jax.Array:
  """Softmax over `axis` restricted to `key_mask`; a row with no valid key is all zeros.

  Never produces NaN: masked entries are excluded before the exp, and the max is taken
  over valid entries only (its value does not change the softmax, so it is stop-gradient).
  """
  neg = jnp.where(key_mask, logits, -jnp.inf)
  row_max = jax.lax.stop_gradient(jnp.max(neg, axis=axis, keepdims=True))
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  exp = jnp.where(key_mask, jnp.exp(jnp.where(key_mask, logits - row_max, 0.0)), 0.0)
  denom = exp.sum(axis=axis, keepdims=True)
  return exp / jnp.where(denom > 0, denom, 1.0)


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  y = jnp.einsum('...i,io->...o', x, kernel)
  return y if bias is None else y + bias


@jax.custom_vjp
def _channel_attention(feats: jax.Array, logits: jax.Array) -> jax.Array:
  """Eq. 4's outer part: softmax over the D channels of the MLP's output, times F, plus F."""
  return jax.nn.softmax(logits, axis=-1) * feats + feats


def _channel_attention_fwd(feats, logits):
  weights = jax.nn.softmax(logits, axis=-1)
  return weights * feats + feats, (feats, weights)


def _channel_attention_bwd(saved, g):
  """dF = g (s + 1); dz = s (g F - <s, g F>): the row products an einsum, not the reduce
  autodiff makes of the softmax's broadcast transpose (heads.l2_normalize says why)."""
  feats, weights = saved
  g_feats = g * feats
  dots = jnp.einsum('...d,...d->...', weights, g_feats)[..., None]
  return g * (weights + 1.0), weights * (g_feats - dots)


_channel_attention.defvjp(_channel_attention_fwd, _channel_attention_bwd)


class ChannelUnit(nn.Module):
  """Eq. 4: Fh = softmax_D(MLP(F)) * F + F, with MLP = FC(D -> D/r), ReLU, FC(D/r -> D).

  `use_bias=False` is the authors' code (their theta has no biases). `unit(F)` applies it to
  every row; `unit(F, apply=False)` returns its parameters ((fc1 kernel, bias), (fc2 kernel,
  bias)) for `paired_channel_units`.
  """

  reduction: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, feats: jax.Array, apply: bool = True):
    """[B, T, D] -> [B, T, D] (or the parameters)."""
    dim = feats.shape[-1]
    fc1 = precision.DenseWeights(dim // self.reduction, self.use_bias, name='fc1')(dim)
    fc2 = precision.DenseWeights(dim, self.use_bias, name='fc2')(dim // self.reduction)
    if not apply:
      return fc1, fc2
    return _channel_attention(feats, _dense(jax.nn.relu(_dense(feats, *fc1)), *fc2))


def paired_channel_units(
  feats: jax.Array, salient: jax.Array, unit_a, unit_b, matmul_dtype: str = 'float32'
) -> jax.Array:
  """Eq. 4 with theta_a on the salient rows and theta_b on the others.

  Args:
    feats: [B, T, D] F; salient: [B, T] bool (padding rows take theta_b, as any non-salient row).
    unit_a, unit_b: `ChannelUnit(...)(F, apply=False)` of the salient and non-salient units.
  Returns:
    [B, T, D] Fh^a on the salient rows and Fh^b on the others: one channel softmax and one
    product over [T, D] for both units; the MLPs as `channel_units.own_unit_logits` runs them
    (in `matmul_dtype`, `precision.einsum`).
  """
  logits = channel_units.own_unit_logits(feats, salient, unit_a, unit_b, dtype=matmul_dtype)
  return _channel_attention(feats, logits)


# [B, Q, D] weights [B, Q, K] @ values [B, K, D], the values' gradient in [K, D] order.
attend = bilinear('bqk,bkd->bqd', 'bqd,bkd->bqk', 'bqk,bqd->bkd')


def temporal_unit(queries, keys_values, key_mask, attn_logits: str) -> jax.Array:
  """Eq. 5: softmax over keys of (F . Fh^T), times Fh.

  Args:
    queries: [B, T, D] (all snippets).
    keys_values: [B, T, D] (Fh of every snippet; only `key_mask` rows are keys).
    key_mask: [B, T] bool.
  Returns:
    [B, T, D]; zeros where the key set is empty.
  """
  logits = attention_logits(queries, keys_values, attn_logits, 'bqd,bkd->bqk')
  weights = masked_softmax(logits, key_mask[:, None, :])
  return jnp.einsum('bqk,bkd->bqd', weights, keys_values)


def temporal_units(
  queries, keys, salient, non_salient, weight_a, weight_b, attn_logits: str,
  matmul_dtype: str = 'float32',
):  # fmt: skip
  """Eq. 5 for both sets at once, weighted as Eq. 6: w_a A + w_b B.

  A is the attention of every snippet over F^a, B over F^b. The two sets partition the true
  snippets, so one key matrix holds both (a snippet is a key of its own set only) and one
  T x T logits matrix serves both softmaxes: w_a Fh^a and w_b Fh^b equal w_a K and w_b K, as
  each softmax is 0 outside its set, so Eq. 6 becomes (w_a A + w_b B) K.

  Args:
    queries: [B, T, D] F; keys: [B, T, D] K, the channel unit output of each snippet's own
    set (`paired_channel_units`); salient, non_salient: [B, T] bool, disjoint, within the mask;
    weight_a, weight_b: the sets' weights (`set_weights`), scalars or [B, 1, 1].
  Returns:
    [B, T, T] w_a A + w_b B (a set's rows of A or B are zero when the set is empty).
  """
  logits = attention_logits(queries, keys, attn_logits, 'bqd,bkd->bqk', matmul_dtype)
  weight_a = jnp.broadcast_to(jnp.asarray(weight_a, logits.dtype), (logits.shape[0], 1, 1))
  weight_b = jnp.broadcast_to(jnp.asarray(weight_b, logits.dtype), (logits.shape[0], 1, 1))
  return _set_softmax(logits, salient, non_salient, weight_a, weight_b)


def _set_probs(logits, salient, non_salient):
  """[B, T, T] each key's softmax over its own set: `masked_softmax` of either set where the
  key is in it (the same shifts and exps; the sums may round differently, within 1 ulp in the
  tests), 0 on keys in neither."""
  key_a, key_b = salient[:, None, :], non_salient[:, None, :]
  maxima = []
  for key_mask in (key_a, key_b):
    row_max = jnp.max(jnp.where(key_mask, logits, -jnp.inf), axis=-1, keepdims=True)
    maxima.append(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  shift = jnp.where(key_a, *maxima)
  valid = key_a | key_b
  exp = jnp.where(valid, jnp.exp(jnp.where(valid, logits - shift, 0.0)), 0.0)
  denom_a = jnp.where(key_a, exp, 0.0).sum(-1, keepdims=True)
  denom_b = jnp.where(key_b, exp, 0.0).sum(-1, keepdims=True)
  denom = jnp.where(key_a, denom_a, denom_b)
  return exp / jnp.where(denom > 0, denom, 1.0)


@jax.custom_vjp
def _set_softmax(logits, salient, non_salient, weight_a, weight_b):
  """w_a A + w_b B from the shared logits [B, T, T]; weights [B, 1, 1]. One exp pass over
  T x T (each key shifted by its own set's row max), where two masked softmaxes take two."""
  return _set_softmax_fwd(logits, salient, non_salient, weight_a, weight_b)[0]


def _key_weights(salient, non_salient, weight_a, weight_b):
  return jnp.where(salient[:, None, :], weight_a, jnp.where(non_salient[:, None, :], weight_b, 0.0))


def _set_softmax_fwd(logits, salient, non_salient, weight_a, weight_b):
  probs = _set_probs(logits, salient, non_salient)
  weights = _key_weights(salient, non_salient, weight_a, weight_b)
  return weights * probs, (probs, salient, non_salient, weights)


def _set_softmax_bwd(saved, g):
  """dL = w_s (G - P r_s) on the keys of set s, with G = P g and r_s G's row sum over set s
  (each softmax's backward, the two sets apart). The row sums are matrix-vector products, not
  the reduces autodiff makes (heads.l2_normalize says why). The weights take no gradient:
  they follow from the masks."""
  probs, salient, non_salient, weights = saved
  gp = probs * g
  row_a = jnp.einsum('bqk,bk->bq', gp, salient.astype(gp.dtype))[..., None]
  row_b = jnp.einsum('bqk,bk->bq', gp, non_salient.astype(gp.dtype))[..., None]
  rows = jnp.where(salient[:, None, :], row_a, row_b)
  return weights * (gp - probs * rows), None, None, None, None


_set_softmax.defvjp(_set_softmax_fwd, _set_softmax_bwd)


def set_weights(variant: str, sigma: float, empty_set: str, has_a, has_b):
  """Eq. 6's weights of the salient and non-salient terms: sigma and 1 - sigma.

  `add` sums them (weights 1). has_a, has_b: [B, 1, 1] bool, the set is non-empty and used
  by the variant. An empty set's term is zero with the weights kept (`empty_set='zero'`, the
  authors' code: a fully non-salient video keeps only (1 - sigma) of F~), or drops out with
  the other term taking weight 1 (`'renormalize'`, spec A4).
  """
  use_a, use_b = variant != 'no_salient', variant != 'no_non_salient'
  w_a, w_b = (1.0, 1.0) if variant == 'add' else (sigma, 1.0 - sigma)
  if empty_set == 'zero':
    return (w_a if use_a else 0.0), (w_b if use_b else 0.0)
  both = has_a & has_b
  return jnp.where(both, w_a, jnp.where(has_a, 1.0, 0.0)), jnp.where(
    both, w_b, jnp.where(has_b, 1.0, 0.0)
  )


class BoundaryRefinement(nn.Module):
  """BRM: refines F with the salient and the non-salient sets (Eq. 4-6).

  Separate parameters for the two sets ("parameters in Eq. 4 are not shared").
  Variants (Table 5): `weighted` (Eq. 6, the method), `add` (plain sum), `no_salient`,
  `no_non_salient`, `self` (one set: every true snippet) and `temporal_only` (no channel unit).
  """

  reduction: int = 4
  sigma: float = 0.88
  variant: str = 'weighted'
  attn_logits: str = 'dot'
  mlp_bias: bool = True
  empty_set: str = 'renormalize'
  matmul_dtype: str = 'float32'  # the channel MLPs and the temporal attention (precision.py)

  @nn.compact
  def __call__(self, feats: jax.Array, mask: jax.Array, salient: jax.Array) -> jax.Array:
    """Refined features F~.

    Args:
      feats: [B, T, D] embedded F.
      mask: [B, T] bool, true snippets.
      salient: [B, T] bool, b (False on padding).
    Returns:
      [B, T, D], zero on padding.
    """
    if self.variant not in BRM_VARIANTS:
      raise ValueError(f'Unknown brm_variant {self.variant!r}; expected one of {BRM_VARIANTS}.')
    if self.empty_set not in EMPTY_SET_RULES:
      raise ValueError(f'Unknown brm_empty_set {self.empty_set!r}; expected {EMPTY_SET_RULES}.')
    maskf = mask[..., None].astype(feats.dtype)
    if self.variant == 'self':
      fh = ChannelUnit(self.reduction, self.mlp_bias, name='salient_unit')(feats)
      out = temporal_unit(feats, fh, mask, self.attn_logits)
      return out * maskf

    salient = salient & mask
    non_salient = (~salient) & mask
    if self.variant == 'temporal_only':
      keys = feats
    else:
      unit_a = ChannelUnit(self.reduction, self.mlp_bias, name='salient_unit')(feats, apply=False)
      unit_b = ChannelUnit(self.reduction, self.mlp_bias, name='non_salient_unit')(
        feats, apply=False
      )
      with jax.named_scope('channel_units'):  # names the ops for benchmarks/step_profile.py
        keys = paired_channel_units(feats, salient, unit_a, unit_b, self.matmul_dtype)
    has_a = salient.any(-1)[:, None, None] & (self.variant != 'no_salient')
    has_b = non_salient.any(-1)[:, None, None] & (self.variant != 'no_non_salient')
    weight_a, weight_b = set_weights(self.variant, self.sigma, self.empty_set, has_a, has_b)
    with jax.named_scope('temporal_units'):
      weights = temporal_units(
        feats, keys, salient, non_salient, weight_a, weight_b, self.attn_logits,
        self.matmul_dtype,
      )  # fmt: skip
    if self.matmul_dtype == 'float32':
      out = attend(weights, keys)
    else:
      out = precision.einsum('bqk,bkd->bqd', weights, keys, self.matmul_dtype)
    # With no usable set at all (e.g. `no_salient` on a fully salient video), keep F.
    out = jnp.where(has_a | has_b, out, feats)
    return out * maskf
