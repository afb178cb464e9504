"""Saliency inference (paper Eq. 1-3, `docs/design.md` §2.2): which snippets are salient.

Parameter-free. Every reduction respects the mask: K comes from each video's true length,
padding is never salient, and the official code's wrap-around goes to the last TRUE snippet.

Modes (A1):
  `official`: the authors' `saliency_infer.py`. tau_0 = distance of snippet 0 to a zero
    vector, k = max(int(p * T) - 1, min_selected), and each selected index i marks i-1 and
    i (i = 0 wraps to T-1). min_selected = 1 is spec A1's guard; the authors' code has
    none (0): a video with T < 4 then has no salient snippet.
  `paper`: Eq. 1-3 literally. tau_t for t >= 1, K = floor(p * T), the later snippet of
    each selected pair is salient.
Strategies (Table 3): `distance` (the method; distance `l1`, `l2` or `cosine`), `random`
(uniform scores) and `classification` (the base head's action confidence max_c P[t, c]).
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp
import numpy as np

from issf_jax import torch_sort
from issf_jax.model.heads import l2_normalize


def _neighbour_distance(feats: jax.Array, distance: str) -> jax.Array:
  """[B, T, D] -> [B, T]: d(f_t, f_{t-1}) with f_{-1} = 0 (the official code's zero pad)."""
  prev = jnp.pad(feats, ((0, 0), (1, 0), (0, 0)))[:, :-1]
  if distance == 'l1':
    return jnp.abs(feats - prev).sum(-1)
  if distance == 'l2':
    # sqrt of a sum with a floor: the gradient is never needed, but NaN must not appear.
    return jnp.sqrt(jnp.maximum(jnp.square(feats - prev).sum(-1), 0.0))
  if distance == 'cosine':
    return 1.0 - (l2_normalize(feats) * l2_normalize(prev)).sum(-1)
  raise ValueError(f"Unknown saliency distance {distance!r}; expected 'l1', 'l2' or 'cosine'.")


def _count(lengths: jax.Array, ratio: float) -> jax.Array:
  """floor(ratio * T) in exact integer arithmetic (float32 can land just below an integer)."""
  frac = fractions.Fraction(ratio).limit_denominator(10_000)
  return (lengths * frac.numerator) // frac.denominator


def _top_k_mask(scores: jax.Array, valid: jax.Array, k: jax.Array) -> jax.Array:
  """[B, T] bool: the k[b] largest valid scores; ties go to the lower index (stable sort)."""
  neg = jnp.where(valid, -scores, jnp.inf)
  order = jnp.argsort(neg, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  return (rank < k[:, None]) & valid


def _host_torch_top_k(scores, lengths, k):
  out = np.zeros(scores.shape, bool)
  for b, (length, count) in enumerate(zip(lengths.tolist(), k.tolist(), strict=True)):
    out[b, torch_sort.topk_indices(scores[b, :length], count)] = True
  return out


def _torch_top_k_mask(scores: jax.Array, mask: jax.Array, k: jax.Array) -> jax.Array:
  """`_top_k_mask` over each video's true snippets, equal scores kept as `torch.topk` keeps them.

  The set is unique unless the k-th and (k+1)-th largest scores are equal (e.g. tau of the
  pattern a, b, a: |b - a| twice); only then is torch's CPU selection emulated on the host
  (issf_jax/torch_sort.py), so the device path stays jittable and fast.
  """
  stable = _top_k_mask(scores, mask, k)
  ranked = jnp.sort(jnp.where(mask, scores, -jnp.inf), axis=-1)[:, ::-1]
  at = lambda i: jnp.take_along_axis(ranked, jnp.clip(i, 0, ranked.shape[1] - 1)[:, None], 1)
  lengths = mask.sum(-1).astype(jnp.int32)
  tied = (k >= 1) & (k < lengths) & (at(k - 1)[:, 0] == at(k)[:, 0])
  shape = jax.ShapeDtypeStruct(scores.shape, jnp.bool_)

  def on_host(scores, lengths, k, stable):
    host = jax.pure_callback(_host_torch_top_k, shape, scores, lengths, k, vmap_method='sequential')
    # Under shard_map the callback's result is device-invariant; `where` with the
    # per-device operand gives it the same (varying) type as the other branch.
    return jnp.where(jnp.zeros_like(stable), stable, host)

  return jax.lax.cond(
    tied.any(),
    on_host,
    lambda *operands: operands[-1],
    jax.lax.stop_gradient(scores),
    lengths,
    k,
    stable,
  )


def saliency_scores(
  feats: jax.Array,
  *,
  strategy: str,
  distance: str,
  key: jax.Array | None = None,
  class_probs: jax.Array | None = None,
) -> jax.Array:
  """tau [B, T]: the per-snippet score that ranks salient candidates."""
  if strategy == 'distance':
    return _neighbour_distance(feats, distance)
  if strategy == 'random':
    if key is None:
      raise ValueError("saliency_strategy='random' needs per-video keys.")
    return jax.vmap(lambda k: jax.random.uniform(k, feats.shape[1:2]))(key)
  if strategy == 'classification':
    if class_probs is None:
      raise ValueError("saliency_strategy='classification' needs the base head's class probs.")
    return class_probs[..., :-1].max(-1)  # action confidence, background excluded
  raise ValueError(f'Unknown saliency strategy {strategy!r}.')


def infer_saliency(
  feats: jax.Array,
  mask: jax.Array,
  *,
  mode: str = 'official',
  distance: str = 'l1',
  strategy: str = 'distance',
  ratio: float = 0.5,
  key: jax.Array | None = None,
  class_probs: jax.Array | None = None,
  min_selected: int = 1,
  tie_order: str = 'index',
) -> jax.Array:
  """Salient-snippet mask b.

  Args:
    feats: [B, T, D] features (the embedded F by default, A2). Gradients are stopped.
    mask: [B, T] bool, true snippets.
    mode: 'official' | 'paper'.
    distance: 'l1' | 'l2' | 'cosine' (strategy 'distance').
    strategy: 'distance' | 'random' | 'classification'.
    ratio: p; K from each video's true length.
    key: [B] typed keys, for strategy 'random'.
    class_probs: [B, T, C+1], for strategy 'classification'.
    min_selected: the floor of k in `official` mode (1: spec A1; 0: the authors' code).
    tie_order: `official` mode's choice among equal tau at the k-th place: 'index' (the
      lower index) or 'torch' (as the authors' `torch.topk` on the CPU chooses).

  Returns:
    [B, T] bool, False on padding.
  """
  feats = jax.lax.stop_gradient(feats)
  lengths = mask.sum(-1).astype(jnp.int32)
  tau = saliency_scores(
    feats, strategy=strategy, distance=distance, key=key, class_probs=class_probs
  )
  tau = jax.lax.stop_gradient(tau)
  positions = jnp.arange(mask.shape[1])[None, :]
  if mode == 'official':
    k = jnp.maximum(_count(lengths, ratio) - 1, min_selected)
    if tie_order == 'torch':
      selected = _torch_top_k_mask(tau, mask, k)
    elif tie_order == 'index':
      selected = _top_k_mask(tau, mask, k)
    else:
      raise ValueError(f"Unknown saliency tie order {tie_order!r}; expected 'index' or 'torch'.")
    # Selecting i marks i-1; index 0 wraps to the last true snippet, never to padding.
    following = jnp.roll(selected, -1, axis=1)
    wrap = (positions == (lengths - 1)[:, None]) & selected[:, :1]
    following = jnp.where(positions == (lengths - 1)[:, None], wrap, following)
    return (selected | following) & mask
  if mode == 'paper':
    k = _count(lengths, ratio)
    if strategy == 'distance':
      candidates = mask & (positions >= 1)  # tau_t is defined for pairs (t-1, t), t >= 1
    else:
      candidates = mask
    return _top_k_mask(tau, candidates, k)
  raise ValueError(f"Unknown saliency mode {mode!r}; expected 'official' or 'paper'.")
