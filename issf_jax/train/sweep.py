"""Sweeping the CAS threshold range of the proposals on a trained run (`issf-eval --sweep_scales`).

RSKP's proposals threshold the class activation sequence at `np.arange(start, stop, step)`
(0.001 ... 0.039 on THUMOS14, where the CAS is a softmax over C + 1 = 21 classes). Nothing fixes
the range for ActivityNet, whose CAS spreads over 201 classes and so has smaller magnitudes; the
reference spec (§6.3) says to sweep it on training videos rather than on the test split. A sweep
predicts the chosen split once, then builds the proposals and scores them with the run's protocol
for each candidate range: the configured range with start, stop and step all multiplied by a
scale (so every candidate keeps the same number of thresholds, moved up or down).

The training split's temporal annotations are never read by training (it sees video-level labels
only), so selecting the range on it leaves the test split untouched. The videos are not held
out, though: the model has fit their labels, so their maps may be sharper than the test videos'.
"""

from __future__ import annotations

import copy
import math

from issf_common import errors
from issf_jax import proposals

RANGE_FIELDS = ('thresholds_start', 'thresholds_stop', 'thresholds_step')


def parse_scales(text: str) -> list[float]:
  """'0.25,0.5,1,2' -> [0.25, 0.5, 1.0, 2.0]; each scale must be a positive finite number."""
  try:
    scales = [float(x) for x in text.split(',') if x.strip()]
  except ValueError:
    raise errors.InputError(
      f'--sweep_scales {text!r}: not a comma-separated list of numbers'
    ) from None
  if not scales or any(not (math.isfinite(s) and s > 0) for s in scales):
    raise errors.InputError(f'--sweep_scales {text!r}: scales must be positive numbers')
  return list(dict.fromkeys(scales))


def scaled_proposals(proposal_config, scale: float):
  """A copy of the `eval.proposals` config with the threshold range multiplied by `scale`."""
  scaled = copy.deepcopy(proposal_config)
  with scaled.unlocked():
    for field in RANGE_FIELDS:
      scaled[field] = float(proposal_config[field]) * scale
  return scaled


def sweep(evaluator, params, key_data, scales) -> dict:
  """Scores the run's eval split (the evaluator's `config.data.eval_subset`) at each scale.

  Args:
    evaluator: an `evaluator.Evaluator`; its config sets the split, protocol and base range.
    params: the model parameters (replicated or host values).
    key_data: the evaluation key, as the trainer passes it.
    scales: [S] positive multipliers of the configured threshold range.

  Returns:
    {'subset', 'protocol', 'rows': [{'scale', 'thresholds_start', 'thresholds_stop',
     'thresholds_step', 'num_thresholds', 'num_detections', 'average_mAP', 'mAP', ...}],
     'best': the row with the highest average mAP (the smallest scale on ties)}.
  """
  config = evaluator.config
  maps = evaluator.predict_maps(params, key_data)  # The model runs once; each scale detects.
  rows = []
  for scale in scales:
    proposal_config = scaled_proposals(config.eval.proposals, scale)
    predicted = evaluator.detect(maps, proposal_config)
    result = evaluator.score(predicted, proposal_config, extra=False)  # The primary only.
    detections = predicted['predictions']['results']
    rows.append({
      'scale': float(scale),
      **{k: float(proposal_config[k]) for k in RANGE_FIELDS},
      'num_thresholds': len(proposals.cas_thresholds(proposal_config)),
      'num_detections': sum(len(v) for v in detections.values()),
      'average_mAP': float(result['average_mAP']),
      'mAP': [float(x) for x in result['mAP']],
      'tiou_thresholds': [float(x) for x in result['tiou_thresholds']],
    })  # fmt: skip
  best = max(rows, key=lambda r: (r['average_mAP'], -r['scale']))
  return {
    'subset': config.data.eval_subset,
    'protocol': evaluator.protocols[0],
    'rows': rows,
    'best': best,
  }


def format_sweep(result: dict) -> str:
  """The sweep as a table (mAP in %), the best row marked, and the overrides that select it."""
  rows = result['rows']
  tious = rows[0]['tiou_thresholds']
  mid = tious.index(0.5) if 0.5 in tious else len(tious) // 2  # mAP@0.5 where it is scored
  at = f'mAP@{tious[mid]:g}'
  lines = [
    f'CAS threshold sweep: protocol {result["protocol"]}, subset {result["subset"]!r}',
    f'{"scale":>8} {"thresholds (start:stop:step)":>32} {"n":>4} {"detections":>11} '
    f'{"avg mAP":>8} {at:>9}',
  ]
  best = result['best']
  for r in rows:
    span = f'{r["thresholds_start"]:.6g}:{r["thresholds_stop"]:.6g}:{r["thresholds_step"]:.6g}'
    mark = '  <- best' if r is best else ''
    lines.append(
      f'{r["scale"]:>8g} {span:>32} {r["num_thresholds"]:>4} {r["num_detections"]:>11} '
      f'{100 * r["average_mAP"]:>8.2f} {100 * r["mAP"][mid]:>9.2f}{mark}'
    )
  overrides = ' '.join(f'--config.eval.proposals.{k}={best[k]!r}' for k in RANGE_FIELDS)
  lines.append(f'best: scale {best["scale"]:g}; to use it: {overrides}')
  return '\n'.join(lines)
