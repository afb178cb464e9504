r"""Where a train step's time goes, op by op: an XLA:CPU profile of one-video micro-batches.

  python -m benchmarks.step_profile --lengths 64,256,768,1536 [--phase memory] [--top 25]

For each length T: one video of T snippets (D = 2048, configs/thumos14.py as a user gets it)
runs through the micro-batch program of `issf_jax/train/micro.py` (the step a user's trainer
runs on one CPU device); the step is timed (median of `--repeats` after a warm-up run), then
profiled with `jax.profiler` for two more runs. The trace's thunk events (one per fused HLO
op, on XLA's worker threads) are summed per op and mapped to the optimised HLO (dumped with
`--xla_dump_to`): for each op, its kind (ynn_fusion: a matmul done by YNNPACK; dot: XLA's own
matmul; a loop fusion; a sort; a scatter ...), its output shape and the model code it came from
(the `op_name` metadata, e.g. `jvp(ISSF.encode)/brm/salient_unit/fc1/dot_general`; `transpose(`
marks the backward pass). Printed per T: the step time and GFLOP/s (`train_step.step_flops`, the
channel MLPs on the T (1 + 1/K) rows the one-video program runs them on),
the time per model part (embedding, BRM channel units, BRM temporal attention, heads, losses,
memory, optimizer bookkeeping) and the `--top` ops. Thread-seconds: the profile sums the time
of every worker thread, so a step's thread-seconds can exceed its wall time.

Reading the trace needs TensorFlow's xplane protobuf (`tensorflow.tsl.profiler.protobuf`),
present wherever `tensorflow` is installed (this project's CPU environment).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

# Model parts, by the first pattern (of the op_name metadata) that matches.
PARTS = (
  ('embedding', r'embedding'),
  ('BRM channel units', r'brm/(non_)?salient_unit|channel_units'),
  ('BRM temporal attention', r'brm'),
  ('saliency', r'saliency|sort|top_k'),
  ('DEM read', r'enhance|read_memory|dem'),
  ('heads', r'head'),
  ('memory update', r'memory|scan_updates|merge'),
  ('losses', r'loss|objective|nce|log_softmax'),
  ('optimizer / gradient sum', r'add_any|grads|adam|apply'),
)


def part_of(op_name: str) -> str:
  for part, pattern in PARTS:
    if re.search(pattern, op_name):
      return part
  return 'other'


def parse_hlo(dump_dir: str) -> dict:
  """{op name: (kind, shape, op_name metadata)} over the optimised modules of `dump_dir`; the
  micro-batch program (`grads_body`) wins where two modules use the same op name."""
  files = sorted(glob.glob(os.path.join(dump_dir, '*after_optimizations.txt')),
                 key=lambda f: ('grads_body' in f, os.path.getsize(f)))  # fmt: skip
  ops = {}
  line_re = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[^}]*\})? (\w[\w\-]*)\(')
  for file in files:
    module = re.sub(r'^module_\d+\.|\.cpu_after_optimizations\.txt$', '', os.path.basename(file))
    for line in open(file):
      m = line_re.match(line)
      if not m:
        continue
      name, shape, opcode = m.groups()
      meta = re.search(r'op_name="([^"]+)"', line)
      kind = 'ynn_fusion' if '__ynn_fusion' in line else opcode
      if opcode == 'fusion' and 'kind=kLoop' in line:
        kind = 'loop fusion'
      elif opcode == 'fusion' and 'kind=kInput' in line:
        kind = 'reduce fusion'
      ops[name] = (kind, shape, meta.group(1) if meta else f'({module})')
  return ops


def thunk_times(trace_dir: str) -> collections.Counter:
  """Thread-seconds per HLO op name summed over the trace's XLA worker threads."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  path = sorted(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  times = collections.Counter()
  for plane in space.planes:
    if plane.name != '/host:CPU':
      continue
    meta = plane.event_metadata
    for line in plane.lines:
      if line.name == 'python':
        continue
      for event in line.events:
        name = meta[event.metadata_id].name
        if name.startswith(('ThunkExecutor', 'end:', 'ThreadpoolListener', 'Slinky')):
          continue
        times[name] += event.duration_ps / 1e12
  return times


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--lengths', default='64,256,768,1536')
  parser.add_argument('--phase', default='warmup', choices=('warmup', 'memory'))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--top', type=int, default=25)
  parser.add_argument('--override', action='append', default=[], help='section.field=value')
  args = parser.parse_args(argv)
  dump = tempfile.mkdtemp(prefix='step_profile_hlo_')
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' --xla_dump_to={dump} '
                             '--xla_dump_hlo_as_text --xla_dump_hlo_pass_re=NONE')  # fmt: skip
  import jax
  import numpy as np

  from benchmarks.machine import cpu_name
  from benchmarks.train_step import step_flops
  from configs import thumos14
  from issf_jax import sharding
  from issf_jax.model import channel_units
  from issf_jax.train import micro as micro_lib
  from issf_jax.train import step as step_lib

  config = thumos14.get_config()
  for item in args.override:
    key, value = item.split('=', 1)
    section, field = key.split('.')
    old = config[section][field]
    config[section][field] = (value == 'True') if isinstance(old, bool) else type(old)(value)
  ready = args.phase == 'memory'
  mesh = sharding.make_mesh(1)
  state = jax.jit(lambda k: step_lib.create_train_state(config, k))(jax.random.key(0))
  if ready:  # a full memory of random features, as after the initialisation pass
    rng = np.random.default_rng(0)
    mem = state.memory
    state = state.replace(memory=mem.replace(
      features=rng.normal(size=mem.features.shape).astype(np.float32),
      scores=rng.random(mem.scores.shape).astype(np.float32),
      filled=np.ones(mem.filled.shape, bool), initialized=np.ones((), bool)))  # fmt: skip
  state = sharding.replicate(state, mesh)
  key = jax.random.key_data(jax.random.key(1))
  step = micro_lib.make_micro_train_step(
    config, mesh, memory_ready=ready, steps_per_epoch=20, sync=True
  )
  flop_args = dict(d_in=2048, d=2048, classes=20, label_slots=20, slots=9, reduction=4)
  print(f'{cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; '
        f'jax {jax.__version__}; phase {args.phase}')  # fmt: skip
  for length in (int(x) for x in args.lengths.split(',')):
    rng = np.random.default_rng(length)
    labels = np.zeros((1, 20), np.float32)
    labels[0, length % 20] = 1
    batch = sharding.shard_batch(dict(
      features=rng.random((1, length, 2048), dtype=np.float32), mask=np.ones((1, length), bool),
      labels=labels, valid=np.ones(1, np.float32), video_index=np.zeros(1, np.int32),
      position=np.zeros(1, np.int32)), mesh)  # fmt: skip
    times, compiled = [], len(step.compile_seconds)
    for i in range(args.repeats + 1):
      t0 = time.perf_counter()
      state, metrics = step(state, [batch], key)
      jax.block_until_ready(metrics)
      if i:
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    flops = step_flops([length], memory=ready, channel_unit_rows=1 + 1 / channel_units.WINDOWS,
                       **flop_args)  # fmt: skip
    trace = tempfile.mkdtemp(prefix='step_profile_trace_')
    jax.profiler.start_trace(trace)
    for _ in range(2):
      state, metrics = step(state, [batch], key)
      jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    per_op = {k: v / 2 for k, v in thunk_times(trace).items()}
    hlo = parse_hlo(dump)
    total = sum(per_op.values())
    rate = flops / seconds / 1e9
    compile_s = sum(step.compile_seconds[compiled:])
    print(f'\nT = {length}: step {seconds * 1e3:.1f} ms wall, {flops / 1e9:.2f} GFLOP, '
          f'{rate:.1f} GFLOP/s; {total * 1e3:.1f} thread-ms in XLA ops; '
          f'compile {compile_s:.1f} s')  # fmt: skip
    parts = collections.Counter()
    for op, secs in per_op.items():
      parts[part_of(hlo.get(op, ('', '', op))[2] or op)] += secs
    for part, secs in parts.most_common():
      print(f'  {part:28s} {secs * 1e3:9.1f} thread-ms  {secs / total:6.1%}')
    print(f'  top {args.top} ops:')
    for op, secs in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
      kind, shape, meta = hlo.get(op, ('?', '?', ''))
      meta = meta.replace('jit(grads_body)/', '')
      print(f'  {secs * 1e3:8.1f} ms {secs / total:6.1%}  {kind:13s} {shape:22s} {op:26s} {meta}')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
