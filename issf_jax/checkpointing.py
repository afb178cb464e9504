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
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from issf_common import errors, paths

_SHAPE_FIELDS = ('num_classes', 'feature_dim', 'embed_dim', 'use_brm', 'brm_variant',
                 'brm_reduction')  # fmt: skip


class CheckpointMismatchError(errors.ConfigError):
  """The checkpoint was written by a model of another shape."""


class DamagedCheckpointError(errors.InputError):
  """A checkpoint step whose files do not restore (truncated, deleted or corrupt)."""


def _first_line(err: BaseException, limit: int = 200) -> str:
  """`Type: the message's first line`, without tensorstore's spec dump, at most `limit` chars."""
  lines = [line.strip() for line in str(err).splitlines() if line.strip()]
  text = (lines[0] if lines else '').split(' [tensorstore_spec')[0]
  text = text if len(text) <= limit else text[: limit - 3] + '...'
  return f'{type(err).__name__}: {text}'.rstrip(': ')


@contextlib.contextmanager
def _closed_loop_reports_dropped_on_failure():
  """When a read fails, the other reads of the same restore still complete, on tensorstore's
  threads, into Orbax's event loop, which is closed by then: each reports a "RuntimeError:
  Event loop is closed" traceback through `sys.unraisablehook`. They say nothing more than the
  failure, so after one the hook drops them for the rest of the process; a read that succeeds
  leaves the hook as it was."""
  previous = sys.unraisablehook

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    previous(unraisable)

  sys.unraisablehook = hook
  yield
  sys.unraisablehook = previous  # (not reached when the read raised)


class _UnretrievedReadReports(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" reports: after a failed restore, the
  other reads of the same restore end with the same failure in futures nobody awaits, and
  asyncio reports each when it is collected (at any time, often at exit)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'exception was never retrieved' not in record.getMessage()


_UNRETRIEVED = _UnretrievedReadReports()


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
    stored = self._read(step, lambda: dict(
      self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    ))  # fmt: skip
    diffs = {k: (stored.get(k), v) for k, v in signature.items() if stored.get(k) != v}
    if diffs:
      detail = ', '.join(f'{k}: checkpoint {a!r} vs config {b!r}' for k, (a, b) in diffs.items())
      raise CheckpointMismatchError(
        f'Checkpoint {self.directory} step {step} was written by a model of another shape '
        f'({detail}). Use a new --workdir or the original config.'
      )
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
    )
    restored = self._read(step, lambda: self._manager.restore(step, args=args))
    return restored['state'], dict(restored['data']), step

  def _read(self, step: int, read):
    """`read()`, its failure reported as one DamagedCheckpointError naming the step."""
    try:
      with _closed_loop_reports_dropped_on_failure():
        return read()
    except Exception as err:  # noqa: BLE001  Orbax/tensorstore raise many types for one cause
      logging.getLogger('asyncio').addFilter(_UNRETRIEVED)
      others = [s for s in self.all_steps() if s != step]
      raise DamagedCheckpointError(
        f'Checkpoint {self.directory} step {step} is damaged and cannot be restored '
        f'({_first_line(err)}); the other steps are {others}.'
      ) from err

  def restore_newest_intact(self, abstract_state, signature: dict):
    """Restores the newest step that restores (a resume), skipping the damaged newer ones.

    The caller moves the skipped ones aside (`set_aside`) before it saves those steps again.

    Returns:
      (state, data_position, step, [(skipped step, reason), ...]).
    Raises:
      DamagedCheckpointError: no step restores (it names the newest).
      CheckpointMismatchError: as `restore`.
    """
    skipped, first_error = [], None
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, position, step = self.restore(abstract_state, signature, step)
        return state, position, step, skipped
      except DamagedCheckpointError as err:
        first_error = first_error or err
        skipped.append((step, str(err)))
    if first_error is None:
      raise errors.MissingFileError(f'No checkpoint in {self.directory}.')
    raise first_error

  def set_aside(self, steps: list[int]) -> list[str]:
    """Moves each damaged step's folder to `<checkpoints>.damaged/<step>` (process 0; kept to
    look at, and so that the resumed run can save that step again); returns where they went."""
    moved = []
    if jax.process_index() == 0:
      for step in steps:
        target = paths.join(self.directory + '.damaged', str(step))
        paths.makedirs(self.directory + '.damaged')
        while paths.exists(target):  # damaged twice: keep both
          target += '_again'
        paths.path(paths.join(self.directory, str(step))).rename(target)
        moved.append(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices('issf_checkpoints_set_aside')
    self._manager.reload()
    return moved

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
