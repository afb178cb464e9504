"""Train-step throughput on THUMOS-shaped batches, against a dense matmul of the same T.

  python -m benchmarks.train_step [--steps 5] [--batch 10] [--seed 0] [--bucket 64] [--pad batch]

Batches: `--batch` videos, D = 2048, C = 20, lengths T = floor(duration * 25 / 16) drawn from the
200 THUMOS14 training (`validation`) videos of `data_pipelines/annotations/thumos14` (a lognormal
fitted to them if that is absent). `--pad batch` pads each batch to its longest video rounded up to
`--bucket`, as the input pipeline does (one compiled program per bucket); `--pad common` pads
every batch to the largest bucket (one program per phase). For the warm-up phase and the memory
phase it prints the compile time, the step time (median over `--steps` steps; the first step of
each phase is not timed), videos/s, true snippets/s, and the achieved GFLOP/s from the analytic
count `step_flops` of what is executed (padded shapes; XLA's own count beside it), next to the
rate of a jitted [T, 2048] x [2048, 2048] matmul with the same T measured right after each step
(on a shared machine the pair sees about the same load), and the useful rate (true lengths,
Eq. 5 as written). Single device (XLA uses every core).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from issf_jax import defaults, sharding
from issf_jax.train import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
ANNOTATIONS = REPO / 'data_pipelines' / 'annotations' / 'thumos14'  # The packaged W-TALC arrays.
# log(T) of the 200 THUMOS14 training videos: mean 5.384, std 0.920 (T in [13, 2202]).
LOGNORMAL = (5.384, 0.920)
SNIPPETS_PER_SECOND = 25.0 / 16.0


def thumos_train_lengths() -> tuple[np.ndarray, str]:
  try:
    duration = np.load(ANNOTATIONS / 'duration.npy')[:, 0]
    subset = np.load(ANNOTATIONS / 'subset.npy')
  except OSError:
    return np.array([]), 'lognormal fit'
  train = subset == b'validation'
  return np.floor(duration[train] * SNIPPETS_PER_SECOND).astype(np.int64), 'THUMOS14 train'


def draw_lengths(rng, count: int, pool: np.ndarray) -> np.ndarray:
  if len(pool):
    return rng.choice(pool, count)
  return np.clip(np.exp(rng.normal(*LOGNORMAL, count)), 13, 2614).astype(np.int64)


def step_flops(
  lengths, *, d_in: int, d: int, classes: int, label_slots: int, slots: int, reduction: int,
  memory: bool, attention_products: int = 2,
) -> float:  # fmt: skip
  """Analytic FLOPs of one train step over videos of `lengths`: every layer costs 3 x its forward
  (forward, input gradient, weight gradient) except the embedding, 2 x (no gradient to X).

  Per video of T snippets (multiply-add = 2 FLOPs; element-wise work is not counted):
    embedding                2 T D_in D
    BRM channel MLPs         2 units x (2 T D D/r + 2 T D/r D)
    BRM temporal attentions  2 T T D per T x T product (logits or weighted sum); the two units
                             of Eq. 5 need 4 products as written (`attention_products=4`) and
                             2 as `issf_jax/model/refinement.py` computes them (one key matrix
                             holds both sets)
    heads, per branch        2 T D (C+1) frame logits + 2 T (C+1) D class-wise pooling
                             + 2 T D foreground logit + 2 T D attention pooling
                             (base + BRM; + DEM in the memory phase)
    DEM read (memory phase)  2 T (L N) D logits + 2 T (L N) D weighted sum
  """
  total = 0.0
  for t in np.asarray(lengths, np.float64):
    total += 2 * (2 * t * d_in * d)
    f = 2 * (4 * t * d * d / reduction)
    f += attention_products * (2 * t * t * d)
    head = 4 * t * d * (classes + 1) + 4 * t * d
    f += head * (3 if memory else 2)
    if memory:
      f += 4 * t * label_slots * slots * d
    total += 3 * f
  return total


def make_config(num_classes: int, dim: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = defaults.model_config(num_classes=num_classes, feature_dim=dim)
  c.memory = defaults.memory_config()
  c.loss = defaults.loss_config()
  c.optim = defaults.optim_config(5e-5)
  c.train = ml_collections.ConfigDict(dict(num_epochs=180, memory_init_epoch=100))
  return c


def make_batch(rng, lengths, padded: int, dim: int, num_classes: int, first_index: int) -> dict:
  count = len(lengths)
  mask = np.arange(padded)[None] < lengths[:, None]
  feats = rng.random((count, padded, dim), dtype=np.float32)
  feats *= mask[..., None]
  labels = np.zeros((count, num_classes), np.float32)
  for v in range(count):
    labels[v, rng.choice(num_classes, 1 + (rng.random() < 0.2), replace=False)] = 1.0
  index = np.arange(first_index, first_index + count, dtype=np.int32)
  return dict(features=feats, mask=mask, labels=labels, video_index=index)


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


@functools.cache
def _matmul_inputs(rows: int, dim: int):
  x = jax.random.uniform(jax.random.key(0), (rows, dim), jnp.float32)
  w = jax.random.uniform(jax.random.key(1), (dim, dim), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(x, w))
  return mm, x, w


def matmul_rate(rows: int, dim: int, repeats: int) -> float:
  """GFLOP/s of a jitted [rows, dim] x [dim, dim] float32 matmul (median of `repeats`)."""
  mm, x, w = _matmul_inputs(rows, dim)
  return 2 * rows * dim * dim / _median_time(lambda: mm(x, w), repeats) / 1e9


def cpu_name() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _summary(per_step: list, compile_s: list, programs: int, batch: int) -> dict:
  """Medians over the timed steps of the last phase in `per_step`."""
  timed = [r for r in per_step if r['timed'] and r['phase'] == per_step[-1]['phase']]

  def med(fn):
    return statistics.median(fn(r) for r in timed)

  return dict(
    phase=timed[0]['phase'], compile_s=statistics.median(compile_s), programs=programs,
    step_s=med(lambda r: r['seconds']), videos_per_s=med(lambda r: batch / r['seconds']),
    snippets_per_s=med(lambda r: r['snippets'] / r['seconds']), rate=med(lambda r: r['rate']),
    model_rate=med(lambda r: r['model_rate']), matmul=med(lambda r: r['matmul']),
    ratio=med(lambda r: r['rate'] / r['matmul']),
    mflop_per_snippet=med(lambda r: r['gflop'] * 1e3 / r['snippets']),
  )  # fmt: skip


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=5, help='timed steps per phase')
  parser.add_argument('--batch', type=int, default=10, help='videos per step')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--bucket', type=int, default=64, help='pad T up to a multiple of this')
  parser.add_argument(
    '--pad', choices=('batch', 'common'), default='batch',
    help='batch: each batch to its own bucket (as the input pipeline does; one program per '
    'bucket); common: every batch to the largest bucket (one program per phase)',
  )  # fmt: skip
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--classes', type=int, default=20)
  parser.add_argument('--max_len', type=int, default=0, help='cap T (0: none)')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(args.seed)
  pool, source = thumos_train_lengths()
  num_batches = args.steps + 1  # the first step of each phase is not timed
  lengths = [draw_lengths(rng, args.batch, pool) for _ in range(num_batches)]
  if args.max_len:
    lengths = [np.minimum(x, args.max_len) for x in lengths]
  buckets = [int(math.ceil(x.max() / args.bucket) * args.bucket) for x in lengths]
  if args.pad == 'common':
    buckets = [max(buckets)] * num_batches
  c = make_config(args.classes, args.dim)
  mesh = sharding.make_mesh(1)
  host = [
    make_batch(rng, x, t, args.dim, args.classes, i * args.batch)
    for i, (x, t) in enumerate(zip(lengths, buckets, strict=True))
  ]
  batches = [sharding.shard_batch(sharding.pad_batch(b, 1), mesh) for b in host]
  true_snippets = [int(x.sum()) for x in lengths]
  load_before = os.getloadavg()
  print(f'{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, load {load_before}')
  print(
    f'{args.batch} videos/step, D={args.dim}, C={args.classes}, lengths from {source}; '
    f'padding: {args.pad}; batch maxima {[int(x.max()) for x in lengths]} -> T {buckets}; '
    f'true snippets per step {true_snippets} '
    f'({sum(true_snippets) / (args.batch * sum(buckets)):.0%} of the padded ones)'
  )

  key_data = jax.random.key_data(jax.random.key(args.seed))
  state = sharding.replicate(
    jax.jit(lambda k: step_lib.create_train_state(c, k))(jax.random.key(args.seed)), mesh
  )
  flop_args = dict(
    d_in=args.dim, d=args.dim, classes=args.classes, label_slots=step_lib.max_labels(c),
    slots=c.memory.slots, reduction=c.model.brm_reduction,
  )  # fmt: skip
  rows, per_step = [], []
  for ready in (False, True):
    if ready:  # the memory: an init pass over the batches (eval mode), as after warm-up
      init = step_lib.make_memory_init_step(c, mesh)
      common = max(buckets)
      memory, ids = state.memory, sharding.replicate(step_lib.initial_snippet_ids(c), mesh)
      t0 = time.perf_counter()
      for b in host:
        padded = dict(b)
        extra = common - b['mask'].shape[1]
        padded['features'] = np.pad(b['features'], ((0, 0), (0, extra), (0, 0)))
        padded['mask'] = np.pad(b['mask'], ((0, 0), (0, extra)))
        batch = sharding.shard_batch(sharding.pad_batch(padded, 1), mesh)
        memory, ids = init(state.params, memory, ids, batch, key_data)
        jax.block_until_ready(memory)
      init_s = time.perf_counter() - t0
      initialized = sharding.replicate(jnp.ones((), bool), mesh)
      state = state.replace(memory=memory.replace(initialized=initialized))
      print(f'memory init pass over {num_batches * args.batch} videos at T={common}: '
            f'{init_s:.1f} s (compile included)')  # fmt: skip
    train_step = step_lib.make_train_step(c, mesh, memory_ready=ready, steps_per_epoch=20)
    programs, compile_s, xla_flops = {}, [], {}
    for i, (batch, t) in enumerate(zip(batches, buckets, strict=True)):
      if t not in programs:
        t0 = time.perf_counter()
        programs[t] = train_step.lower(state, batch, key_data).compile()
        compile_s.append(time.perf_counter() - t0)
        xla_flops[t] = (programs[t].cost_analysis() or {}).get('flops', float('nan'))
      t0 = time.perf_counter()
      state, metrics = programs[t](state, batch, key_data)
      jax.block_until_ready(metrics)
      seconds = time.perf_counter() - t0
      if not np.isfinite(float(metrics['loss'])):
        raise FloatingPointError(f'non-finite loss at step {i}')
      # Right after the step: the same T, about the same load from other processes.
      mm = matmul_rate(t, args.dim, 5)
      executed = step_flops([t] * args.batch, memory=ready, **flop_args)
      model = step_flops(lengths[i], memory=ready, attention_products=4, **flop_args)
      per_step.append(dict(
        phase='memory' if ready else 'warm-up', timed=i > 0, T=t, seconds=seconds,
        snippets=true_snippets[i], gflop=executed / 1e9, xla_gflop=xla_flops[t] / 1e9,
        rate=executed / seconds / 1e9, model_rate=model / seconds / 1e9, matmul=mm,
      ))  # fmt: skip
    rows.append(_summary(per_step, compile_s, len(programs), args.batch))

  load_after = os.getloadavg()
  print(f'load average before {load_before}, after {load_after}\n')
  print('| phase | T | step (s) | GFLOP executed (analytic / XLA) | GFLOP/s | matmul GFLOP/s |')
  print('|---|---|---|---|---|---|')
  for r in per_step:
    name = r['phase'] + ('' if r['timed'] else ' (untimed)')
    print(f"| {name} | {r['T']} | {r['seconds']:.2f} | {r['gflop']:.0f} / {r['xla_gflop']:.0f} | "
          f"{r['rate']:.1f} | {r['matmul']:.1f} |")  # fmt: skip
  print()
  header = (
    '| phase | compile (s) | step (s) | videos/s | true snippets/s | MFLOP per true snippet | '
    'GFLOP/s executed | useful GFLOP/s (true T, Eq. 5 as written) | matmul GFLOP/s, same T | '
    'executed / matmul |'
  )
  print(header)
  print('|---' * (header.count('|') - 1) + '|')
  for r in rows:
    print(
      f'| {r["phase"]} | {r["compile_s"]:.1f} ({r["programs"]} programs) | {r["step_s"]:.2f} | '
      f'{r["videos_per_s"]:.2f} | {r["snippets_per_s"]:.0f} | {r["mflop_per_snippet"]:.0f} | '
      f'{r["rate"]:.1f} | {r["model_rate"]:.1f} | {r["matmul"]:.1f} | {r["ratio"]:.0%} |'
    )
  return dict(rows=rows, per_step=per_step, lengths=lengths, buckets=buckets)


if __name__ == '__main__':
  main()
