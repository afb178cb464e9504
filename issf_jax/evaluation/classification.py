"""Classification mAP over videos (docs/design.md §7.1), RSKP's `getClassificationMAP` semantics.

Per class column (background and any extra score columns ignored): the videos are sorted by
descending score with numpy's default argsort, and AP = sum_i label_i * prec@i / n_pos, the
non-interpolated AP. As in RSKP, the cumulative counts and precisions are float32 (`astype
('float32')`), while the labels (RSKP's `labels_all`, a float64 array) make n_pos and the final
division float64. This reproduces RSKP bit for bit on the goldens, e.g. 91.66666865348816 on the
3-video oracle where exact arithmetic gives 91.666...67. A class without a positive video gives
0/0 = nan (and a warning), which makes the mean nan, again as in RSKP.
"""

import warnings

import numpy as np


def class_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Non-interpolated AP of one class. scores, labels: [N]. nan if no positive."""
  labels = np.asarray(labels, np.float64)
  order = np.argsort(-np.asarray(scores))
  hit = labels[order] == 1
  num_pos = np.sum(labels)
  tp = np.cumsum(hit).astype(np.float32)
  fp = np.cumsum(~hit).astype(np.float32)
  with np.errstate(invalid='ignore', divide='ignore'):
    precision = tp / (fp + tp)
    return float(np.sum(hit.astype(np.float32) * precision) / num_pos)


def classification_map(scores, labels) -> float:
  """Classification mAP in percent.

  Args:
    scores: [N, C] or [N, C+1] video scores; only the first C columns are read.
    labels: [N, C] multi-hot video labels (RSKP's `labels_all`).

  Returns:
    100 * the mean AP over the C classes; nan when some class has no positive video.
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels, np.float64)
  num_classes = labels.shape[1]
  if num_classes == 0 or labels.shape[0] == 0:
    return float('nan')
  aps = [class_average_precision(scores[:, c], labels[:, c]) for c in range(num_classes)]
  no_positive = [c for c in range(num_classes) if not np.any(labels[:, c] == 1)]
  if no_positive:
    warnings.warn(
      f'classification mAP: classes {no_positive} have no positive video; AP is nan', stacklevel=2
    )
  return 100 * sum(aps) / num_classes
