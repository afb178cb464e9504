"""Runs a few train steps on N simulated CPU devices and saves the outcome (a subprocess of
tests/test_train_step.py: `--xla_force_host_platform_device_count` must be set before JAX
starts, so each device count needs its own process).

  python tests/multidevice_check.py --devices 8 --videos 8 --steps 5 --out /tmp/run8.npz

The run: `2 * videos` synthetic videos, a global batch of `videos` (padded by `pad_batch` to a
multiple of the device count), warm-up steps, the memory initialisation when the schedule says
(after step `steps_per_epoch * (memory_init_epoch + 1)` = 2), then memory-phase steps. The
loop blocks on every step (at most one step in flight: XLA:CPU collectives can deadlock with
many), and short collective timeouts make a deadlock fail in seconds, not hang.

The .npz holds the final params (`params/<path>`), memory, the last step's gradient
(`grads/<path>`), the per-step losses, whether every device holds bitwise the same memory and
params, and the jit cache sizes (1 program per phase: no retrace from step to step).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import ml_collections
import numpy as np

# Fail fast instead of hanging if a collective rendezvous is stuck (docs/design.md §9).
COLLECTIVE_FLAGS = (
  '--xla_cpu_collective_call_warn_stuck_timeout_seconds=5',
  '--xla_cpu_collective_call_terminate_timeout_seconds=10',
)
# Tiny shapes: compile time dominates, LLVM -O0 halves it. Same flags for every device count.
FAST_COMPILE = {'xla_backend_optimization_level': 0}

NUM_CLASSES, DIM, SNIPPETS = 5, 32, 16


def make_config(num_epochs: int = 10, memory_init_epoch: int = 0) -> ml_collections.ConfigDict:
  from configs import common  # ml_collections only; no JAX start

  c = ml_collections.ConfigDict()
  c.model = common.model_config(num_classes=NUM_CLASSES, feature_dim=DIM)
  c.memory = common.memory_config()
  c.loss = common.loss_config()
  c.optim = common.optim_config(1e-3)
  c.train = ml_collections.ConfigDict(
    dict(num_epochs=num_epochs, memory_init_epoch=memory_init_epoch)
  )
  return c


def make_dataset(num_videos: int, seed: int = 0, snippets: int = SNIPPETS) -> dict:
  """Numpy videos of random lengths (padded to `snippets`), 1-2 labels each, shared classes."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, snippets + 1, num_videos)
  lengths[0] = snippets
  mask = np.arange(snippets)[None] < lengths[:, None]
  feats = rng.random((num_videos, snippets, DIM), dtype=np.float32) * mask[..., None]
  labels = np.zeros((num_videos, NUM_CLASSES), np.float32)
  for v in range(num_videos):
    labels[v, rng.choice(NUM_CLASSES - 1, 1 + (v % 3 == 1), replace=False)] = 1.0  # class 4: none
  return dict(
    features=feats, mask=mask, labels=labels, video_index=np.arange(num_videos, dtype=np.int32)
  )


def _flat(tree, prefix):
  import jax

  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    out[f'{prefix}/{name}'] = np.asarray(leaf)
  return out


def _same_on_every_device(tree) -> bool:
  import jax

  for leaf in jax.tree.leaves(tree):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    if any(s.tobytes() != shards[0].tobytes() for s in shards[1:]):
      return False
  return True


