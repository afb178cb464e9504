"""Timeline plots of one video: localisation map, attention, detections, ground truth."""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')  # headless: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_timeline(
  path: str,
  *,
  cas: np.ndarray,
  attention: np.ndarray,
  video_scores: np.ndarray,
  detections: np.ndarray,
  class_names,
  seconds_per_snippet: float,
  ground_truth=(),
  top_k: int = 3,
  title: str = '',
  branches: dict | None = None,
) -> str:
  """Draws and saves the figure.

  Args:
    path: output image (.png).
    cas: [T, C+1] fused localisation map; attention: [T]; video_scores: [C+1].
    detections: [N, 4] rows [class, start_s, end_s, score].
    class_names: C names.
    seconds_per_snippet: stride / fps (THUMOS 0.64 s).
    ground_truth: (label, start_s, end_s) triples, drawn when given.
    top_k: classes shown, by video score (plus any class with a detection or GT).
    branches: optional {'base', 'brm', 'dem', 'mix'} -> [T, C+1] distillation probabilities
      (`issf_jax.diagnostics`); drawn as a panel of each branch's probability of the top class
      (solid) and of background (dotted), over the ground-truth segments (shaded).
  """
  num_classes = len(class_names)
  order = list(np.argsort(-np.asarray(video_scores)[:num_classes])[:top_k])
  names = list(class_names)
  t = (np.arange(len(cas)) + 0.5) * seconds_per_snippet
  colours = plt.get_cmap('tab10')
  ratios = [3, 1.2, 2] if not branches else [3, 1.2, 2.4, 2]
  fig, axes = plt.subplots(len(ratios), 1, figsize=(12, 6.5 + 2.2 * bool(branches)), sharex=True,
                           gridspec_kw={'height_ratios': ratios})  # fmt: skip
  if branches:
    _branch_panel(axes[2], branches, order[0], names, t, ground_truth)
    axes = [axes[0], axes[1], axes[3]]
  ax = axes[0]
  for i, c in enumerate(order):
    ax.plot(t, cas[:, c], color=colours(i), label=f'{names[c]} ({video_scores[c]:.2f})')
  ax.set_ylabel('fused CAS')
  ax.legend(loc='upper right', fontsize=8)
  ax.set_title(title or 'ISSF localisation')
  axes[1].fill_between(t, attention, color='0.4', step='mid')
  axes[1].set_ylim(0, 1)
  axes[1].set_ylabel('attention')

  ax = axes[2]
  gt_classes = {names.index(g[0]) for g in ground_truth if g[0] in names}
  shown = sorted(set(order) | {int(r[0]) for r in detections} | gt_classes)
  rows = {c: i for i, c in enumerate(shown)}
  for c, start, end, score in np.asarray(detections, np.float64).reshape(-1, 4):
    y = rows[int(c)]
    colour = colours(order.index(int(c))) if int(c) in order else 'tab:gray'
    ax.broken_barh([(start, end - start)], (y + 0.05, 0.4), color=colour,
                   alpha=float(np.clip(0.25 + score * 4, 0.25, 1.0)))  # fmt: skip
  for label, start, end in ground_truth:
    if label in names:
      ax.broken_barh([(start, end - start)], (rows[names.index(label)] + 0.52, 0.4),
                     facecolor='none', edgecolor='black', hatch='///', linewidth=1.0)  # fmt: skip
  ax.set_yticks([i + 0.5 for i in range(len(shown))], [names[c] for c in shown], fontsize=8)
  ax.set_ylim(0, max(len(shown), 1))
  ax.set_xlabel('time (s)')
  ax.set_ylabel('detections (solid)\nground truth (hatched)', fontsize=8)
  ax.set_xlim(0, len(cas) * seconds_per_snippet)
  fig.tight_layout()
  from issf_common import outputs

  outputs.save_figure(path, fig, dpi=110)
  plt.close(fig)
  return path


_BRANCH_STYLE = {
  'base': ('base student S', 'tab:blue'),
  'brm': ('BRM teacher T~', 'tab:green'),
  'dem': ('DEM read T^', 'tab:red'),
  'mix': ('pseudo-label T^p', 'black'),
}


def _branch_panel(ax, branches, cls, names, t, ground_truth):
  """Each branch's p(top class) (solid) and p(background) (dotted) per snippet."""
  for _, start, end in ground_truth:
    ax.axvspan(start, end, color='0.85', lw=0)
  background = len(names)
  for name, probs in branches.items():
    text, colour = _BRANCH_STYLE.get(name, (name, 'tab:gray'))
    n = len(probs)
    ax.plot(t[:n], probs[:, cls], color=colour, lw=1.2, label=text)
    ax.plot(t[:n], probs[:, background], color=colour, lw=0.8, ls=':')
  ax.set_ylim(-0.02, 1.02)
  ax.set_ylabel(f'p({names[cls]})\n(dotted: p(bg))', fontsize=8)
  ax.legend(loc='upper right', fontsize=7, ncol=len(branches))
