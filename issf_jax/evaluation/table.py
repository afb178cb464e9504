"""Printing a detection result (either protocol) as a table of percentages."""

import numpy as np

# Averages printed under the per-IoU row when all their thresholds were evaluated.
THUMOS_AVERAGES = (('0.1:0.5', 0.1, 0.5), ('0.3:0.7', 0.3, 0.7), ('0.1:0.7', 0.1, 0.7))
ACTIVITYNET_AVERAGES = (('0.5:0.95', 0.5, 0.95),)


def _range_average(thresholds: np.ndarray, values: np.ndarray, lo: float, hi: float, step: float):
  """Mean of `values` over lo:step:hi if every one of those thresholds is present, else None."""
  want = np.round(np.arange(lo, hi + step / 2, step), 10)
  found = [np.flatnonzero(np.isclose(thresholds, w, atol=1e-9)) for w in want]
  if any(f.size == 0 for f in found):
    return None
  return float(np.mean(values[[f[0] for f in found]]))


def range_averages(result: dict, key: str = 'mAP') -> dict:
  """{'0.1:0.5': x, ...} (fractions) for the averages the result's thresholds allow."""
  thresholds = np.asarray(result['tiou_thresholds'], np.float64)
  values = np.asarray(result[key], np.float64)
  is_anet = bool(np.any(np.isclose(thresholds, 0.95)))
  spans = ACTIVITYNET_AVERAGES if is_anet else THUMOS_AVERAGES
  step = 0.05 if is_anet else 0.1
  out = {}
  for name, lo, hi in spans:
    avg = _range_average(thresholds, values, lo, hi, step)
    if avg is not None:
      out[name] = avg
  return out


def format_results_table(result: dict) -> str:
  """A result dict of `evaluate_official` / `evaluate_rskp` as text (all numbers in %)."""
  thresholds = result['tiou_thresholds']
  head = f'protocol: {result["protocol"]}  subset: {result.get("subset")}  videos: '
  head += f'{result.get("num_videos")}  instances: {result.get("num_instances")}'
  cols = ['tIoU'] + [f'{t:g}' for t in thresholds]
  cols += ['avg']
  row = ['mAP (%)'] + [f'{100 * v:.2f}' for v in result['mAP']]
  row += [f'{100 * result["average_mAP"]:.2f}']
  width = max(len(x) for x in cols + row) + 1
  lines = [head, ''.join(x.rjust(width) for x in cols), ''.join(x.rjust(width) for x in row)]
  averages = range_averages(result)
  if averages:
    lines.append('averages (%): ' + '  '.join(f'{k} {100 * v:.2f}' for k, v in averages.items()))
  if result.get('classification_mAP') is not None:
    value = float(result['classification_mAP'])
    why = ' (a class has no positive video in this split: its AP is undefined)'
    lines.append(f'classification mAP (%): {100 * value:.2f}' + (why if value != value else ''))
  if result.get('early_return_zero'):
    natural = ' '.join(f'{100 * v:.2f}' for v in result['natural_mAP'])
    lines.append(
      f'note: classes {result["empty_classes"]} have no proposal, so RSKP reports mAP 0 at every '
      f'IoU (its early return). Natural mAP (AP 0 for those classes): {natural}; average '
      f'{100 * result["natural_average_mAP"]:.2f}'
    )
  return '\n'.join(lines)
