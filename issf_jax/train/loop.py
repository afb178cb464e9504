"""The training loop: `train_and_evaluate(config, workdir)`.

One host or a pod: each process reads its slice of every global batch, the mesh spans every
device of every process, and the state is replicated (`issf_jax/sharding.py`).

Before the first step: the shard folder must match the model (width, classes) and every split
the run reads (train, the eval subset, the ground truth) must match its checksums, with
every shard's records whole; a resume must use the run's config (`run_dir.check_resume_config`);
and process 0 must get the run folder's lock (`run_lock.py`: one trainer per folder). Per epoch
end: the memory initialisation pass (once, at the end of `memory_init_epoch`), the periodic
evaluation (`evaluator.Evaluator`), and the checkpoint (state + iterator position + eval metrics).
Restarting with the same workdir resumes from the latest checkpoint, bitwise on the CPU, and
the metric records of the steps it redoes are dropped first.

Metrics come to the host at log steps only (every `train.log_every_steps` and each epoch end,
which is also where non-finite losses are caught, before any checkpoint). Dispatch runs ahead
of the devices by at most `max_in_flight` steps: 2 where multi-device XLA:CPU collectives
deadlock with more (docs/design.md §9), and 8 elsewhere, which only bounds the input
batches held on the devices.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from issf_common import errors, paths
from issf_jax import checkpointing, config_validation, sharding
from issf_jax import memory as memory_lib
from issf_jax.train import (
  evaluator,
  length_polymorphic,
  micro,
  reporting,
  run_dir,
  run_lock,
  schedules,
)
from issf_jax.train import step as step_lib
from issf_jax.train.metrics_writer import MetricsWriter


def check_finite(metrics: dict, step: int) -> None:
  """Raises on the host when a loss term is NaN or Inf (names the step and the terms)."""
  bad = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(v)}
  if bad:
    raise FloatingPointError(
      f'Non-finite training metrics at step {step}: {bad}. Check the input features (NaN/Inf,'
      ' scale) and the learning rate; the last checkpoint is intact.'
    )


def max_in_flight(mesh) -> int:
  """Steps dispatched ahead of the devices (module docstring)."""
  return 2 if mesh.devices.size > 1 and jax.default_backend() == 'cpu' else 8


def micro_batch_size(config, num_devices: int) -> int:
  """`data.micro_batch_size`, or the mesh's device count when it is 0 (one video per device)."""
  return config.data.get('micro_batch_size', 0) or num_devices


def resolve_batching(config, num_devices: int, backend: str | None = None,
                     stored: str | None = None) -> tuple[str, str]:  # fmt: skip
  """('exact' | 'micro', why) for `config.data.batching`; 'auto' is decided here.

  'auto': the mode of the run being resumed (`stored`, its config.json's value), so that a run
  keeps the batching it started with; else 'micro' on the CPU backend (1.6-1.9x faster there,
  docs/results.md "Training throughput") where micro-batches can serve the config: THUMOS-style
  full-length batches (`data.mode` 'thumos'; ActivityNet batches all hold t_s snippets), the
  sequential memory, a micro-batch that divides the global batch over the hosts; else 'exact'
  (GPU/TPU: one padded program per step, what benchmarks/gpu_recipe.py measures).
  """
  setting = config.data.get('batching', 'exact')
  if setting != 'auto':
    return setting, 'set in the config'
  if stored in ('exact', 'micro'):
    return stored, "the run's config.json"
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return 'exact', f'the {backend} backend'
  size, micro_size = config.train.batch_size, micro_batch_size(config, num_devices)
  hosts = jax.process_count()
  if config.data.mode != 'thumos':
    return 'exact', f'the cpu backend, data.mode {config.data.mode!r}'
  if config.memory.mode != 'sequential':
    return 'exact', f'the cpu backend, memory.mode {config.memory.mode!r}'
  if size % micro_size or micro_size % hosts:
    return 'exact', f'the cpu backend, micro-batches of {micro_size} for batches of {size}'
  return 'micro', 'the cpu backend'


