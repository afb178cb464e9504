"""Scores an ActivityNet-format predictions file against an ActivityNet-format ground truth, the
way the official ActivityNet evaluator does (detection mAP at each tIoU, in seconds), prints the
results table in percent and writes the result as JSON (fractions). Predictions on videos that
are not in the ground-truth subset count as false positives, as officially, with a warning that
gives their number.

  issf-eval score --predictions PRED.json --ground_truth GT.json --subset Test \
    --protocol official --tiou 0.1:0.7:0.1 --output_json OUT.json

Also runs standalone: `python -m launch.score ...`. OUT.json holds {"protocol", "subset",
"tiou_thresholds", "mAP", "average_mAP", "per_class_ap", "num_videos", "num_instances", ...}.
Bad input (a missing or malformed file, a segment with start > end or a negative time, a label
outside the ground truth's classes, a bad --tiou) prints one error line naming the file and the
video, and exits with status 2. Only the `official` protocol can score a file: the `rskp`
protocol needs the model's localisation maps, so it runs on a checkpoint (`issf-eval --workdir`).
"""

import argparse
import functools
import json
import sys
from decimal import Decimal, InvalidOperation

from issf_common import errors, outputs, paths
from issf_jax import evaluation
from issf_jax.evaluation import ground_truth as gt_lib
from issf_jax.evaluation import prediction_file
from launch import cli

InputError = errors.InputError


def parse_tiou(text: str) -> list[float]:
  """'0.1:0.7:0.1' (stop included) or '0.3,0.5,0.7' -> [0.1, ..., 0.7] as exact decimals.

  The range is computed in Decimal, so 0.3 is the float 0.3 and not 0.30000000000000004.
  """
  try:
    if ':' in text:
      parts = [Decimal(p) for p in text.split(':')]
      if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
        raise InputError(
          f'--tiou {text!r}: expected start:stop:step with step > 0 and stop >= start'
        )
      start, stop, step = parts
      count = int((stop - start) / step) + 1
      values = [float(start + i * step) for i in range(count)]
    else:
      values = [float(Decimal(p)) for p in text.split(',') if p.strip()]
  except InvalidOperation:
    raise InputError(f'--tiou {text!r}: not a number range or list') from None
  if not values or any(not 0 < v <= 1 for v in values):
    raise InputError(f'--tiou {text!r}: thresholds must lie in (0, 1]')
  return values


def load_json(path: str, what: str, loader=None):
  """Reads a JSON file (with `loader(path)` if given), every failure a one-line InputError."""
  try:
    if loader is not None:
      return loader(path)
    with paths.open_file(path) as f:  # local or a URL (issf_common/paths.py)
      return json.load(f)
  except FileNotFoundError:
    raise InputError(f'{what} file {path}: not found') from None
  except json.JSONDecodeError as err:
    raise InputError(f'{what} file {path}: invalid JSON ({err})') from None
  except gt_lib.FormatError as err:
    raise InputError(f'{what} file {path}: {err}') from None
  except (OSError, UnicodeDecodeError) as err:
    raise InputError(f'{what} file {path}: cannot be read ({err})') from None


def build_parser() -> argparse.ArgumentParser:
  p = cli.ArgumentParser(prog='issf-eval score', description=__doc__.split('\n\n', 1)[0])
  p.add_argument('--predictions', required=True, help='predictions JSON ({"results": ...})')
  p.add_argument('--ground_truth', required=True, help='ground-truth JSON ({"database": ...})')
  p.add_argument('--subset', required=True, help='GT subset, e.g. Test, test, validation')
  p.add_argument(
    '--protocol', default='official', help='official (the only one that scores a file) | rskp'
  )
  p.add_argument('--tiou', default='0.5:0.95:0.05', help='start:stop:step (inclusive) or a,b,c')
  p.add_argument('--output_json', default=None, help='where to write the result (fractions)')
  return p


def score(args: argparse.Namespace) -> dict:
  """Runs the evaluation for parsed arguments; raises InputError on bad input."""
  if args.protocol != 'official':
    raise InputError(
      f'--protocol {args.protocol!r}: only "official" can score a predictions file; the rskp '
      'protocol needs the localisation maps, so it scores a checkpoint: '
      '`issf-eval --workdir RUN [--checkpoint latest|best|STEP]` (config.eval.protocol=rskp)'
    )
  thresholds = parse_tiou(args.tiou)
  gt = load_json(args.ground_truth, 'ground truth')
  try:
    parsed = gt_lib.parse_ground_truth(gt, args.subset)
  except gt_lib.FormatError as err:
    raise InputError(f'ground truth file {args.ground_truth}: {err}') from None
  # The labels the GT knows let the fast reader share their strings (any other label still
  # reaches evaluate_official, which names it).
  read = functools.partial(prediction_file.load_predictions, labels=gt_lib.known_labels(gt, parsed))
  pred = load_json(args.predictions, 'predictions', read)
  if parsed.num_instances == 0:
    found = sorted({str(v.get('subset')) for v in gt['database'].values() if isinstance(v, dict)})
    raise InputError(
      f'ground truth file {args.ground_truth}: no annotated video in subset {args.subset!r} '
      f'(subsets present: {found})'
    )
  try:
    return evaluation.evaluate_official(
      gt, pred, subset=args.subset, tiou_thresholds=thresholds, parsed_ground_truth=parsed
    )
  except gt_lib.FormatError as err:
    raise InputError(f'predictions file {args.predictions}: {err}') from None


def main(argv=None) -> int:
  """Entry point of `issf-eval score` and `python -m launch.score`. Returns the exit status
  (2: bad input, reported as one line by `cli.run_argparse`)."""
  return cli.run_argparse(_main, build_parser(), argv)


def _main(args: argparse.Namespace) -> int:
  result = score(args)
  if args.output_json:
    outputs.write_json(args.output_json, result, indent=1)
  print(evaluation.format_results_table(result))
  if result.get('num_predictions_outside_subset'):
    print(
      f'warning: {result["num_predictions_outside_subset"]} predictions on '
      f'{result["videos_outside_subset"]} videos that are not in the ground truth subset '
      f'{args.subset!r} count as false positives',
      file=sys.stderr,
    )
  if result.get('classes_without_predictions'):
    print(f'classes without predictions (AP 0): {result["classes_without_predictions"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
