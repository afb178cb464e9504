"""ISSF: the composed forward (docs/design.md §2) and the inference fusion (§2.6).

Pure Flax (linen) used functionally: `model.init` / `model.apply` with explicit params.
Randomness is explicit too: each video carries its own PRNG key (`video_keys` [B]), from
which its dropout mask and its random-saliency draw are derived. A video therefore gets
the same randomness whichever device or batch slot it lands on.

The forward is split in two stages because the DEM read depends on the memory state that
the train step computes between them (docs/design.md §4.1):
  `encode`:  F = embed(X); base = Head(F); b = Saliency(F); F~ = BRM(F, b); brm = Head(F~)
  `enhance`: F_hat = DEM(F~, M); dem = Head(F_hat)
`__call__` runs both and returns every branch plus the pseudo-label logits T^p.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from issf_jax.model.enhancement import combine, read_memory
from issf_jax.model.heads import ClassificationHead, Embedding
from issf_jax.model.refinement import BoundaryRefinement
from issf_jax.model.saliency import infer_saliency

# Purposes folded into a video's key; fixed so a resumed run draws the same numbers.
_DROPOUT_STREAM = 0
_SALIENCY_STREAM = 1


def _split_video_keys(video_keys):
  if video_keys is None:
    return None, None
  dropout_keys = jax.vmap(lambda k: jax.random.fold_in(k, _DROPOUT_STREAM))(video_keys)
  saliency_keys = jax.vmap(lambda k: jax.random.fold_in(k, _SALIENCY_STREAM))(video_keys)
  return dropout_keys, saliency_keys


class ISSF(nn.Module):
  """The ISSF model. `config` is the `model` config section (configs/common.py: model_config)."""

  config: ml_collections.FrozenConfigDict

  def setup(self):
    c = self.config
    matmul_dtype = c.get('matmul_dtype', 'float32')
    self.embedding = Embedding(c.embed_dim, c.dropout, matmul_dtype)
    self.head = ClassificationHead(c.num_classes, c.scale)
    if c.use_brm:
      self.brm = BoundaryRefinement(
        c.brm_reduction,
        c.sigma,
        c.brm_variant,
        c.attn_logits,
        mlp_bias=c.get('brm_mlp_bias', True),
        empty_set=c.get('brm_empty_set', 'renormalize'),
        matmul_dtype=matmul_dtype,
      )

  def encode(self, features, mask, *, train: bool, video_keys=None) -> dict:
    """Everything before the memory read.

    Args:
      features: [B, T, D_in] snippet features.
      mask: [B, T] bool, true snippets.
      train: dropout on (needs `video_keys`) or off.
      video_keys: [B] typed PRNG keys, one per video; required when train or for random saliency.
    Returns:
      dict: `embedded` F [B, T, D]; `base` head outputs; `salient` b [B, T]; `refined`
      F~ [B, T, D] and `brm` head outputs (when use_brm).
    """
    c = self.config
    mask = mask.astype(bool)
    if train and video_keys is None:
      raise ValueError('train=True needs video_keys (one PRNG key per video).')
    dropout_keys, saliency_keys = _split_video_keys(video_keys)
    embedded = self.embedding(features, mask, dropout_keys if train else None)
    base = self.head(embedded, mask)
    out = {'embedded': embedded, 'base': base}
    if not c.use_brm:
      return out
    source = embedded if c.saliency_input == 'embedded' else features * mask[..., None]
    salient = infer_saliency(
      source,
      mask,
      mode=c.saliency_mode,
      distance=c.saliency_distance,
      strategy=c.saliency_strategy,
      ratio=c.saliency_ratio,
      key=saliency_keys,
      class_probs=jax.nn.softmax(base['frame_logits'], axis=-1),
      min_selected=c.get('saliency_min_selected', 1),
      tie_order=c.get('saliency_tie_order', 'index'),
    )
    refined = self.brm(embedded, mask, salient)
    out.update(salient=salient, refined=refined, brm=self.head(refined, mask))
    return out

  def enhance(self, refined, mask, memory, slot_valid, labels, attention=None) -> dict:
    """The DEM branch: read the memory with F~ and classify F_hat.

    Args:
      refined: [B, T, D] F~.
      mask: [B, T] bool.
      memory: [B or 1, C, N, D]; slot_valid: [B or 1, C, N] bool; labels: [B, C].
      attention: [B, T] the base attention (for `model.dem_read='gated'`).
    Returns:
      dict: `enhanced` F_hat [B, T, D], `has_memory` [B] bool, `dem` head outputs.
    """
    mask = mask.astype(bool)
    read, has_memory = read_memory(
      refined, memory, slot_valid, labels, attn_logits=self.config.attn_logits
    )
    variant = self.config.get('dem_read', 'paper')
    enhanced = combine(refined, read, variant, attention) * mask[..., None]
    return {'enhanced': enhanced, 'has_memory': has_memory, 'dem': self.head(enhanced, mask)}

  def __call__(
    self, features, mask, *, train: bool, video_keys=None, memory=None, slot_valid=None, labels=None
  ) -> dict:
    """The full forward: every branch's outputs and the pseudo-label logits `pseudo_logits`.

    The DEM branch runs when `memory` is given (after memory initialisation) and use_dem.
    """
    out = self.encode(features, mask, train=train, video_keys=video_keys)
    if not self.config.use_brm:
      return out
    if memory is not None and self.config.use_dem:
      out.update(self.enhance(out['refined'], mask, memory, slot_valid, labels,
                              out['base']['attention']))  # fmt: skip
    out['pseudo_logits'] = pseudo_label_logits(out, self.config)
    return out


def pseudo_label_logits(outputs: dict, model_config=None) -> jax.Array:
  """T^p [B, T, C+1] = w_brm T~ + w_dem T^, or T~ before the memory exists.

  The weights come from `model_config` (`pseudo_label_brm_weight`, `pseudo_label_dem_weight`):
  1 and 1 is spec A15's literal sum of logits, 0.8 and 0.2 the authors' code. Without a
  config, the sum. A video with no readable memory slot keeps T~ alone.
  """
  teacher = outputs['brm']['frame_logits']
  if 'dem' in outputs:
    get = model_config.get if model_config is not None else (lambda _, default: default)
    w_brm = get('pseudo_label_brm_weight', 1.0)
    w_dem = get('pseudo_label_dem_weight', 1.0)
    has = outputs['has_memory'][:, None, None]
    mixed = w_brm * teacher + w_dem * outputs['dem']['frame_logits']
    teacher = jnp.where(has, mixed, teacher)
  return teacher


def fuse_predictions(outputs: dict, mask, config) -> tuple[jax.Array, jax.Array]:
  """Inference fusion (docs/design.md §2.6): video scores [B, C+1] and localisation map [B, T, C+1].

  `base_brm`: vid = w * base.p_ca + (1-w) * brm.p_ca,
              cas = (w * softmax(base.S) + (1-w) * softmax(brm.S)) * base.a.
  `base`: the base branch alone. The attention always comes from the base branch.
  """
  base = outputs['base']
  w = config.fusion_base_weight
  if config.fusion == 'base' or 'brm' not in outputs:
    video = base['p_ca']
    frame = jax.nn.softmax(base['frame_logits'], axis=-1)
  elif config.fusion == 'base_brm':
    brm = outputs['brm']
    video = w * base['p_ca'] + (1.0 - w) * brm['p_ca']
    frame = w * jax.nn.softmax(base['frame_logits'], -1) + (1.0 - w) * jax.nn.softmax(
      brm['frame_logits'], -1
    )
  else:
    raise ValueError(f"Unknown fusion {config.fusion!r}; expected 'base_brm' or 'base'.")
  cas = frame * base['attention'][..., None] * mask[..., None]
  return video, cas


def build_model(model_config) -> ISSF:
  """An ISSF module from a (mutable or frozen) `model` config section."""
  return ISSF(ml_collections.FrozenConfigDict(model_config))


def init_params(model: ISSF, rng: jax.Array, feature_dim: int | None = None):
  """Initial parameters (RSKP init: xavier-uniform weights, zero biases, fg = -bg centre)."""
  dim = feature_dim or model.config.feature_dim
  features = jnp.zeros((1, 4, dim), jnp.float32)
  mask = jnp.ones((1, 4), bool)
  keys = jax.random.split(jax.random.fold_in(rng, 1), 1)
  return model.init({'params': rng}, features, mask, train=False, video_keys=keys)['params']
