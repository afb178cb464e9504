"""Train-step throughput on THUMOS-shaped data, both batching modes, against a same-T matmul.

  python -m benchmarks.train_step [--steps 20] [--memory_steps 3] [--json OUT]

Data: THUMOS14's 200 training (`validation`) videos, T = floor(duration * 25/16) snippets
(`--annotations DIR`, else the packaged `data_pipelines/annotations/thumos14`; a lognormal fit
if none is found), D = 2048, C = 20, random features (the same for a video
in both modes). Batches of `--batch` videos in the input pipeline's epoch order
(`sampling.epoch_order`). Modes (`config.data.batching`):
  exact: each global batch padded to its longest video rounded up to `--bucket` (one program per
         bucket), one program per step (`issf_jax/train/step.py`);
  micro: the same batches as micro-batches of `--micro` videos, each padded to its own
         geometric bucket (x `--growth`), gradients summed into one optimizer step
         (`issf_jax/train/micro.py`).

Per mode: the first `--steps` steps of epoch 0 (warm-up phase; 20 = one whole THUMOS epoch) are
run end to end, compile included and timed apart; then, after a memory initialisation pass over
10 videos, `--memory_steps` steps of epoch 1 in the memory phase. Reported per mode and phase:
executed FLOPs (analytic `step_flops` of the padded shapes) per true snippet against the
true-length FLOPs, true snippets/s, the step's GFLOP/s against a jitted [T, 2048] x [2048, 2048]
matmul of the same T timed right after each step (for micro steps, one matmul per micro-batch
T, combined as the time they would take at those rates), the projected wall time of one epoch
(the mean executed FLOPs of epochs 0-9 at the measured rate) and of the 180-epoch recipe
(100 warm-up + 80 memory epochs + the compile time of every program the recipe meets; memory
initialisation and evaluation not included). One device (XLA uses every core).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks.machine import cpu_name
from configs import common
from data_pipelines import sampling
from issf_jax import sharding
from issf_jax.model import channel_units
from issf_jax.train import micro as micro_lib
from issf_jax.train import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
ANNOTATION_DIRS = (REPO / 'data_pipelines' / 'annotations' / 'thumos14',)
# log(T) of the 200 THUMOS14 training videos: mean 5.384, std 0.920 (T in [13, 2202]).
LOGNORMAL = (5.384, 0.920)
SNIPPETS_PER_SECOND = 25.0 / 16.0
WARMUP_EPOCHS, RECIPE_EPOCHS = 100, 180
# RSKP's PyTorch code, one unpadded video at a time, on this 2-core CPU (docs/results.md, Train
# step; measured earlier, not by this script): 1,600 to 2,100 snippets/s.
RSKP_SNIPPETS_PER_S = (1600.0, 2100.0)


def thumos_train_lengths(annotations: str | None = None) -> tuple[np.ndarray, str]:
  """T of THUMOS14's 200 training videos, and where they came from."""
  dirs = [pathlib.Path(annotations)] if annotations else list(ANNOTATION_DIRS)
  for d in dirs:
    try:
      duration = np.load(d / 'duration.npy')[:, 0]
      subset = np.load(d / 'subset.npy')
    except OSError:
      continue
    train = subset == b'validation'
    return np.floor(duration[train] * SNIPPETS_PER_SECOND).astype(np.int64), f'THUMOS14 train ({d})'
  if annotations:
    raise SystemExit(f'{annotations}: no duration.npy / subset.npy')
  rng = np.random.default_rng(0)
  return np.clip(np.exp(rng.normal(*LOGNORMAL, 200)), 13, 2614).astype(np.int64), 'lognormal fit'


