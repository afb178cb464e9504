"""Restoring a trained model for evaluation or prediction, on whatever devices are present."""

from __future__ import annotations

import json

import jax

from issf_common import errors, paths
from issf_jax import checkpointing, config_validation, sharding
from issf_jax.train import step as step_lib

# What every run's config.json holds (configs/common.py's sections).
RUN_CONFIG_SECTIONS = ('data', 'model', 'memory', 'loss', 'optim', 'train', 'eval')


def load_config(workdir: str):
  """The ConfigDict a run wrote to `<workdir>/config.json` (its values in their ranges)."""
  import ml_collections

  path = paths.join(workdir, 'config.json')
  if not paths.exists(path):
    raise errors.MissingFileError(f'{path} does not exist: is {workdir} a run directory?')
  try:
    data = json.loads(paths.read_text(path))
  except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise errors.ConfigError(f'{path}: cannot be read as JSON ({err})') from None
  missing = [s for s in RUN_CONFIG_SECTIONS if not isinstance(data, dict) or s not in data]
  if missing:
    raise errors.ConfigError(
      f"{path}: not a run's config (no {', '.join(missing)} section); issf-train writes it"
    )
  config = ml_collections.ConfigDict(data)
  for key, value, rule in config_validation.problems(config):  # an edited config.json
    raise errors.ConfigError(f'{path}: {config_validation.describe(key, value, rule)}')
  return config


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
