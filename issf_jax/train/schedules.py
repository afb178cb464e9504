"""Schedules as functions of the optimizer step and the config (no mutable `args`).

With S optimizer steps per epoch, step k belongs to epoch k // S. The memory is
initialised at the end of epoch `memory_init_epoch` (RSKP `warmup_epoch`, 0-based, A7),
i.e. once step (memory_init_epoch + 1) * S is done; from then on the DEM branch is on,
lambda_s = lambda_s_after and eta follows Eq. 8.
"""

from __future__ import annotations

import jax.numpy as jnp

from issf_jax import memory as memory_lib


def epoch_of(step, steps_per_epoch: int):
  return step // steps_per_epoch


def memory_init_step(config, steps_per_epoch: int) -> int:
  """The step count after which the memory is initialised (a Python int).

  A negative `train.memory_init_epoch` disables the memory (Base / Base+BRM runs).
  """
  if config.train.memory_init_epoch < 0 or not config.model.use_dem:
    return -1
  return (config.train.memory_init_epoch + 1) * steps_per_epoch


def memory_ready(config, step: int, steps_per_epoch: int) -> bool:
  """Whether the step at `step` (optimizer steps done so far) uses the DEM branch."""
  init = memory_init_step(config, steps_per_epoch)
  return init >= 0 and step >= init


def lambda_s(config, ready: bool) -> float:
  """KD weight: 1.0 before memory init, 0.5 after (RSKP processor, A16)."""
  return config.loss.lambda_s_after if ready else config.loss.lambda_s_before


def memory_weight(config, step, steps_per_epoch: int):
  """The memory update coefficient at `step` (traced-friendly), from Eq. 8's `memory.eta`.

  Modes `ours`/`direct`/`momentum`: eta of Eq. 8, the weight of the NEW features.
  Mode `merge_blend` (the authors' code): the weight m of the OLD row, 0 (a pure sorted
  merge) up to epoch `merge_until_epoch`, then momentum_scale * ln(exp(e / E) + 1).
  """
  epoch = epoch_of(jnp.asarray(step), steps_per_epoch)
  mem = config.memory
  if mem.update_mode == 'merge_blend':
    m = memory_lib.eta(epoch, config.train.num_epochs, mem.momentum_scale)
    return jnp.where(epoch > mem.merge_until_epoch, m, 0.0)
  return memory_lib.eta(epoch, config.train.num_epochs, mem.eta0)