def batching_options(config, num_devices: int):
  """The `input_pipeline.BatchingOptions` of `config` (micro_batch_size 0: one video per device;
  batching 'auto': `resolve_batching` on this backend)."""
  from data_pipelines import input_pipeline

  data = config.data
  return input_pipeline.BatchingOptions(
    global_batch_size=config.train.batch_size, seed=config.train.seed, mode=data.mode,
    bucket_size=data.bucket_size, max_len=data.max_len or None, t_s=data.t_s,
    batching=resolve_batching(config, num_devices)[0],
    micro_batch_size=micro_batch_size(config, num_devices),
    bucket_growth=data.get('bucket_growth', 1.2),
    micro_buckets=data.get('micro_buckets', 0),  # absent from runs that began before it
  )  # fmt: skip


def resolved_config(config, stored: str | None = None):
  """`config`, or with `data.batching` 'auto' a copy holding the mode `resolve_batching` picks
  on this backend (logged); the caller's config is left as it is."""
  if config.data.get('batching', 'exact') != 'auto':
    return config
  num_devices = config.train.num_devices or jax.device_count()
  batching, why = resolve_batching(config, num_devices, stored=stored)
  logging.info("data.batching 'auto' -> %r (%s).", batching, why)
  config = config.copy_and_resolve_references()
  config.data.batching = batching
  return config


# A phase of the run that `Trainer`'s timer is told of: 'memory_init', 'eval' or 'checkpoint'
# (the training steps are the time outside them).
PHASES = ('memory_init', 'eval', 'checkpoint')


def _untimed(phase: str) -> contextlib.AbstractContextManager:
  del phase
  return contextlib.nullcontext()


