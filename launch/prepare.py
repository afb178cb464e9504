"""Converts released I3D features (the W-TALC or the ACM-Net format) into the shard folder that
issf-train and issf-eval read: validated TFRecord shards per subset, the ground truth in the
ActivityNet format, and a manifest with the checksums of every file. A video that cannot be used
(wrong width, NaN/Inf, no snippets, an unknown label) stops the conversion with one line naming
the video and the file, and exit status 2.

  issf-prepare --format wtalc --src DIR --out SHARDS_DIR
  issf-prepare --format acmnet --src DIR --out SHARDS_DIR --classes activitynet13

Also runs as `python -m launch.prepare ...`. The conversion itself is
`data_pipelines.prepare.convert` (its docstring describes the output and its crash safety).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from issf_common import errors, outputs
from launch import cli

PROG = 'issf-prepare'


def build_parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n', 1)[0])
  p.add_argument(
    '--format', required=True, choices=('wtalc', 'acmnet'),
    help='wtalc: <Name>-I3D-JOINTFeatures.npy with <Name>-Annotations/ (THUMOS14, ActivityNet); '
    'acmnet: train/*.npy, test/*.npy, gt.json, split_{train,test}.txt (ActivityNet)',
  )  # fmt: skip
  p.add_argument('--src', required=True, help='released dataset folder')
  p.add_argument('--out', required=True, help='shard directory to write')
  p.add_argument('--name', default=None, help='W-TALC <Name> if src holds several')
  p.add_argument('--feature_dim', type=int, default=None, help='expected D (default: inferred)')
  p.add_argument(
    '--classes', default=None, help='thumos14 | activitynet13 | file with one class per line'
  )
  p.add_argument(
    '--videos_per_shard', type=int, default=64,
    help='videos per TFRecord shard when --num_shards is not given (64 THUMOS14 videos: ~170 MB)',
  )  # fmt: skip
  p.add_argument('--num_shards', type=int, default=None, help='shards per subset')
  p.add_argument('--length_tolerance', type=int, default=2, help='snippets (absolute)')
  p.add_argument('--length_rel_tolerance', type=float, default=0.01, help='fraction of T')
  return p


def check_args(args: argparse.Namespace) -> None:
  """Raises InputError on a count or tolerance out of range (before anything is read)."""
  for name, low in (('videos_per_shard', 1), ('num_shards', 1), ('feature_dim', 1),
                    ('length_tolerance', 0), ('length_rel_tolerance', 0)):  # fmt: skip
    value = getattr(args, name)
    if value is not None and not value >= low:  # `not >=`: NaN is out of range too
      raise errors.InputError(f'--{name} {value}: must be >= {low}')


def main(args: argparse.Namespace) -> int:
  """Converts as `args` say; prints one summary line. Raises InputError on bad input."""
  from absl import logging

  from data_pipelines import prepare, source

  check_args(args)
  outputs.check_writable(args.out, '--out')
  logging.set_verbosity(logging.INFO)
  checks = source.FeatureChecks(
    args.feature_dim, args.length_tolerance, args.length_rel_tolerance
  )  # fmt: skip
  try:
    manifest = prepare.convert(
      args.format, args.src, args.out, name=args.name, checks=checks,
      classes=prepare.resolve_classes(args.classes), videos_per_shard=args.videos_per_shard,
      num_shards=args.num_shards,
    )  # fmt: skip
  except FileNotFoundError as err:  # a file the released folder should hold
    if isinstance(err, errors.InputError):
      raise
    raise errors.MissingFileError(f'{err.filename or args.src}: {err.strerror or err}') from None
  print(
    f'{args.out}: {manifest["counts"]}, D={manifest["feature_dim"]}, '
    f'{len(manifest["missing_videos"])} missing, '
    f'{len(manifest["length_mismatches"])} length warnings'
  )
  return 0


def run(argv: Sequence[str] | None = None) -> int:
  """Console-script entry point (`issf-prepare`); returns the exit status (2: bad input)."""
  return cli.run_argparse(main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(run())