@functools.cache
def programs(devices: int, steps_per_epoch: int = 2, memory_mode: str = 'sequential'):
  """(config, mesh, create_state, {memory_ready: train_step}, init_step), compiled lazily.

  Cached, so that in-process callers (the tests) share the compiled programs.
  """
  import jax

  from issf_jax import sharding
  from issf_jax.train import step as step_lib

  if len(jax.devices()) < devices:
    raise SystemExit(f'{len(jax.devices())} devices, asked for {devices}')
  c = make_config()
  c.memory.mode = memory_mode
  mesh = sharding.make_mesh(devices)
  create = jax.jit(lambda key: step_lib.create_train_state(c, key), compiler_options=FAST_COMPILE)
  train_steps = {
    ready: step_lib.make_train_step(
      c,
      mesh,
      memory_ready=ready,
      steps_per_epoch=steps_per_epoch,
      return_grads=True,
      compiler_options=FAST_COMPILE,
    )
    for ready in (False, True)
  }
  init_step = step_lib.make_memory_init_step(c, mesh, compiler_options=FAST_COMPILE)
  return c, mesh, create, train_steps, init_step


def run(devices: int, videos: int, steps: int, seed: int) -> dict:
  import jax

  from issf_jax import sharding
  from issf_jax.train import schedules
  from issf_jax.train import step as step_lib

  steps_per_epoch = 2
  c, mesh, create, train_steps, init_step = programs(devices, steps_per_epoch)
  data = make_dataset(steps_per_epoch * videos, seed)
  state = sharding.replicate(create(jax.random.key(seed)), mesh)
  key_data = jax.random.key_data(jax.random.key(seed + 1))

  def batch_of(index):
    take = np.arange(index * videos, (index + 1) * videos) % len(data['features'])
    host = sharding.pad_batch({k: v[take] for k, v in data.items()}, devices)
    return sharding.shard_batch(host, mesh)

  init_at = schedules.memory_init_step(c, steps_per_epoch)
  losses, shards_equal, t0 = [], [], time.time()
  metrics = None
  for k in range(steps):
    if k == init_at:
      memory, ids = state.memory, sharding.replicate(step_lib.initial_snippet_ids(c), mesh)
      for b in range(steps_per_epoch):  # every training video, eval mode
        memory, ids = init_step(state.params, memory, ids, batch_of(b), key_data)
        jax.block_until_ready(memory)
      initialized = sharding.replicate(np.ones((), bool), mesh)
      state = state.replace(memory=memory.replace(initialized=initialized))
      shards_equal.append(_same_on_every_device(state.memory))
    ready = schedules.memory_ready(c, k, steps_per_epoch)
    state, metrics = train_steps[ready](state, batch_of(k % steps_per_epoch), key_data)
    jax.block_until_ready((state, metrics))  # lag-0 sync: never two steps in flight
    losses.append(float(metrics['loss']))
    if not np.isfinite(losses[-1]):
      raise FloatingPointError(f'non-finite loss at step {k}')
    shards_equal.append(_same_on_every_device((state.memory, state.params)))
  out = {
    **_flat(state.params, 'params'),
    **_flat(metrics['grads'], 'grads'),
    'memory/features': np.asarray(state.memory.features),
    'memory/scores': np.asarray(state.memory.scores),
    'memory/filled': np.asarray(state.memory.filled),
    'memory/initialized': np.asarray(state.memory.initialized),
    'losses': np.asarray(losses),
    'step': np.asarray(state.step),
    'same_on_every_device': np.asarray(shards_equal),
    'num_shards': np.asarray(len(state.memory.features.addressable_shards)),
    'cache_sizes': np.asarray(
      [train_steps[False]._cache_size(), train_steps[True]._cache_size(), init_step._cache_size()]
    ),
    'seconds': np.asarray(time.time() - t0),
  }
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--devices', type=int, required=True)
  parser.add_argument('--videos', type=int, default=8, help='global batch (before padding)')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  flags = os.environ.get('XLA_FLAGS', '').split()
  flags = [f for f in flags if not f.startswith('--xla_force_host_platform_device_count')]
  flags += [f'--xla_force_host_platform_device_count={args.devices}', *COLLECTIVE_FLAGS]
  os.environ['XLA_FLAGS'] = ' '.join(flags)  # before JAX starts
  np.savez(args.out, **run(args.devices, args.videos, args.steps, args.seed))
  return 0


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main())
