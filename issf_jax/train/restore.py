"""Restoring a trained model for evaluation or prediction, on whatever devices are present."""

from __future__ import annotations

import jax

from issf_jax import checkpointing, sharding
from issf_jax.train import step as step_lib


def restore_state(config, checkpoint_dir: str, which='latest', mesh=None):
  """(TrainState, step) from `checkpoint_dir`, placed replicated on `mesh` (default: all
  local devices). A checkpoint written from 8 devices restores onto 1."""
  mesh = mesh or sharding.make_mesh(jax.local_device_count())
  abstract = jax.eval_shape(lambda k: step_lib.create_train_state(config, k), jax.random.key(0))
  target = checkpointing.abstract_like(abstract, sharding.replicated(mesh))
  ckpt = checkpointing.Checkpointer(
    checkpoint_dir, keep_last=config.train.keep_last,
    best_metric=config.train.get('best_metric') or None, create=False,
  )  # fmt: skip
  try:
    state, _, step = ckpt.restore(target, checkpointing.model_signature(config), which)
  finally:
    ckpt.close()
  return state, step
