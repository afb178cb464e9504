"""The data-parallel train step and the memory-initialisation step (docs/design.md §4).

`train_step(state, batch, base_key) -> (state, metrics)` is one pure function, jitted, with
the per-device program written with `jax.shard_map` over a `data` mesh axis (the modern form
of pmap: since JAX 0.8 pmap itself is built on jit + shard_map). Each device holds a slice of
the global batch of videos; the state is replicated.

RSKP updates its memory after every single video, and each video reads the memory that the
videos before it left. Only the DEM read depends on the memory, while the update candidates
depend on the parameters alone, so one step:
  1. per device: embedding, base head, saliency, BRM and the update candidates;
  2. all-gather the candidates in global video order; every device runs the same sequential
     scan of momentum updates, which yields the memory each video reads and the final memory
     (identical on every device by construction);
  3. the DEM read and the losses; the gradient of the psum'd (global) loss is the SUM of the
     per-video gradients (RSKP's accumulation), then the optimizer step.
`memory.mode = 'batched'` instead lets every video read the memory as it stood at the start of
the step (step 2 still produces the same final memory).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from issf_common import errors
from issf_jax import losses
from issf_jax import memory as memory_lib
from issf_jax.model import ISSF, build_model, init_params, pseudo_label_logits
from issf_jax.sharding import AXIS
from issf_jax.train import schedules
from issf_jax.train.optimizer import make_optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32, optimizer steps taken
  params: Any
  opt_state: Any
  memory: memory_lib.MemoryBank


def create_train_state(config, rng: jax.Array) -> TrainState:
  """The initial state: RSKP init for params, zero Adam moments, an empty memory."""
  model = build_model(config.model)
  params = init_params(model, rng)
  optimizer = make_optimizer(config.optim)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    memory=memory_lib.empty(memory_rows(config), config.memory.slots, config.model.embed_dim),
  )


def dem_read(config) -> str:
  """`model.dem_read`: 'paper' (Eq. 9, the default) or a variant beyond the paper."""
  return config.model.get('dem_read', 'paper')


def memory_rows(config) -> int:
  """Rows of the bank: C, plus the background row (index C) with `dem_read='background'`."""
  return config.model.num_classes + (dem_read(config) == 'background')


def with_background_slot(config, ids):
  """[B, L] row ids -> [B, L + 1] with the background row C for every labelled video
  (`dem_read='background'`); unchanged otherwise."""
  if dem_read(config) != 'background':
    return ids
  labelled = (ids >= 0).any(-1, keepdims=True)
  return jnp.concatenate([ids, jnp.where(labelled, config.model.num_classes, -1)], -1)


def read_slot_ids(config, memory_ids):
  """(the rows each video reads [B, L'], whether rows with no filled slot are skipped).

  Eq. 9 reads the rows a video updates; `all_classes` reads every class row that has a filled
  slot, whatever the video's labels.
  """
  if dem_read(config) == 'all_classes':
    classes = config.model.num_classes
    ids = jnp.broadcast_to(
      jnp.arange(classes, dtype=memory_ids.dtype), (memory_ids.shape[0], classes)
    )
    return ids, True
  return memory_ids, False


def max_labels(config) -> int:
  """L, the label slots per video (C unless capped to save memory, e.g. ActivityNet)."""
  cap = config.memory.get('max_labels_per_video', 0)
  return min(cap, config.model.num_classes) if cap else config.model.num_classes


def check_label_cap(labels: np.ndarray, video_index: np.ndarray, video_ids, config) -> None:
  """Raises ValueError when a video has more labels than the memory's label slots.

  `memory.label_slots` keeps the first L labels of a video; a cap below a video's label count
  would drop its other classes from the memory silently. labels [B, C]; video_index [B] rows of
  `video_ids` (-1: padding).
  """
  cap = max_labels(config)
  counts = (np.asarray(labels) > 0).sum(-1)
  if counts.size and counts.max() > cap:
    i = int(np.argmax(counts))
    raise errors.ConfigError(
      f'video {video_ids[int(video_index[i])]!r} has {counts[i]} labels but the memory keeps '
      f'{cap} per video (memory.max_labels_per_video); raise it, or set 0 for C slots.'
    )


def _video_keys(base_key_data, step, positions):
  """One key per video from (seed, step, global position): device-split invariant."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(base_key_data), step)
  return jax.vmap(lambda p: jax.random.fold_in(step_key, p))(positions)


def gather_invariant(x: jax.Array) -> jax.Array:
  """All-gather over `data` in device order, as a device-invariant value.

  `lax.all_gather` results are typed as device-varying under shard_map's check_vma, which
  would forbid a replicated memory. A psum of zero-padded blocks is invariant and exact
  (adding zeros changes no bits).
  """
  local = x.shape[0]
  size = jax.lax.axis_size(AXIS)
  dtype = x.dtype
  work = x.astype(jnp.int32) if dtype == jnp.bool_ else x
  full = jnp.zeros((local * size,) + x.shape[1:], work.dtype)
  full = jax.lax.dynamic_update_slice_in_dim(full, work, jax.lax.axis_index(AXIS) * local, 0)
  full = jax.lax.psum(full, AXIS)
  return full.astype(dtype) if dtype == jnp.bool_ else full


def _global_positions(local_batch: int):
  return jax.lax.axis_index(AXIS) * local_batch + jnp.arange(local_batch)


def _masked_mean(values, weights, total):
  return jax.lax.psum((values * weights).sum(), AXIS) / jnp.maximum(total, 1.0)


def memory_class_ids(config, class_ids):
  """The memory rows a video reads and updates, per label slot ([B, L], -1 for none).

  `own`: its classes. `released`: the released code's bug, row 0 once per label.
  """
  if config.memory.get('class_index', 'own') == 'released':
    return jnp.where(class_ids >= 0, 0, -1).astype(class_ids.dtype)
  return class_ids


def memory_update_and_read(
  config, memory, out, mask, valid, memory_ids, eta_value, update_mode, *, trace=False
):
  """The memory half of a train step (Eq. 7-8 updates, the rows Eq. 9 reads), per device.

  The update candidates of this device's videos are all-gathered in global video order and
  every device runs the same sequential scan, so the new memory is identical everywhere and
  video j reads the memory the videos before it left (`memory.mode = 'sequential'`; in
  `batched` mode every video reads the memory as the step found it).

  Args:
    config: the experiment config.
    memory: the bank at the start of the step (replicated).
    out: the model's `encode` outputs for the local videos (embedded [B, T, D], salient
      [B, T], base frame logits and attention).
    mask: [B, T] bool; valid: [B] (0 for padding videos); memory_ids: [B, L] rows each
      video updates (-1 for none).
    eta_value: the update weight (`schedules.memory_weight`); update_mode: as in
      `memory.update`, or `memory.EXACT_MERGE`.
    trace: also return the memory after each video's update.
  Returns:
    (new memory, rows [B, L', N, D] and readable [B, L', N] of the local videos, read_ids
    [B, L'], and with `trace` (features [B_global, R, N, D], scores [B_global, R, N]) else
    None).
  """
  local_batch = mask.shape[0]
  probs = jax.nn.softmax(out['base']['frame_logits'], axis=-1)
  background = dem_read(config) == 'background'
  if update_mode == memory_lib.EXACT_MERGE:
    cand_f, cand_s, cand_v = memory_lib.all_salient_candidates(
      out['embedded'], out['salient'], probs, memory_ids
    )
    if background:
      bg_s, bg_v = memory_lib.all_background_candidates(out['base']['attention'], mask)
      cand_s = jnp.concatenate([cand_s, bg_s], 1)
      cand_v = jnp.concatenate([cand_v, bg_v], 1)
  else:
    cand = memory_lib.candidates(
      out['embedded'], out['salient'], probs, memory_ids, config.memory.slots, update_mode
    )
    cand_f, cand_s, cand_v, _ = cand
    if background:
      bg = memory_lib.background_candidates(
        out['embedded'], out['base']['attention'], mask, config.memory.slots
      )
      cand_f, cand_s, cand_v = (
        jnp.concatenate([a, b], 1) for a, b in zip(cand[:3], bg[:3], strict=True)
      )
  update_ids = with_background_slot(config, memory_ids)
  read_ids, nonempty_rows = read_slot_ids(config, update_ids)
  cand_v = cand_v & (valid > 0)[:, None, None] & (update_ids >= 0)[:, :, None]
  include_empty = config.memory.get('read_empty_slots', False)
  gather = gather_invariant
  scanned = memory_lib.scan_updates(
    memory, gather(cand_f), gather(cand_s), gather(cand_v), gather(update_ids),
    eta_value, update_mode, include_empty=include_empty, trace=trace,
    read_ids=gather(read_ids), nonempty_rows=nonempty_rows,
  )  # fmt: skip
  new_memory, rows, readable = scanned[:3]
  if config.memory.mode == 'batched':
    rows, readable = memory_lib.read_rows(memory, read_ids, include_empty, nonempty_rows)
  else:
    start = jax.lax.axis_index(AXIS) * local_batch
    rows = jax.lax.dynamic_slice_in_dim(rows, start, local_batch)
    readable = jax.lax.dynamic_slice_in_dim(readable, start, local_batch)
  return new_memory, rows, readable, read_ids, scanned[3] if trace else None


def _train_body(
  state: TrainState,
  batch,
  base_key_data,
  *,
  config,
  model,
  optimizer,
  ready,
  spe,
  return_grads,
  return_per_video,
):
  features, mask, labels = batch['features'], batch['mask'].astype(bool), batch['labels']
  valid = batch['valid'].astype(jnp.float32)
  local_batch = features.shape[0]
  # A video's randomness follows its place in the unpadded global batch, whatever the split.
  positions = batch['position'] if 'position' in batch else _global_positions(local_batch)
  video_keys = _video_keys(base_key_data, state.step, positions)
  class_ids = memory_lib.label_slots(labels, max_labels(config))
  memory_ids = memory_class_ids(config, class_ids)
  eta_value = schedules.memory_weight(config, state.step, spe)
  lam_s = schedules.lambda_s(config, ready)
  use_memory = ready and config.model.use_brm and config.model.use_dem
  update_mode = config.memory.update_mode
  if update_mode == 'merge_blend' and config.memory.get('merge_tie_order', 'index') == 'torch':
    update_mode = memory_lib.EXACT_MERGE

  def loss_fn(params):
    traces = {}
    out = model.apply({'params': params}, features, mask, train=True, video_keys=video_keys,
                      method=ISSF.encode)  # fmt: skip
    new_memory = state.memory
    if use_memory:
      new_memory, rows, readable, read_ids, memory_trace = memory_update_and_read(
        config, state.memory, out, mask, valid, memory_ids, eta_value, update_mode,
        trace=return_per_video,
      )  # fmt: skip
      if return_per_video:
        traces['memory_features'], traces['memory_scores'] = memory_trace
      slot_labels = (read_ids >= 0).astype(jnp.float32)
      attention = out['base']['attention']
      out.update(model.apply({'params': params}, out['refined'], mask, rows, readable,
                             slot_labels, attention, method=ISSF.enhance))  # fmt: skip
    if 'refined' in out:
      out['pseudo_logits'] = pseudo_label_logits(out, config.model)
    total, terms = losses.issf_objective(out, labels, mask, lam_s, config.loss)
    local = (total * valid).sum()
    if config.optim.grad_reduction == 'mean':
      local = local / jnp.maximum(jax.lax.psum(valid.sum(), AXIS), 1.0)
    # Differentiate the psum'd loss: under shard_map, grad-then-psum would count N times.
    return jax.lax.psum(local, AXIS), (terms, new_memory, traces)

  (loss, (terms, new_memory, traced)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  num_valid = jax.lax.psum(valid.sum(), AXIS)
  metrics = {name: _masked_mean(value, valid, num_valid) for name, value in terms.items()}
  filled = new_memory.filled
  metrics.update(
    loss=loss,
    grad_norm=optax.tree.norm(grads),
    param_norm=optax.tree.norm(params),
    memory_fill=filled.mean(),
    memory_mean_score=(new_memory.scores * filled).sum() / jnp.maximum(filled.sum(), 1),
    eta=eta_value,
    lambda_s=jnp.asarray(lam_s, jnp.float32),
    num_videos=num_valid,
  )
  if return_grads:
    metrics['grads'] = grads
  if return_per_video:
    # [B_global] per-video loss terms in global batch order, and the memory after each
    # video's update: for parity tests against per-video reference runs.
    metrics['per_video'] = {name: gather_invariant(value) for name, value in terms.items()}
    metrics['per_video'].update(traced)
  new_state = state.replace(
    step=state.step + 1, params=params, opt_state=opt_state, memory=new_memory
  )
  return new_state, metrics


def make_train_step(
  config,
  mesh,
  *,
  memory_ready: bool,
  steps_per_epoch: int,
  return_grads: bool = False,
  return_per_video: bool = False,
  compiler_options: dict | None = None,
) -> Callable:
  """A jitted `train_step(state, batch, base_key_data) -> (state, metrics)`.

  Args:
    config: the full experiment config.
    mesh: a 1-D `data` mesh; the global batch must divide by its size.
    memory_ready: the phase (warm-up or memory); two phases compile two programs.
    steps_per_epoch: S, for the eta schedule.
    return_grads: also return the global-batch gradient (the sum over its videos, before
      weight decay) as `metrics['grads']`, a params-shaped tree (for tests and debugging).
    return_per_video: also return `metrics['per_video']`: every loss term per video [B]
      and, in the memory phase, the memory after each video's update
      (`memory_features` [B, C, N, D], `memory_scores` [B, C, N]).
    compiler_options: XLA options for this program, e.g. `{'xla_backend_optimization_level':
      0}` to compile faster where the run time does not matter (tests).
  The batch holds `features` [B, T, D], `mask` [B, T], `labels` [B, C] and `valid` [B]
  (0 for padding videos). `base_key_data` is `jax.random.key_data` of the run's key.
  """
  model = build_model(config.model)
  optimizer = make_optimizer(config.optim)
  body = functools.partial(
    _train_body, config=config, model=model, optimizer=optimizer, ready=memory_ready,
    spe=steps_per_epoch, return_grads=return_grads, return_per_video=return_per_video,
  )  # fmt: skip
  sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()))
  return jax.jit(sharded, donate_argnums=(0,), compiler_options=compiler_options)


def _init_body(params, acc_memory, acc_ids, batch, base_key_data, *, config, model):
  features, mask, labels = batch['features'], batch['mask'].astype(bool), batch['labels']
  valid = batch['valid'] > 0
  index = batch['video_index']
  # Eval mode; the keys only matter for the random-saliency ablation.
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.wrap_key_data(base_key_data), i))(index)
  out = model.apply({'params': params}, features, mask, train=False, video_keys=keys,
                    method=ISSF.encode)  # fmt: skip
  class_ids = memory_lib.label_slots(labels, max_labels(config))
  probs = jax.nn.softmax(out['base']['frame_logits'], axis=-1)
  cand_f, cand_s, cand_v, cand_pos = memory_lib.candidates(
    out['embedded'], out['salient'], probs, class_ids, config.memory.slots, 'ours'
  )
  if dem_read(config) == 'background':
    bg = memory_lib.background_candidates(
      out['embedded'], out['base']['attention'], mask, config.memory.slots
    )
    cand_f, cand_s, cand_v, cand_pos = (
      jnp.concatenate([a, b], 1)
      for a, b in zip((cand_f, cand_s, cand_v, cand_pos), bg, strict=True)
    )
    class_ids = with_background_slot(config, class_ids)
    cand_v = cand_v & (class_ids >= 0)[:, :, None]
  cand_v = cand_v & valid[:, None, None]
  cand_ids = memory_lib.global_snippet_ids(index, cand_pos)
  gather = gather_invariant
  per_class = memory_lib.scatter_to_classes(
    memory_rows(config), gather(class_ids), gather(cand_f), gather(cand_s), gather(cand_v),
    gather(cand_ids),
  )  # fmt: skip
  return memory_lib.init_merge(acc_memory, acc_ids, *per_class)


def make_memory_init_step(config, mesh, compiler_options: dict | None = None) -> Callable:
  """A jitted `(params, memory, snippet_ids, batch, base_key_data) -> (memory, snippet_ids)`.

  Run it over every training video (eval mode), starting from `memory_lib.empty` and
  snippet ids of int32 max, then set `initialized`. The result keeps each class's global
  top-N salient snippets by class probability, whatever the video order or device count.
  The batch also needs `video_index` [B] int32 (a unique id per video).
  `compiler_options` as for `make_train_step`.
  """
  model = build_model(config.model)
  body = functools.partial(_init_body, config=config, model=model)
  sharded = jax.shard_map(
    body, mesh=mesh, in_specs=(P(), P(), P(), P(AXIS), P()), out_specs=(P(), P())
  )
  return jax.jit(sharded, compiler_options=compiler_options)


def initial_snippet_ids(config) -> jax.Array:
  shape = (memory_rows(config), config.memory.slots)
  return jnp.full(shape, jnp.iinfo(jnp.int32).max, jnp.int32)
