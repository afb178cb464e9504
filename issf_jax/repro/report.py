"""Aggregation over seeds and the harness's outputs: markdown tables and a bar chart.

Per row and metric: the mean and the sample standard deviation (ddof = 1) over the seeds that
finished, in % (mAP values are stored as fractions). Last-epoch and best-on-test numbers are
aggregated apart: "best" is the evaluation with the highest average mAP, selected on the test
split itself (as RSKP's README does), so it is optimistic and never mixed with "last".
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from issf_jax.repro import runs

PHASES = ('last', 'best')
NATURAL = 'natural_average_mAP'


def mean_std(values) -> tuple[float, float | None]:
  """(mean, sample std with ddof = 1) of the finite values (None and NaN are skipped: a
  classification mAP is undefined when a class has no positive test video); std is None for
  fewer than two values, and the mean is NaN for none."""
  values = np.asarray([v for v in values if v is not None], np.float64)
  values = values[np.isfinite(values)]
  if values.size == 0:
    return math.nan, None
  std = float(np.std(values, ddof=1)) if values.size > 1 else None
  return float(np.mean(values)), std


def report_name(
  table_name: str,
  data_tag: str,
  extra_args: str,
  *,
  rows: str = '',
  epochs: int = 0,
  overrides=None,
  name: str = '',
) -> str:
  """`table<N>_<data>_<args>[_rows-...][_epochs-E][_<overrides>]`: everything that selects
  the runs, so that two studies in one workdir never overwrite each other's report (the
  overrides by key leaf, e.g. `attn_logits-dot_sqrt_d`; a hash when they are long)."""
  if name:
    return name

  def slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text.replace('=', '-')).strip('-')

  parts = [f'table{table_name}', data_tag, slug(extra_args)]
  if rows:
    parts.append('rows-' + slug(rows))
  if epochs:
    parts.append(f'epochs-{epochs}')
  if overrides:
    text = slug('_'.join(f'{k.rsplit(".", 1)[-1]}-{v}' for k, v in sorted(overrides.items())))
    if len(text) > 80:
      text = 'overrides-' + hashlib.sha1(text.encode()).hexdigest()[:10]
    parts.append(text)
  return '_'.join(filter(None, parts))


def aggregate(table, records: list[dict]) -> list[dict]:
  """One summary per row of `table`, in its order.

  Args:
    table: a `tables.Table`.
    records: per-(row, seed) dicts with 'row_key', 'status' ('finished', 'failed', 'pending'),
      'minutes', and for finished ones 'metrics' = {'last'|'best': {metric: fraction, 'epoch'}}.
  Returns:
    [{'key', 'label', 'args', 'paper_avg', 'paper_map50', 'seeds', 'failed', 'pending', 'minutes',
      'last'|'best': {metric: {'mean', 'std', 'values'} (in %), 'epochs': [...]}}].
  """
  out = []
  for row in table.rows:
    mine = [r for r in records if r['row_key'] == row.key]
    done = [r for r in mine if r['status'] == 'finished']
    summary = {
      'key': row.key,
      'label': row.label,
      'args': mine[0]['args'] if mine else row.args,
      'paper_avg': row.paper_avg,
      'paper_map50': row.paper_map50,
      'seeds': len(done),
      'failed': sum(r['status'] == 'failed' for r in mine),
      'pending': sum(r['status'] == 'pending' for r in mine),
      'minutes': mean_std(r['minutes'] for r in done if r.get('minutes') is not None)[0],
    }
    for phase in PHASES:
      per_metric = {}
      for metric in runs.METRICS:
        values = [_percent(r['metrics'][phase].get(metric)) for r in done]
        mean, std = mean_std(values)
        per_metric[metric] = {'mean': mean, 'std': std, 'values': values}
      per_metric['epochs'] = [r['metrics'][phase]['epoch'] for r in done]
      # The rskp protocol scores a run 0.0 when a class has no proposal (RSKP's early return);
      # its natural mAP (AP 0 for that class) is logged beside it by runs that have it.
      natural = [_percent(r['metrics'][phase].get(NATURAL)) for r in done]
      per_metric[NATURAL] = dict(zip(('mean', 'std'), mean_std(natural), strict=True))
      per_metric[NATURAL]['values'] = natural
      per_metric['zeroed'] = sum(
        r['metrics'][phase].get('average_mAP') == 0 and (r['metrics'][phase].get(NATURAL) or 0) > 0
        for r in done
      )
      summary[phase] = per_metric
    out.append(summary)
  return out


def _percent(value):
  return None if value is None or not math.isfinite(value) else 100 * value


def format_mean_std(mean: float, std: float | None) -> str:
  if math.isnan(mean):
    return '–'
  return f'{mean:.1f} ± {std:.1f}' if std is not None else f'{mean:.1f}'


def _paper(value) -> str:
  return '–' if value is None else f'{value:.1f}'


def tiou_label(thresholds) -> str:
  """[0.1, ..., 0.7] -> '0.1:0.7'; an uneven list is written out."""
  t = np.asarray(thresholds, np.float64)
  if t.size > 2 and np.allclose(np.diff(t), t[1] - t[0]):
    return f'{t[0]:g}:{t[-1]:g}'
  return ','.join(f'{x:g}' for x in t)


def markdown(title: str, header_lines: list[str], summaries: list[dict], tiou: str) -> str:
  """The report: a header, then the last-epoch table and the best-on-test table."""
  avg = f'avg mAP {tiou}'
  lines = [f'## {title}', '', *header_lines, '']
  lines += ['### Last epoch', '']
  lines.append(f'| row | config args | {avg} | mAP@0.5 | cls mAP | paper avg | paper @0.5 '
               '| seeds | min/run |')  # fmt: skip
  lines.append('|---|---|---|---|---|---|---|---|---|')
  for s in summaries:
    m = s['last']
    seeds = f'{s["seeds"]}' + ''.join(f' ({s[k]} {k})' for k in ('failed', 'pending') if s.get(k))
    minutes = '–' if math.isnan(s['minutes']) else f'{s["minutes"]:.1f}'
    mark = ' †' if m.get('zeroed') else ''
    lines.append(
      f'| {s["label"]}{mark} | `{s["args"]}` | '
      + ' | '.join(format_mean_std(m[k]['mean'], m[k]['std']) for k in runs.METRICS)
      + f' | {_paper(s["paper_avg"])} | {_paper(s["paper_map50"])} | {seeds} | {minutes} |'
    )
  zeroed = [s for s in summaries if s['last'].get('zeroed')]
  if zeroed:
    lines += ['', "† Some seeds scored 0.0: RSKP's `getLocMAP` returns mAP 0 at every tIoU when a "
              'class has no proposal, and the `rskp` protocol keeps that. With AP 0 for that class '
              'instead (the natural average mAP):', '']  # fmt: skip
    for s in zeroed:
      m = s['last']
      values = ', '.join('–' if v is None else f'{v:.1f}' for v in m[NATURAL]['values'])
      lines.append(
        f'- {s["label"]}: {format_mean_std(m[NATURAL]["mean"], m[NATURAL]["std"])} '
        f'[{values}] ({m["zeroed"]} of {s["seeds"]} seeds zeroed)'
      )
  lines += ['', '### Best on test (selected on the test split: optimistic)', '']
  lines.append(f'| row | {avg} | mAP@0.5 | cls mAP | epoch of the best, per seed |')
  lines.append('|---|---|---|---|---|')
  for s in summaries:
    m = s['best']
    epochs = ', '.join(str(e) for e in m['epochs']) or '–'
    lines.append(
      f'| {s["label"]} | '
      + ' | '.join(format_mean_std(m[k]['mean'], m[k]['std']) for k in runs.METRICS)
      + f' | {epochs} |'
    )
  return '\n'.join(lines) + '\n'


def plot(path: str, title: str, summaries: list[dict], tiou: str) -> None:
  """A PNG: per phase (last epoch, best on test), grouped bars of the three metrics per row,
  error bars = the std over seeds; the paper's average mAP as a black tick where known."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  names = {'average_mAP': f'avg mAP {tiou}', 'mAP@0.5': 'mAP@0.5',
           'classification_mAP': 'cls mAP'}  # fmt: skip
  x = np.arange(len(summaries))
  width = 0.8 / len(runs.METRICS)
  # One panel above the other, sharing the row axis: readable from 2 rows to 3 x 9.
  fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.3 * len(summaries) + 3), 8.5), sharex=True)
  for ax, phase, phase_title in zip(axes, PHASES, ('last epoch', 'best on test'), strict=True):
    for j, metric in enumerate(runs.METRICS):
      means = [s[phase][metric]['mean'] for s in summaries]
      stds = [s[phase][metric]['std'] or 0.0 for s in summaries]
      ax.bar(x + (j - 1) * width, np.nan_to_num(means), width, yerr=stds, capsize=3,
             label=names[metric])  # fmt: skip
    paper = [(i, s['paper_avg']) for i, s in enumerate(summaries) if s['paper_avg'] is not None]
    if paper:
      ax.scatter([i - width for i, _ in paper], [v for _, v in paper], marker='_', s=300,
                 color='black', zorder=3, label='paper avg (THUMOS14)')  # fmt: skip
    ax.set_xticks(x, [s['label'] for s in summaries], rotation=25, ha='right', fontsize=8)
    ax.set_title(phase_title)
    ax.set_ylabel('%  (mean ± std over seeds)')
    ax.set_ylim(0, 100)
    ax.grid(axis='y', alpha=0.3)
  axes[0].legend(fontsize=8, loc='upper left')
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  from issf_common import outputs

  outputs.save_figure(path, fig, dpi=100)
  plt.close(fig)
