"""The training loop: `train_and_evaluate(config, workdir)`.

One host or a pod: each process reads its slice of every global batch, the mesh spans every
device of every process, and the state is replicated. The loop keeps at most two steps in
flight (XLA:CPU collectives deadlock with more, environment notes §2).

Per epoch end: the memory initialisation pass (once, at the end of `memory_init_epoch`), the
periodic evaluation, and the checkpoint (state + iterator position + eval metrics).
Restarting with the same workdir resumes from the latest checkpoint, bitwise on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from issf_jax import checkpointing, evaluation
from issf_jax import memory as memory_lib
from issf_jax.train import evaluator, schedules
from issf_jax.train import step as step_lib
from issf_jax.train.metrics_writer import MetricsWriter


def _git_revision() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True)
    dirty = subprocess.run(
      ['git', 'status', '--porcelain'], cwd=here, capture_output=True, text=True
    )
    return (
      out.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '') if out.returncode == 0 else ''
    )
  except OSError:
    return ''


def write_run_info(config, workdir: str) -> None:
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  with open(os.path.join(workdir, 'git_revision.txt'), 'w') as f:
    f.write(_git_revision() + '\n')


def check_finite(metrics: dict, step: int) -> None:
  """Raises on the host when a loss term is NaN or Inf (names the step and the terms)."""
  bad = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(v)}
  if bad:
    raise FloatingPointError(
      f'Non-finite training metrics at step {step}: {bad}. Check the input features (NaN/Inf,'
      ' scale) and the learning rate; the last checkpoint is intact.'
    )


class Trainer:
  """Holds what the loop needs: mesh, compiled steps, iterators, checkpoints, writers."""

  def __init__(self, config, workdir: str):
    from data_pipelines import input_pipeline  # TF only on the data path

    self.config, self.workdir = config, workdir
    self.input_pipeline = input_pipeline
    if not config.data.shards_dir:
      raise ValueError('config.data.shards_dir is empty; run issf-prepare and set it.')
    self.shards_dir = config.data.shards_dir
    self.manifest = manifest = input_pipeline.load_manifest(self.shards_dir)
    if manifest['feature_dim'] != config.model.feature_dim:
      raise ValueError(
        f'{self.shards_dir} holds {manifest["feature_dim"]}-d features but model.feature_dim is '
        f'{config.model.feature_dim}; set --config.model.feature_dim.'
      )
    if manifest['num_classes'] != config.model.num_classes:
      raise ValueError(
        f'{self.shards_dir} has {manifest["num_classes"]} classes but model.num_classes is '
        f'{config.model.num_classes}.'
      )
    self.num_train = manifest['counts']['train']
    self.steps_per_epoch = self.num_train // config.train.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'{self.num_train} train videos < batch size {config.train.batch_size}.')
    self.total_steps = config.train.num_epochs * self.steps_per_epoch
    if config.train.max_steps:
      self.total_steps = min(self.total_steps, config.train.max_steps)
    self.mesh = step_lib.make_mesh(config.train.num_devices or None)
    self.local_devices = len(
      [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
    )
    self.key_data = step_lib.replicate(
      jax.random.key_data(jax.random.key(config.train.seed)), self.mesh
    )
    self.train_steps = {}
    self.checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep_last=config.train.keep_last,
      best_metric=config.train.best_metric or None,
    )  # fmt: skip
    self.signature = checkpointing.model_signature(config)
    self.writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)

  def train_step(self, ready: bool):
    if ready not in self.train_steps:
      self.train_steps[ready] = step_lib.make_train_step(
        self.config, self.mesh, memory_ready=ready, steps_per_epoch=self.steps_per_epoch
      )
    return self.train_steps[ready]

  def initial_state(self):
    # Jitted: one program (~3 s on 2 CPU cores) instead of hundreds of eager ops (~15 s).
    create = jax.jit(lambda key: step_lib.create_train_state(self.config, key))
    state = create(jax.random.key(self.config.train.seed))
    return step_lib.replicate(state, self.mesh)

  def restore_or_init(self):
    """(state, iterator position) from the latest checkpoint, or fresh."""
    state = self.initial_state()
    if self.checkpointer.latest_step() is None:
      return state, {'epoch': 0, 'batch': 0}
    target = checkpointing.abstract_like(state, step_lib.NamedSharding(self.mesh, step_lib.P()))
    state, position, step = self.checkpointer.restore(target, self.signature)
    logging.info('Resumed from step %d (data position %s).', step, position)
    return state, position

  def host_batch(self, batch: dict) -> dict:
    host_size = len(batch['features'])
    batch = step_lib.pad_batch(batch, self.local_devices, offset=jax.process_index() * host_size)
    return step_lib.shard_batch(batch, self.mesh)

  def init_memory(self, state):
    """The eval-mode pass over every training video that builds the memory (A7)."""
    t0 = time.time()
    init_step = step_lib.make_memory_init_step(self.config, self.mesh)
    data = self.config.data
    batches = self.input_pipeline.create_eval_iterator(
      self.shards_dir, subset='train', batch_size=data.eval_batch_size * jax.process_count(),
      mode=data.mode, bucket_size=data.bucket_size, t_s=data.t_s,
    )  # fmt: skip
    memory = step_lib.replicate(
      memory_lib.empty(self.config.model.num_classes, self.config.memory.slots,
                       self.config.model.embed_dim), self.mesh)  # fmt: skip
    ids = step_lib.replicate(step_lib.initial_snippet_ids(self.config), self.mesh)
    train_ids = [v['video_id'] for v in self.manifest['videos']['train']]
    for batch in batches:
      batch = dict(batch)
      step_lib.check_label_cap(batch['labels'], batch['video_index'], train_ids, self.config)
      batch['valid'] = np.asarray(batch['valid'], np.float32)
      batch.pop('num_snippets_orig', None)
      memory, ids = init_step(state.params, memory, ids, self.host_batch(batch), self.key_data)
      jax.block_until_ready(memory)
    memory = memory.replace(initialized=step_lib.replicate(jnp.ones((), bool), self.mesh))
    filled = int(np.asarray(step_lib.host_value(memory.filled)).sum())
    logging.info(
      'Memory initialised in %.1fs: %d of %d slots filled.', time.time() - t0, filled,
      memory.filled.size,
    )  # fmt: skip
    return state.replace(memory=memory)

  def evaluate(self, state, step: int) -> dict:
    key_data = step_lib.host_value(self.key_data)
    out = evaluator.evaluate_params(self.config, state.params, self.shards_dir, key_data)
    result = out['result']
    if jax.process_index() == 0:
      evaluator.write_predictions(self.workdir, step, out['predictions'])
      table = evaluation.format_results_table(result)
      logging.info('Evaluation at step %d (epoch %d):\n%s', step, step // self.steps_per_epoch,
                   table)  # fmt: skip
      print(f'\nEvaluation at step {step}:\n{table}', flush=True)
    summary = evaluator.summary_metrics(result)
    self.writer.write(step, {f'eval/{k}': v for k, v in summary.items()})
    return summary

  def run(self) -> dict:
    cfg = self.config
    state, position = self.restore_or_init()
    # Only now: a resume refused by the shape check must not overwrite the run's config.json.
    write_run_info(cfg, self.workdir)
    start = int(step_lib.host_value(state.step))
    init_at = schedules.memory_init_step(cfg, self.steps_per_epoch)
    if (
      init_at >= 0 and start >= init_at and not bool(step_lib.host_value(state.memory.initialized))
    ):
      state = self.init_memory(state)  # a run stopped between the epoch end and its init
    iterator = self.input_pipeline.create_train_iterator(
      self.shards_dir, global_batch_size=cfg.train.batch_size, seed=cfg.train.seed,
      mode=cfg.data.mode, bucket_size=cfg.data.bucket_size, max_len=cfg.data.max_len or None,
      t_s=cfg.data.t_s, start_epoch=position['epoch'], start_batch=position['batch'],
    )  # fmt: skip
    train_ids = [v['video_id'] for v in self.manifest['videos']['train']]
    last_eval: dict = {}
    prev_metrics, prev_step = None, None
    t_last, steps_since = time.time(), 0
    for step in range(start, self.total_steps):
      ready = schedules.memory_ready(cfg, step, self.steps_per_epoch)
      raw = next(iterator)
      step_lib.check_label_cap(raw['labels'], raw['video_index'], train_ids, cfg)
      batch = self.host_batch(raw)
      state, metrics = self.train_step(ready)(state, batch, self.key_data)
      if prev_metrics is not None:  # lag-1 sync: at most two steps in flight
        self._log(prev_step, prev_metrics, t_last, steps_since)
      prev_metrics, prev_step = metrics, step
      steps_since += 1
      done = step + 1
      if done % self.steps_per_epoch == 0 or done == self.total_steps:
        self._log(prev_step, prev_metrics, t_last, steps_since, force=True)
        prev_metrics = None
        t_last, steps_since = time.time(), 0
        epoch = done // self.steps_per_epoch  # epochs completed
        if done == init_at:
          state = self.init_memory(state)
        last = done == self.total_steps
        eval_metrics = None
        if last or epoch % cfg.train.eval_every_epochs == 0:
          eval_metrics = self.evaluate(state, done)
          last_eval = eval_metrics
        # Evaluated steps are saved too, so the best-by-metric checkpoint can be kept.
        if last or eval_metrics is not None or epoch % cfg.train.checkpoint_every_epochs == 0:
          self.checkpointer.save(done, state, iterator.state(), self.signature, eval_metrics)
    if prev_metrics is not None:
      self._log(prev_step, prev_metrics, t_last, steps_since, force=True)
    iterator.close()  # a live generator-fed tf.data pipeline can hang interpreter exit
    self.checkpointer.close()
    self.writer.close()
    return {'state': state, 'eval': last_eval, 'steps_per_epoch': self.steps_per_epoch}

  def _log(self, step, metrics, t_last, steps_since, force=False):
    host = {k: float(v) for k, v in jax.device_get(step_lib.host_value(metrics)).items()}
    check_finite(host, step)
    every = self.config.train.log_every_steps
    if not force and (step + 1) % every:
      return
    self.writer.write(step + 1, {f'train/{k}': v for k, v in host.items()})
    elapsed = max(time.time() - t_last, 1e-9)
    rate = steps_since / elapsed
    eta_s = (self.total_steps - step - 1) / max(rate, 1e-9)
    if jax.process_index() == 0:
      print(
        f'epoch {step // self.steps_per_epoch:4d}  step {step + 1:6d}/{self.total_steps}  '
        f'loss {host["loss"]:.4f}  {rate:.2f} steps/s  ETA {eta_s / 60:.1f} min',
        flush=True,
      )


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ISSF as `config` says, evaluating and checkpointing into `workdir`."""
  return Trainer(config, workdir).run()


def results_json(workdir: str, payload: dict) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(payload, f, indent=2)