def step_flops(
  lengths, *, d_in: int, d: int, classes: int, label_slots: int, slots: int, reduction: int,
  memory: bool, attention_products: int = 2, channel_unit_rows: float = 2.0,
) -> float:  # fmt: skip
  """Analytic FLOPs of one train step over videos of `lengths`: every layer costs 3 x its forward
  (forward, input gradient, weight gradient) except the embedding, 2 x (no gradient to X).

  Per video of T snippets (multiply-add = 2 FLOPs; element-wise work is not counted):
    embedding                2 T D_in D
    BRM channel MLPs         (2 T D D/r + 2 T D/r D) per unit and row: `channel_unit_rows` T rows,
                             2 T when both units run on every row (several videos a program),
                             T (1 + 1/K) with one video (`issf_jax/model/channel_units.py`)
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
    f = channel_unit_rows * (4 * t * d * d / reduction)
    f += attention_products * (2 * t * t * d)
    head = 4 * t * d * (classes + 1) + 4 * t * d
    f += head * (3 if memory else 2)
    if memory:
      f += 4 * t * label_slots * slots * d
    total += 3 * f
  return total


def unit_rows(videos: int) -> float:
  """`step_flops`'s channel_unit_rows of a program over `videos` videos (the equations need 1)."""
  return 1 + 1 / channel_units.WINDOWS if videos == 1 else 2.0