class Trainer:
  """Holds what the loop needs: mesh, compiled steps, iterators, checkpoints, writers.

  timer: called with a phase name (`PHASES`) for a context that the phase runs in; a profiler
  or a benchmark (benchmarks/gpu_recipe.py) times the run with it. Default: nothing.
  step_guard: called for a context that each training step outside the log steps runs in
  (taking its batch, dispatching it, the in-flight bound); a test disallows device-to-host
  transfers there (`jax.transfer_guard_device_to_host`). Default: nothing.
  """

  def __init__(self, config, workdir: str, reporter: reporting.Reporter | None = None,
               allow_config_change: bool = False,
               timer: Callable[[str], contextlib.AbstractContextManager] = _untimed,
               step_guard: Callable[[], contextlib.AbstractContextManager] = (
                 contextlib.nullcontext)):  # fmt: skip
    from data_pipelines import manifest as manifest_lib  # no TF: bad input fails fast

    # The launch scripts check the config when it loads; a config built in code is checked here,
    # so an out-of-range value fails before the first step rather than as a crash inside it.
    config_validation.validate(config)
    self.config, self.workdir = config, workdir
    self.reporter = reporter or reporting.Reporter()
    self.timer, self.step_guard = timer, step_guard
    if not config.data.shards_dir:
      raise errors.ConfigError('config.data.shards_dir is empty; run issf-prepare and set it.')
    self.shards_dir = config.data.shards_dir
    self.manifest = manifest = manifest_lib.load_manifest(self.shards_dir)
    if manifest['feature_dim'] != config.model.feature_dim:
      raise errors.ConfigError(
        f'{self.shards_dir} holds {manifest["feature_dim"]}-d features but model.feature_dim is '
        f'{config.model.feature_dim}; set --config.model.feature_dim.'
      )
    if manifest['num_classes'] != config.model.num_classes:
      raise errors.ConfigError(
        f'{self.shards_dir} has {manifest["num_classes"]} classes but model.num_classes is '
        f'{config.model.num_classes}.'
      )
    # Every split the run will read, checked now rather than at the first evaluation. The
    # hashes are cached per file, so the iterators do not hash again.
    for subset in dict.fromkeys(['train', config.data.eval_subset]):
      if subset not in manifest['shards']:
        raise errors.ConfigError(
          f'{self.shards_dir} has no {subset!r} split (has {sorted(manifest["shards"])})'
        )
      manifest_lib.verify_shards(self.shards_dir, manifest, subset)
    manifest_lib.load_ground_truth(self.shards_dir, verify=True)
    self.num_train = manifest['counts']['train']
    self.steps_per_epoch = self.num_train // config.train.batch_size
    if self.steps_per_epoch == 0:
      raise errors.ConfigError(
        f'{self.num_train} train videos < train.batch_size {config.train.batch_size}.'
      )
    self.total_steps = config.train.num_epochs * self.steps_per_epoch
    if config.train.max_steps:
      self.total_steps = min(self.total_steps, config.train.max_steps)
    # One trainer per run folder (process 0's lock, held until `run` ends): taken after the
    # checks above, so bad input creates no folder, and before anything is written into it.
    self._lock = contextlib.ExitStack()
    self._lock.enter_context(run_lock.hold(workdir, enabled=jax.process_index() == 0))
    try:
      self.checkpointer = checkpointing.Checkpointer(
        paths.join(workdir, 'checkpoints'), keep_last=config.train.keep_last,
        best_metric=config.train.best_metric or None,
      )  # fmt: skip
    except BaseException:
      self._lock.close()
      raise
    try:
      # A resume with a config that changes the training is refused before anything is built.
      latest = self.checkpointer.latest_step()
      # data.batching 'auto' is decided before the resume check and recorded resolved in
      # config.json; a resumed 'auto' run keeps the mode it started with.
      stored = run_dir.stored_value(workdir, 'data.batching') if latest is not None else None
      self.config = config = resolved_config(config, stored)
      self.config_changes = {}
      if latest is not None:
        self.config_changes = run_dir.check_resume_config(
          config, workdir, latest, allow_config_change
        )
      self._build(config, workdir)
    except BaseException:
      self.checkpointer.close()
      self._lock.close()
      raise

  def _build(self, config, workdir: str) -> None:
    """The devices, the compiled-step cache, the evaluator (after the checks of __init__)."""
    from data_pipelines import pipelines

    # tf.data where TensorFlow is installed, else the same batches in numpy (pipelines.py).
    self.input_pipeline = pipelines.select()
    self.mesh = sharding.make_mesh(config.train.num_devices or None)
    self.key_data = sharding.replicate(
      jax.random.key_data(jax.random.key(config.train.seed)), self.mesh
    )
    self.train_steps = {}
    self.precompiled = set()  # the phases whose programs `precompile` compiled
    self.signature = checkpointing.model_signature(config)
    self.evaluator = evaluator.Evaluator(config, workdir, self.shards_dir)
    self.is_chief = jax.process_index() == 0
    self.writer = None

  def train_step(self, ready: bool):
    if ready not in self.train_steps:
      make = step_lib.make_train_step
      if self.config.data.get('batching', 'exact') == 'micro':
        make = micro.make_micro_train_step
      self.train_steps[ready] = make(
        self.config, self.mesh, memory_ready=ready, steps_per_epoch=self.steps_per_epoch
      )
    return self.train_steps[ready]

  def precompile(self, state, ready: bool, batch) -> None:
    """Compiles every program of the phase before its first step ('micro': one per length
    bucket of the training videos, one per two cores at once), so that they are not met one by one
    through the epoch; with the persistent compilation cache a rerun loads them. batch: the
    phase's first batch, or its `template` (ShapeDtypeStructs)."""
    self.precompiled.add(ready)
    step = self.train_step(ready)
    if not hasattr(step, 'precompile'):
      return
    t0 = time.time()
    before = len(step.compile_seconds)
    lengths = [v['num_snippets'] for v in self.manifest['videos']['train']]
    options = batching_options(self.config, self.mesh.devices.size)
    step.precompile(state, batch[0], self.key_data, self.input_pipeline.micro_lengths(
      lengths, options))  # fmt: skip
    logging.info('Compiled %d train-step programs (%s phase) in %.1fs.',
                 len(step.compile_seconds) - before, 'memory' if ready else 'warm-up',
                 time.time() - t0)  # fmt: skip

  def train_iterator(self, position: dict):
    """The training batches from `position`, on the mesh: gathered there from resident
    features, or tf.data host batches placed by `sharding.DeviceIterator`. A batch is a dict,
    or with `data.batching='micro'` a step's list of micro-batches."""
    from data_pipelines import resident

    options = batching_options(self.config, self.mesh.devices.size)
    start = dict(start_epoch=position['epoch'], start_batch=position['batch'])
    manifest = self.input_pipeline.load_manifest(self.shards_dir)
    setting = self.config.data.get('resident', 'off')
    self.resident = resident.use_resident(setting, manifest, self.mesh)
    if self.resident:
      it = resident.ResidentTrainIterator(self.shards_dir, self.mesh, options, **start)
      logging.info('Training features resident %s (%.0f MB%s), batches gathered there.',
                   'in host memory' if it.host_gather else 'on the devices',
                   it.resident_bytes / 1e6, '' if it.host_gather else ' per replica')  # fmt: skip
      return it
    host = self.input_pipeline.create_train_iterator(self.shards_dir, options, **start)
    return sharding.DeviceIterator(host, self.mesh)

  def initial_state(self):
    # Jitted: one program (~3 s on 2 CPU cores) instead of hundreds of eager ops (~15 s).
    create = jax.jit(lambda key: step_lib.create_train_state(self.config, key))
    state = create(jax.random.key(self.config.train.seed))
    return sharding.replicate(state, self.mesh)

  def restore_or_init(self):
    """(state, iterator position) from the latest checkpoint, or fresh."""
    state = self.initial_state()
    if self.checkpointer.latest_step() is None:
      return state, {'epoch': 0, 'batch': 0}
    target = checkpointing.abstract_like(state, sharding.replicated(self.mesh))
    state, position, step, skipped = self.checkpointer.restore_newest_intact(target, self.signature)
    if skipped:  # damaged checkpoints: resume from the newest intact one, and say so
      moved = self.checkpointer.set_aside([s for s, _ in skipped])
      logging.warning(
        'Skipped damaged checkpoint step(s) %s (moved to %s); resuming from step %d. %s',
        [s for s, _ in skipped], ', '.join(moved) or '-', step, skipped[0][1],
      )  # fmt: skip
    logging.info('Resumed from step %d (data position %s).', step, position)
    return state, position

  def init_memory(self, state):
    """The eval-mode pass over every training video that builds the memory (A7)."""
    from data_pipelines import numpy_pipeline, resident, sampling

    t0 = time.time()
    init_step = step_lib.make_memory_init_step(self.config, self.mesh)
    # One program per padded length (12 for THUMOS14's training set), all compiled before the
    # first batch, one per two cores at once, from one symbolic-length trace on one device (as the
    # 'micro' train steps: micro.py).
    programs = length_polymorphic.ProgramSet(
      init_step, batch_index=3, symbolic=self.mesh.devices.size == 1,
      name='memory initialisation',
    )  # fmt: skip
    # On CPU devices the batches are made in this thread (`numpy_pipeline`: the same batches):
    # tf.data's threads would take the cores the pass runs on (THUMOS14-shaped, 2 cores: 7.2
    # against 10.7 s, docs/results.md).
    source = numpy_pipeline if resident.cpu_only(self.mesh) else self.input_pipeline
    data = self.config.data
    options = source.EvalOptions.from_data_config(data, data.eval_batch_size * jax.process_count())
    train_lengths = [v['num_snippets'] for v in self.manifest['videos']['train']]
    # By length: the result keeps each class's global top N whatever the order
    # (`make_memory_init_step`), and length-sorted batches pad and compile less.
    batches = source.create_eval_iterator(self.shards_dir, options, subset='train', order='length')
    memory = sharding.replicate(
      memory_lib.empty(step_lib.memory_rows(self.config), self.config.memory.slots,
                       self.config.model.embed_dim), self.mesh)  # fmt: skip
    ids = sharding.replicate(step_lib.initial_snippet_ids(self.config), self.mesh)
    # Every training video passes here before the memory is used: the cap is checked once.
    train_ids = [v['video_id'] for v in self.manifest['videos']['train']]
    for batch in batches:
      batch = dict(batch)
      step_lib.check_label_cap(batch['labels'], batch['video_index'], train_ids, self.config)
      batch['valid'] = np.asarray(batch['valid'], np.float32)
      batch.pop('num_snippets_orig', None)
      batch = sharding.place_batch(batch, self.mesh)
      args = (state.params, memory, ids, batch, self.key_data)
      if not programs.compiled and options.mode == 'thumos':
        programs.precompile(args, sampling.eval_padded_lengths(
          train_lengths, options.batch_size, 'length', options.bucket_size))  # fmt: skip
      memory, ids = programs.get(*args)(*args)
      jax.block_until_ready(memory)
    memory = memory.replace(initialized=sharding.replicate(jnp.ones((), bool), self.mesh))
    filled = int(np.asarray(sharding.host_value(memory.filled)).sum())
    logging.info(
      'Memory initialised in %.1fs (%d programs, %.1f compile-seconds): %d of %d slots filled.',
      time.time() - t0, len(programs.compiled), sum(programs.compile_seconds), filled,
      memory.filled.size,
    )  # fmt: skip
    return state.replace(memory=memory)

  def evaluate(self, state, step: int) -> dict:
    result = self.evaluator(state.params, step, sharding.host_value(self.key_data))
    if self.is_chief:
      epoch = (step - 1) // self.steps_per_epoch + 1  # the epoch of the last step, from 1
      self.reporter.evaluation(step, epoch, evaluator.format_result(result))
    summary = evaluator.summary_metrics(result)
    self.writer.write(step, {f'eval/{k}': v for k, v in summary.items()})
    return summary

  def run(self) -> dict:
    """Trains to the last step; the checkpoints, the writer and the run folder's lock are
    released however it ends."""
    try:
      return self._run()
    finally:
      self.checkpointer.close()  # waits for the last asynchronous save
      self._lock.close()
      if self.writer is not None:
        self.writer.close()

  def _run(self) -> dict:
    cfg = self.config
    changes = self.config_changes
    state, position = self.restore_or_init()
    start = int(sharding.host_value(state.step))
    # Only after the restore: a resume refused (model shape or config) must leave the run's
    # config.json, which issf-eval loads, as it was.
    if self.is_chief:
      kept = run_dir.write_run_info(cfg, self.workdir, start, changes)
      if kept:
        logging.warning('The config differs from the run\'s (%s); the old one is %s.',
                        ', '.join(changes), kept)  # fmt: skip
    self.writer = MetricsWriter(self.workdir, enabled=self.is_chief, resume_step=start)
    if start >= self.total_steps:
      logging.info('Nothing to train: the run is at step %d of %d.', start, self.total_steps)
    init_at = schedules.memory_init_step(cfg, self.steps_per_epoch)
    if (
      init_at >= 0 and start >= init_at and not bool(sharding.host_value(state.memory.initialized))
    ):
      with self.timer('memory_init'):
        state = self.init_memory(state)  # a run stopped between the epoch end and its init
    iterator = self.train_iterator(position)
    last_eval: dict = {}
    in_flight = collections.deque()
    limit = max_in_flight(self.mesh)
    t_last, step_last = time.time(), start
    for step in range(start, self.total_steps):
      done = step + 1
      epoch_end = done % self.steps_per_epoch == 0 or done == self.total_steps
      log_step = epoch_end or done % cfg.train.log_every_steps == 0
      # Outside log steps nothing comes to the host (`step_guard`: tests disallow it there).
      with contextlib.nullcontext() if log_step else self.step_guard():
        ready = schedules.memory_ready(cfg, step, self.steps_per_epoch)
        if ready not in self.precompiled and hasattr(iterator, 'template'):
          # Resident features load in a thread meanwhile (`ResidentTrainIterator`).
          self.precompile(state, ready, iterator.template())
        batch = next(iterator)
        if ready not in self.precompiled:
          self.precompile(state, ready, batch)
        state, metrics = self.train_step(ready)(state, batch, self.key_data)
        in_flight.append(metrics['loss'])
        if len(in_flight) >= limit:
          jax.block_until_ready(in_flight.popleft())
      if log_step:
        self._log(done, metrics, time.time() - t_last, done - step_last)
        t_last, step_last = time.time(), done
      if not epoch_end:
        continue
      epoch = done // self.steps_per_epoch  # epochs completed
      if done == init_at:
        with self.timer('memory_init'):
          state = self.init_memory(state)
      last = done == self.total_steps
      eval_metrics = None
      if last or epoch % cfg.train.eval_every_epochs == 0:
        with self.timer('eval'):
          eval_metrics = self.evaluate(state, done)
        last_eval = eval_metrics
      # Evaluated steps are saved too, so the best-by-metric checkpoint can be kept.
      if last or eval_metrics is not None or epoch % cfg.train.checkpoint_every_epochs == 0:
        with self.timer('checkpoint'):
          self.checkpointer.save(done, state, iterator.state(), self.signature, eval_metrics)
      t_last = time.time()  # the rate counts training steps only
    iterator.close()  # a live generator-fed tf.data pipeline can hang interpreter exit
    return {'state': state, 'eval': last_eval, 'steps_per_epoch': self.steps_per_epoch}

  def _log(self, done: int, metrics, seconds: float, steps: int) -> None:
    """Brings step `done`'s metrics to the host, checks them, writes and reports them."""
    host = {k: float(v) for k, v in sharding.host_value(metrics).items()}
    check_finite(host, done)
    self.writer.write(done, {f'train/{k}': v for k, v in host.items()})
    if self.is_chief:
      rate = steps / max(seconds, 1e-9)
      eta = (self.total_steps - done) / max(rate, 1e-9)
      epoch = (done - 1) // self.steps_per_epoch + 1
      self.reporter.progress(reporting.Progress(done, self.total_steps, epoch, host, rate, eta))


def matmul_precision(config) -> str | None:
  """`config.train.matmul_precision` for `jax.default_matmul_precision` ('default' -> None)."""
  value = config.train.get('matmul_precision', 'default')
  return None if value in (None, '', 'default') else str(value)


def train_and_evaluate(config, workdir: str, *, reporter: reporting.Reporter | None = None,
                       allow_config_change: bool = False) -> dict:  # fmt: skip
  """Trains ISSF as `config` says, evaluating and checkpointing into `workdir`.

  Args:
    config: the experiment config.
    workdir: the run folder; an existing run resumes from its latest checkpoint.
    reporter: where progress and evaluation tables go (default: absl logging).
    allow_config_change: resume even if the config changes the training (`run_dir`).
  Returns:
    {'state': the final TrainState, 'eval': the last evaluation's summary metrics,
     'steps_per_epoch'}.
  """
  # Every program of the run (train steps, memory init, evaluation) is traced inside this scope.
  with jax.default_matmul_precision(matmul_precision(config)):
    return Trainer(config, workdir, reporter, allow_config_change).run()
