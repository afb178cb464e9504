"""Orbax checkpoints of the whole TrainState plus the data iterator's position.

One `CheckpointManager` per run directory (`<workdir>/checkpoints`). Each step holds:
  state     the TrainState pytree (params, opt_state, memory bank, step)
  data      the input iterator's position {'epoch', 'batch'} (JSON), for exact resume
  meta      the model-shape signature (JSON), checked on restore
Retention keeps the last `keep_last` steps plus the best by the chosen eval metric
(`preservation_policy`; `best_fn` too, so `best_step()` is meaningful).
Restores onto whatever devices are present: the target carries the new shardings, so a
checkpoint saved from 8 devices restores on 1 (docs/design.md §9).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp

from issf_common import errors, paths

_SHAPE_FIELDS = ('num_classes', 'feature_dim', 'embed_dim', 'use_brm', 'brm_variant',
                 'brm_reduction')  # fmt: skip


class CheckpointMismatchError(errors.ConfigError):
  """The checkpoint was written by a model of another shape."""


def model_signature(config) -> dict:
  """What must agree between a checkpoint and the config that restores it."""
  sig = {k: config.model[k] for k in _SHAPE_FIELDS}
  sig['memory_slots'] = config.memory.slots
  return sig


class Checkpointer:
  """Save / restore / retention for one run."""

  def __init__(self, directory: str, *, keep_last: int = 2, best_metric: str | None = None,
               best_mode: str = 'max', create: bool = True):  # fmt: skip
    self.directory = paths.absolute(directory)  # Orbax takes gs:// (and s3://) URLs as they are
    self.best_metric = best_metric
    policies = [ocp.checkpoint_managers.LatestN(n=max(keep_last, 1))]
    best_fn = None
    if best_metric:
      best_fn = lambda metrics: metrics[best_metric]
      policies.append(
        ocp.checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=(best_mode == 'min'), n=1,
          keep_checkpoints_without_metrics=False,
        )
      )  # fmt: skip
    options = ocp.CheckpointManagerOptions(
      create=create,
      best_fn=best_fn,
      best_mode=best_mode,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=('state', 'data', 'meta')
    )

  def save(self, step: int, state, data_position: dict, signature: dict,
           metrics: dict | None = None) -> None:  # fmt: skip
    """Saves asynchronously; `close()` before the process exits.

    `metrics` (the eval summary) is None on steps without an evaluation: such a checkpoint is
    kept by recency only, which is intended, so Orbax's warning about it is dropped.
    """
    quiet = _drop_untracked_metric_warning() if metrics is None else contextlib.nullcontext()
    with quiet:
      self._save(step, state, data_position, signature, metrics)

  def _save(self, step, state, data_position, signature, metrics) -> None:
    self._manager.save(
      int(step),
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(dict(data_position)),
        meta=ocp.args.JsonSave(dict(signature)),
      ),
      metrics=metrics,
      force=True,
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step() if self.best_metric else None

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def resolve(self, which: str | int | None) -> int:
    """'latest' (default), 'best' or a step number -> a step that exists."""
    steps = self.all_steps()
    if not steps:
      raise errors.MissingFileError(f'No checkpoint in {self.directory}.')
    if which in (None, 'latest'):
      return self.latest_step()
    if which == 'best':
      best = self.best_step()
      if best is None:
        raise errors.MissingFileError(f'No checkpoint with eval metrics in {self.directory}.')
      return best
    try:
      step = int(which)
    except ValueError:
      raise errors.InputError(
        f"--checkpoint {which!r}: expected 'latest', 'best' or a step number"
      ) from None
    if step not in steps:
      raise errors.MissingFileError(
        f'No checkpoint for step {step} in {self.directory}; have {steps}.'
      )
    return step

  def restore(self, abstract_state, signature: dict, which: str | int | None = None):
    """Restores (state, data_position, step) onto the shardings of `abstract_state`.

    Args:
      abstract_state: a TrainState of `jax.ShapeDtypeStruct` with the target shardings
        (`abstract_like(state, sharding)`).
      signature: `model_signature(config)` of the restoring config.
      which: 'latest', 'best' or a step.
    Raises:
      CheckpointMismatchError: the checkpoint's model shape differs from the config's.
    """
    step = self.resolve(which)
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    stored = dict(meta['meta'])
    diffs = {k: (stored.get(k), v) for k, v in signature.items() if stored.get(k) != v}
    if diffs:
      detail = ', '.join(f'{k}: checkpoint {a!r} vs config {b!r}' for k, (a, b) in diffs.items())
      raise CheckpointMismatchError(
        f'Checkpoint {self.directory} step {step} was written by a model of another shape '
        f'({detail}). Use a new --workdir or the original config.'
      )
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
      ),
    )
    return restored['state'], dict(restored['data']), step

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class _UntrackedMetricFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


@contextlib.contextmanager
def _drop_untracked_metric_warning():
  """Orbax warns on every save without metrics when a best metric is tracked (absl logger)."""
  logger, drop = logging.getLogger('absl'), _UntrackedMetricFilter()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def abstract_like(tree: Any, sharding) -> Any:
  """ShapeDtypeStructs of `tree` placed with `sharding` (the restore target)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
