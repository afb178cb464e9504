"""Input pipeline throughput on THUMOS-shaped shards (synthetic, full-scale lengths).

  python -m benchmarks.input_pipeline [--num_train 100 --num_test 50 --feature_dim 2048]

Generates the synthetic benchmark at the `full` scale (real THUMOS14 length distribution, D = 2048)
with fewer videos so that it runs in a couple of minutes, converts it to shards, and times:
- train / thumos: full-length videos padded to 64-snippet buckets (the RSKP setting);
- train / activitynet: T_s = 75 random-bin sampling;
- eval / thumos: one pass over the test subset;
- raw reads: positioned reads of the serialized records, no parsing (the I/O ceiling).
Prints videos/s, true snippets/s (mask True) and padded snippets/s (what the model computes on).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from data_pipelines import input_pipeline, prepare, shards, synthetic
from data_pipelines import manifest as manifest_lib


def _time(batches, num: int, warmup: int = 2) -> tuple[float, int, int, int]:
  """(seconds, videos, true snippets, padded snippets) over `num` batches after a warm-up."""
  for _ in range(warmup):
    next(batches)
  videos = true = padded = 0
  start = time.perf_counter()
  for _ in range(num):
    b = next(batches)
    valid = b.get('valid', np.ones(len(b['length']), bool))
    videos += int(valid.sum())
    true += int(b['length'].sum())
    padded += int(b['mask'].size)
  return time.perf_counter() - start, videos, true, padded


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', default=None, help='default: a temporary directory')
  p.add_argument('--num_train', type=int, default=100)
  p.add_argument('--num_test', type=int, default=50)
  p.add_argument('--feature_dim', type=int, default=2048)
  p.add_argument('--batch_size', type=int, default=10)
  p.add_argument('--batches', type=int, default=30)
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  work = args.workdir or tempfile.mkdtemp(prefix='issf_input_bench_')
  src, out = os.path.join(work, 'src'), os.path.join(work, 'shards')

  t0 = time.perf_counter()
  synthetic.generate(
    src,
    scale='full',
    seed=0,
    feature_dim=args.feature_dim,
    num_train=args.num_train,
    num_test=args.num_test,
  )
  t1 = time.perf_counter()
  m = prepare.convert('wtalc', src, out)
  t2 = time.perf_counter()
  lengths = np.array([v['num_snippets'] for v in m['videos']['train']])
  size = sum(os.path.getsize(os.path.join(out, s['file'])) for s in m['shards']['train'])
  print(
    f'data: {m["counts"]} videos, D={m["feature_dim"]}, train T median {np.median(lengths):.0f} '
    f'max {lengths.max()}, train shards {size / 2**20:.0f} MiB; generate {t1 - t0:.1f} s, '
    f'convert {t2 - t1:.1f} s; {os.cpu_count()} CPUs'
  )

  rows = []
  for name, kwargs in (
    ('train / thumos (bucket 64)', dict(mode='thumos', bucket_size=64)),
    ('train / activitynet (T_s 75)', dict(mode='activitynet', t_s=75)),
  ):
    options = input_pipeline.BatchingOptions(global_batch_size=args.batch_size, seed=0, **kwargs)
    it = input_pipeline.create_train_iterator(out, options, host=input_pipeline.Host())
    rows.append((name, *_time(it, args.batches)))
  options = input_pipeline.EvalOptions(args.batch_size, 'thumos')
  ev = input_pipeline.create_eval_iterator(out, options, host=input_pipeline.Host())
  n_eval = -(-m['counts']['test'] // args.batch_size)
  rows.append(('eval / thumos (bucket 64)', *_time(ev, n_eval - 1, warmup=1)))

  index = shards.RecordIndex(manifest_lib.shard_paths(out, m, 'train'))
  start = time.perf_counter()
  for i in range(len(index)):
    shards.decode_numpy(index.read(i))
  total = int(lengths.sum())
  rows.append(('raw reads + decode (numpy)', time.perf_counter() - start, len(index), total, total))

  print(f'{"pipeline":30s} {"videos/s":>9s} {"snippets/s":>11s} {"padded/s":>11s} {"MiB/s":>8s}')
  for name, secs, videos, true, padded in rows:
    mib = padded * args.feature_dim * 4 / 2**20 / secs
    print(f'{name:30s} {videos / secs:9.1f} {true / secs:11.0f} {padded / secs:11.0f} {mib:8.0f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