def make_config(num_classes: int, dim: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = common.model_config(num_classes=num_classes, feature_dim=dim)
  c.memory = common.memory_config()
  c.loss = common.loss_config()
  c.optim = common.optim_config(5e-5)
  c.train = ml_collections.ConfigDict(dict(num_epochs=180, memory_init_epoch=100))
  return c


def plan(mode: str, videos: np.ndarray, lengths: np.ndarray, args) -> list[tuple[int, np.ndarray]]:
  """One step's programs: [(T, positions in the batch)], as `input_pipeline.plan_steps`."""
  used = lengths[videos]
  if mode == 'exact':
    return [(sampling.bucket_length(used.max(), args.bucket), np.arange(len(videos)))]
  order = np.arange(len(videos)) if args.micro == 1 else np.argsort(used, kind='stable')
  return [
    (sampling.geometric_bucket_length(used[g].max(), args.growth), g)
    for g in np.split(order, len(videos) // args.micro)
  ]


def video_features(video: int, length: int, dim: int) -> np.ndarray:
  return np.random.default_rng([7, video]).random((length, dim), dtype=np.float32)


def make_batch(videos, positions, t, lengths, dim, labels) -> dict:
  feats = np.zeros((len(positions), t, dim), np.float32)
  for r, p in enumerate(positions):
    feats[r, : lengths[videos[p]]] = video_features(int(videos[p]), int(lengths[videos[p]]), dim)
  mask = np.arange(t)[None] < lengths[videos[positions]][:, None]
  return dict(
    features=feats, mask=mask, labels=labels[videos[positions]],
    video_index=videos[positions].astype(np.int32), position=positions.astype(np.int32),
  )  # fmt: skip


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


_MATMULS: dict = {}


def matmul_rate(rows: int, dim: int, repeats: int) -> float:
  """GFLOP/s of a jitted [rows, dim] x [dim, dim] float32 matmul (median of `repeats`)."""
  if (rows, dim) not in _MATMULS:
    x = jax.random.uniform(jax.random.key(0), (rows, dim), jnp.float32)
    w = jax.random.uniform(jax.random.key(1), (dim, dim), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(x, w))
    _MATMULS[rows, dim] = (mm, x, w)
  mm, x, w = _MATMULS[rows, dim]
  return 2 * rows * dim * dim / _median_time(lambda: mm(x, w), repeats) / 1e9


class Runner:
  """One mode's compiled programs and state; runs steps and records their timings."""

  def __init__(self, mode, c, mesh, args, lengths, labels):
    self.mode, self.c, self.mesh, self.args = mode, c, mesh, args
    self.lengths, self.labels = lengths, labels
    self.key = jax.random.key_data(jax.random.key(args.seed))
    create = jax.jit(lambda k: step_lib.create_train_state(c, k))
    self.state = sharding.replicate(create(jax.random.key(args.seed)), mesh)
    self.steps, self.compile_s, self.records = {}, [], []

  def step_fn(self, ready):
    if ready not in self.steps:
      if self.mode == 'exact':
        self.steps[ready] = (step_lib.make_train_step(
          self.c, self.mesh, memory_ready=ready, steps_per_epoch=20), {})  # fmt: skip
      else:
        self.steps[ready] = (micro_lib.make_micro_train_step(
          self.c, self.mesh, memory_ready=ready, steps_per_epoch=20, sync=True), None)  # fmt: skip
    return self.steps[ready]

  def run_step(self, videos, ready, flop_args, timed_phase):
    groups = plan(self.mode, videos, self.lengths, self.args)
    dim = self.args.dim
    batches = [
      sharding.shard_batch(sharding.pad_batch(
        make_batch(videos, pos, t, self.lengths, dim, self.labels), 1), self.mesh)
      for t, pos in groups
    ]  # fmt: skip
    fn, programs = self.step_fn(ready)
    compile_s = 0.0
    if self.mode == 'exact':
      t = groups[0][0]
      if t not in programs:
        t0 = time.perf_counter()
        programs[t] = fn.lower(self.state, batches[0], self.key).compile()
        compile_s = time.perf_counter() - t0
        self.compile_s.append(compile_s)
      t0 = time.perf_counter()
      self.state, metrics = programs[t](self.state, batches[0], self.key)
      jax.block_until_ready(metrics)
      seconds = time.perf_counter() - t0
    else:
      before = len(fn.compile_seconds)
      t0 = time.perf_counter()
      self.state, metrics = fn(self.state, batches, self.key)
      jax.block_until_ready(metrics)
      new = fn.compile_seconds[before:]
      compile_s = sum(new)
      self.compile_s.extend(new)
      seconds = time.perf_counter() - t0 - compile_s
    if not np.isfinite(float(metrics['loss'])):
      raise FloatingPointError(f'{self.mode}: non-finite loss')
    # Right after the step, about the same load: the matmul-equivalent time of each program.
    executed = mm_time = 0.0
    for t, pos in groups:
      rows = unit_rows(len(pos))
      f = step_flops([t] * len(pos), memory=ready, channel_unit_rows=rows, **flop_args)
      executed += f
      mm_time += f / (matmul_rate(t, dim, 5) * 1e9)
    true = step_flops(self.lengths[videos], memory=ready, channel_unit_rows=1.0, **flop_args)
    rec = dict(
      phase=timed_phase, T=[t for t, _ in groups], seconds=seconds, compile_s=compile_s,
      snippets=int(self.lengths[videos].sum()), executed=executed, true=true, mm_time=mm_time,
    )  # fmt: skip
    self.records.append(rec)
    return rec

  def init_memory(self, videos):
    init = step_lib.make_memory_init_step(self.c, self.mesh)
    t = sampling.bucket_length(self.lengths[videos].max(), self.args.bucket)
    batch = make_batch(videos, np.arange(len(videos)), t, self.lengths, self.args.dim, self.labels)
    batch.pop('position')
    memory = self.state.memory
    ids = sharding.replicate(step_lib.initial_snippet_ids(self.c), self.mesh)
    memory, ids = init(
      self.state.params,
      memory,
      ids,
      sharding.shard_batch(sharding.pad_batch(batch, 1), self.mesh),
      self.key,
    )
    initialized = sharding.replicate(jnp.ones((), bool), self.mesh)
    self.state = self.state.replace(memory=memory.replace(initialized=initialized))


def summarize(records) -> dict:
  secs = sum(r['seconds'] for r in records)
  executed = sum(r['executed'] for r in records)
  snippets = sum(r['snippets'] for r in records)
  return dict(
    steps=len(records), step_s=secs / len(records),
    executed_flops_per_true_snippet=executed / snippets,
    true_flops_per_true_snippet=sum(r['true'] for r in records) / snippets,
    true_snippets_per_s=snippets / secs, step_gflops=executed / secs / 1e9,
    matmul_gflops=executed / sum(r['mm_time'] for r in records) / 1e9,
    fraction_of_matmul=sum(r['mm_time'] for r in records) / secs,
  )  # fmt: skip


def epoch_plan_stats(mode, lengths, args, flop_args, epochs) -> dict:
  """Analytic executed / true FLOPs per epoch (mean of `epochs`) and the programs met."""
  n = len(lengths)
  executed, true, shapes = [], [], {False: set(), True: set()}
  for e in range(RECIPE_EPOCHS):
    order = sampling.epoch_order(args.seed, e, n)
    ex = tr = 0.0
    for b in range(n // args.batch):
      videos = order[b * args.batch : (b + 1) * args.batch]
      for t, pos in plan(mode, videos, lengths, args):
        shapes[e >= WARMUP_EPOCHS].add((len(pos), t))
        if e < epochs:
          ex += step_flops([t] * len(pos), memory=False, channel_unit_rows=unit_rows(len(pos)),
                           **flop_args)  # fmt: skip
      if e < epochs:
        tr += step_flops(lengths[videos], memory=False, channel_unit_rows=1.0, **flop_args)
    if e < epochs:
      executed.append(ex)
      true.append(tr)
  return dict(
    executed_tflop=np.mean(executed) / 1e12, true_tflop=np.mean(true) / 1e12,
    executed_over_true=float(np.mean(executed) / np.mean(true)),
    programs={'warm-up': len(shapes[False]), 'memory': len(shapes[True])},
  )  # fmt: skip


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=20, help='epoch-0 steps timed (20: a whole '
                      'THUMOS epoch; fewer: a measured fraction, extrapolated)')  # fmt: skip
  parser.add_argument('--memory_steps', type=int, default=3, help='memory-phase steps timed')
  parser.add_argument('--modes', default='exact,micro')
  parser.add_argument('--batch', type=int, default=10, help='videos per optimizer step')
  parser.add_argument('--micro', type=int, default=1, help='videos per micro-batch (micro)')
  parser.add_argument('--growth', type=float, default=1.2, help='geometric buckets (micro)')
  parser.add_argument('--bucket', type=int, default=64, help='pad T to a multiple (exact)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--classes', type=int, default=20)
  parser.add_argument('--annotations', default=None, help='a W-TALC THUMOS14 annotation folder')
  parser.add_argument('--json', default=None, help='write the results here')
  args = parser.parse_args(argv)
  modes = args.modes.split(',')

  lengths, source = thumos_train_lengths(args.annotations)
  n = len(lengths)
  rng = np.random.default_rng(args.seed)
  labels = np.zeros((n, args.classes), np.float32)
  for v in range(n):
    labels[v, rng.choice(args.classes, 1 + (rng.random() < 0.2), replace=False)] = 1.0
  c = make_config(args.classes, args.dim)
  mesh = sharding.make_mesh(1)
  flop_args = dict(
    d_in=args.dim, d=args.dim, classes=args.classes, label_slots=step_lib.max_labels(c),
    slots=c.memory.slots, reduction=c.model.brm_reduction,
  )  # fmt: skip
  load_before = os.getloadavg()
  print(f'{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, load {load_before}')
  print(f'{n} videos from {source}, {int(lengths.sum())} snippets; batch {args.batch}, '
        f'D={args.dim}, C={args.classes}; exact: bucket {args.bucket}; micro: {args.micro} '
        f'video(s) per micro-batch, geometric buckets x{args.growth}')  # fmt: skip
  order0, order1 = (sampling.epoch_order(args.seed, e, n) for e in (0, 1))
  spe = n // args.batch
  out = {'machine': f'{cpu_name()}, {os.cpu_count()} cores', 'jax': jax.__version__,
         'lengths': source, 'args': vars(args), 'modes': {}}  # fmt: skip
  for mode in modes:
    runner = Runner(mode, c, mesh, args, lengths, labels)
    t_epoch = time.perf_counter()
    for b in range(min(args.steps, spe)):
      r = runner.run_step(order0[b * args.batch : (b + 1) * args.batch], False, flop_args,
                          'warm-up')  # fmt: skip
      print(f'  {mode} warm-up step {b}: T {r["T"]}  {r["seconds"]:.2f} s  '
            f'(+ compile {r["compile_s"]:.1f} s)', flush=True)  # fmt: skip
    epoch_wall = time.perf_counter() - t_epoch
    runner.init_memory(order1[: args.batch])
    for b in range(args.memory_steps):
      r = runner.run_step(order1[b * args.batch : (b + 1) * args.batch], True, flop_args,
                          'memory')  # fmt: skip
      print(f'  {mode} memory step {b}: T {r["T"]}  {r["seconds"]:.2f} s  '
            f'(+ compile {r["compile_s"]:.1f} s)', flush=True)  # fmt: skip
    warm = [r for r in runner.records if r['phase'] == 'warm-up']
    phases = {}
    for p in ('warm-up', 'memory'):
      if any(r['phase'] == p for r in runner.records):
        phases[p] = summarize([r for r in runner.records if r['phase'] == p])
    stats = epoch_plan_stats(mode, lengths, args, flop_args, epochs=10)
    compile_med = statistics.median(runner.compile_s) if runner.compile_s else 0.0
    epoch_s = {p: stats['executed_tflop'] * 1e12 / (s['step_gflops'] * 1e9)
               for p, s in phases.items()}  # fmt: skip
    memory_epoch_s = epoch_s.get('memory', epoch_s['warm-up'])
    recipe_s = WARMUP_EPOCHS * epoch_s['warm-up'] + (RECIPE_EPOCHS - WARMUP_EPOCHS) * memory_epoch_s
    recipe_s += compile_med * sum(stats['programs'].values())
    measured = len(warm)
    run_s = sum(r['seconds'] for r in warm)
    e2e = dict(
      steps_timed=measured, of_steps=spe, wall_s=epoch_wall,
      compile_s=sum(r['compile_s'] for r in warm), run_s=run_s,
      epoch_run_s_extrapolated=run_s * spe / measured,
    )  # fmt: skip
    result = dict(phases['warm-up'])
    result.update(
      phases=phases, epoch_analytic=stats, compile_s_median=compile_med,
      epoch_s_projected=epoch_s, recipe_h_projected=recipe_s / 3600, epoch_end_to_end=e2e,
      executed_over_true=result['executed_flops_per_true_snippet']
      / result['true_flops_per_true_snippet'],
    )  # fmt: skip
    out['modes'][mode] = result
  out['rskp_epoch_s'] = [float(lengths.sum()) / r for r in RSKP_SNIPPETS_PER_S[::-1]]
  out['load_before'], out['load_after'] = load_before, os.getloadavg()

  print(f'\nload average before {load_before}, after {out["load_after"]}\n')
  header = ('| mode | phase | steps | step (s) | executed MFLOP / true snippet | true MFLOP / true '
            'snippet | executed / true | true snippets/s | step GFLOP/s | matmul GFLOP/s, same T '
            '| step / matmul |')  # fmt: skip
  print(header)
  print('|---' * (header.count('|') - 1) + '|')
  for mode, res in out['modes'].items():
    for phase, s in res['phases'].items():
      print(f"| {mode} | {phase} | {s['steps']} | {s['step_s']:.2f} | "
            f"{s['executed_flops_per_true_snippet'] / 1e6:.0f} | "
            f"{s['true_flops_per_true_snippet'] / 1e6:.0f} | "
            f"{s['executed_flops_per_true_snippet'] / s['true_flops_per_true_snippet']:.2f} | "
            f"{s['true_snippets_per_s']:.0f} | {s['step_gflops']:.1f} | {s['matmul_gflops']:.1f} | "
            f"{s['fraction_of_matmul']:.0%} |")  # fmt: skip
  print()
  header = ('| mode | epoch TFLOP executed / true (epochs 0-9) | programs (warm-up + memory) | '
            'compile s (median) | epoch 0 end to end: steps timed, wall s (compile s) | '
            'epoch s, extrapolated run | projected epoch s (warm-up / memory) | projected '
            '180-epoch recipe (h) |')  # fmt: skip
  print(header)
  print('|---' * (header.count('|') - 1) + '|')
  for mode, res in out['modes'].items():
    st, e2e, ep = res['epoch_analytic'], res['epoch_end_to_end'], res['epoch_s_projected']
    print(f"| {mode} | {st['executed_tflop']:.2f} / {st['true_tflop']:.2f} "
          f"({st['executed_over_true']:.2f}) | {st['programs']['warm-up']} + "
          f"{st['programs']['memory']} | {res['compile_s_median']:.1f} | {e2e['steps_timed']}/"
          f"{e2e['of_steps']}, {e2e['wall_s']:.0f} ({e2e['compile_s']:.0f}) | "
          f"{e2e['epoch_run_s_extrapolated']:.0f} | "
          f"{' / '.join(f'{v:.0f}' for v in ep.values())} | "
          f"{res['recipe_h_projected']:.1f} |")  # fmt: skip
  lo, hi = out['rskp_epoch_s']
  print(f'\nRSKP (PyTorch, 200 videos one at a time, {RSKP_SNIPPETS_PER_S[0]:.0f}-'
        f'{RSKP_SNIPPETS_PER_S[1]:.0f} snippets/s measured earlier on this CPU): epoch '
        f'{lo:.0f}-{hi:.0f} s, 180 epochs {lo * 180 / 3600:.1f}-'
        f'{hi * 180 / 3600:.1f} h')  # fmt: skip
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=2, default=float)
  return out


if __name__ == '__main__':
  main()
