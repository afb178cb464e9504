"""ISSF model: pure Flax modules used functionally."""

from issf_jax.model.issf import (
  ISSF,
  build_model,
  fuse_predictions,
  init_params,
  pseudo_label_logits,
)

__all__ = ['ISSF', 'build_model', 'fuse_predictions', 'init_params', 'pseudo_label_logits']
