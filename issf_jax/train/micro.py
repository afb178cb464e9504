"""One optimizer step over a global batch fed as micro-batches of similar lengths.

`make_micro_train_step(...)(state, micro_batches, base_key_data) -> (state, metrics)` takes the
list of micro-batches of one global batch (`data.batching = 'micro'`, the input pipeline's
`plan_steps`), each padded only to its own length bucket, and makes the same optimizer step as
`step.make_train_step` on the whole batch:

* the gradient is the sum of the per-video gradients (RSKP's accumulation), so the sum of the
  micro-batches' gradients is the batch's, up to the order of the float additions
  ('mean' reduction: each micro-batch's mean is weighted by its video count);
* every video keeps its dropout key: the key follows its place in the global batch, carried as
  'position';
* the memory (sequential mode) is threaded through the micro-batches in order: each video reads
  the memory that the videos processed before it left. With one video per micro-batch the order
  is the batch order, as in the one-program step; with more, the pipeline orders the step's
  videos by length. The memory receives no gradient (its candidates are stop_gradient'ed), so
  threading it between programs changes nothing in the gradient;
* then one optimizer update, `state.step + 1`.

Each micro-batch runs the unmodified per-device body of `step.py` (`_train_body` with
`return_grads`); its optimizer update and the updated params are unused and compiled away.
One program per (micro-batch shape, phase); on one device, `precompile` lowers a phase's
programs from one trace with a symbolic length (length_polymorphic.py). 'batched' memory mode
(every video reads the memory of the start of the step) cannot be expressed by threading and
is refused.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from issf_jax import sharding
from issf_jax.model import build_model
from issf_jax.train import step as step_lib
from issf_jax.train.length_polymorphic import ProgramSet
from issf_jax.train.optimizer import make_optimizer

# Metrics that are means over the valid videos of a micro-batch: averaged with video weights.
_FROM_LAST = ('memory_fill', 'memory_mean_score', 'eta', 'lambda_s')


def make_micro_train_step(
  config,
  mesh,
  *,
  memory_ready: bool,
  steps_per_epoch: int,
  compiler_options: dict | None = None,
  sync: bool = False,
) -> Callable:
  """A `step(state, micro_batches, base_key_data) -> (state, metrics)` (module docstring).

  micro_batches: a list of sharded batches (`step.shard_batch`) with the keys of
  `step.make_train_step`'s batch plus 'position' [m] int32. The state is donated.
  sync: wait for each micro-batch before the next (benchmarks: otherwise the compilation of a
  new shape overlaps the running programs, and compile and run time cannot be told apart).
  `step.compile_seconds` lists the compile time of each program compiled so far.
  """
  uses_memory = memory_ready and config.model.use_brm and config.model.use_dem
  if uses_memory and config.memory.mode != 'sequential':
    raise ValueError(
      f"data.batching='micro' needs memory.mode='sequential', got {config.memory.mode!r}"
    )
  model = build_model(config.model)
  optimizer = make_optimizer(config.optim)
  body = functools.partial(
    step_lib._train_body, config=config, model=model, optimizer=optimizer, ready=memory_ready,
    spe=steps_per_epoch, return_grads=True, return_per_video=False,
  )  # fmt: skip
  mean = config.optim.grad_reduction == 'mean'

  def grads_body(state, acc, batch, base_key_data):
    new_state, metrics = body(state, batch, base_key_data)
    grads = metrics.pop('grads')
    for unused in ('param_norm', 'grad_norm'):  # of this micro-batch alone
      metrics.pop(unused)
    weight = metrics['num_videos'] if mean else 1.0  # undo the per-micro-batch mean
    acc = jax.tree.map(lambda a, g: a + g * weight, acc, grads)
    return new_state.memory, acc, metrics

  # On one device the gradient needs no reduction over devices, but with check_vma the
  # transpose of the replicated parameters' broadcast still all-reduces every gradient of
  # every micro-batch (a full copy of the gradient tree); without it, nothing is reduced,
  # which is the one-device gradient.
  sharded = jax.shard_map(
    grads_body, mesh=mesh, in_specs=(P(), P(), P(sharding.AXIS), P()), out_specs=(P(), P(), P()),
    check_vma=mesh.devices.size > 1,
  )  # fmt: skip
  micro = jax.jit(sharded, donate_argnums=(1,), compiler_options=compiler_options)
  zeros = jax.jit(lambda params: jax.tree.map(jnp.zeros_like, params))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def apply(state, grads, memory, metrics_list):
    total = sum(m['num_videos'] for m in metrics_list)
    if mean:
      grads = jax.tree.map(lambda g: g / jnp.maximum(total, 1.0), grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {}
    for name in metrics_list[0]:
      values = [m[name] for m in metrics_list]
      if name in _FROM_LAST:
        metrics[name] = values[-1]
      elif name == 'num_videos':
        metrics[name] = total
      elif name == 'loss':
        loss = sum(values) if not mean else sum(v * m['num_videos'] for v, m in zip(
          values, metrics_list, strict=True)) / jnp.maximum(total, 1.0)  # fmt: skip
        metrics[name] = loss
      else:  # masked means over the micro-batch's videos
        weighted = sum(v * m['num_videos'] for v, m in zip(values, metrics_list, strict=True))
        metrics[name] = weighted / jnp.maximum(total, 1.0)
    metrics.update(grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, memory=memory
    )
    return new_state, metrics

  # Compiled ahead of time per micro-batch shape, so that the compile time (one program per
  # length bucket, most of them met in the first epoch) is known apart from the step time.
  # One device only for the symbolic-T export: on a 2-device CPU mesh XLA (jax 0.10.2) crashes
  # compiling the refined module of the shard_map'ed step (a segfault, not an error).
  micro_programs = ProgramSet(
    micro, batch_index=2, donate_argnums=(1,), compiler_options=compiler_options,
    symbolic=mesh.devices.size == 1, name='train step',
  )  # fmt: skip
  compile_seconds = micro_programs.compile_seconds
  applies = {}

  def apply_program(*args):
    count = len(args[3])
    if count not in applies:
      t0 = time.perf_counter()
      applies[count] = apply.lower(*args).compile()
      compile_seconds.append(time.perf_counter() - t0)
    return applies[count]

  # XLA:CPU collectives deadlock with many programs in flight (environment notes §2): on a
  # multi-device mesh, wait for each micro-batch before dispatching the one after the next.
  lag = mesh.devices.size > 1 or sync

  def train_step(state, micro_batches, base_key_data):
    acc, memory, metrics_list = zeros(state.params), state.memory, []
    for batch in micro_batches:
      prev = memory
      args = (state.replace(memory=memory), acc, batch, base_key_data)
      memory, acc, metrics = micro_programs.get(*args)(*args)
      metrics_list.append(metrics)
      if lag:
        jax.block_until_ready(memory if sync else prev)
    args = (state, acc, memory, metrics_list)
    return apply_program(*args)(*args)

  def precompile(state, template, base_key_data, lengths, workers: int | None = None) -> None:
    """Compiles, ahead of need, the programs of micro-batches like `template` (one sharded
    micro-batch) padded to each length T of `lengths`, one per two cores at once, lowered from one
    trace with a symbolic T where the step allows it (length_polymorphic.ProgramSet)."""
    args = (state, zeros(state.params), template, base_key_data)
    micro_programs.precompile(args, lengths, workers)

  train_step.compile_seconds = compile_seconds  # one entry per program compiled so far
  train_step.symbolic_ranges = micro_programs.symbolic_ranges
  train_step.precompile = precompile
  return train_step
