r"""Writes the synthetic THUMOS14-shaped (or ActivityNet-shaped) benchmark in a released format
(W-TALC or ACM-Net), for `issf-prepare --src`.

  python -m launch.synthetic --out DIR --scale tiny|small|full --seed 0
  python -m launch.synthetic --out DIR --real_annotations thumos14 --feature_dim 256
  python -m launch.synthetic --out DIR --dataset activitynet13 --scale small \
      --format acmnet|wtalc

The generator and its scales are described in `data_pipelines/synthetic.py`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from issf_common import errors, outputs
from launch import cli

PROG = 'python -m launch.synthetic'


def build_parser() -> cli.ArgumentParser:
  from data_pipelines import synthetic

  p = cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n', 1)[0])
  p.add_argument('--out', required=True, help='folder to write')
  p.add_argument('--scale', default='small', choices=sorted(synthetic.SCALES))
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--dataset', default='thumos14', choices=('thumos14', 'activitynet13'))
  p.add_argument('--name', default=None, help='W-TALC <Name> (Synthetic / ActivityNet1.3)')
  p.add_argument('--layout', default='wtalc', choices=('wtalc', 'rskp'))
  p.add_argument('--format', dest='out_format', default='wtalc', choices=('wtalc', 'acmnet'))
  p.add_argument('--feature_dim', type=int, default=None)
  p.add_argument('--num_train', type=int, default=None)
  p.add_argument('--num_test', type=int, default=None)
  p.add_argument(
    '--real_annotations', default=None, help='W-TALC annotation folder, or thumos14 (packaged)'
  )
  p.add_argument('--max_videos', type=int, default=None, help='per subset, real mode')
  return p


def main(args: argparse.Namespace) -> int:
  from data_pipelines import synthetic

  for name, low in (('feature_dim', 1), ('num_train', 1), ('num_test', 1), ('max_videos', 1)):
    value = getattr(args, name)
    if value is not None and value < low:
      raise errors.InputError(f'--{name} {value}: must be >= {low}')
  if args.seed < 0:
    raise errors.InputError(f'--seed {args.seed}: must be >= 0')
  outputs.check_writable(args.out, '--out')
  out = synthetic.generate(args.out, **{k: v for k, v in vars(args).items() if k != 'out'})
  print(f'wrote {out}')
  return 0


def run(argv: Sequence[str] | None = None) -> int:
  return cli.run_argparse(main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(run())
