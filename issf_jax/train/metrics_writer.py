"""Metrics to `metrics.jsonl` and TensorBoard (tf.summary), from process 0 only."""

from __future__ import annotations

import json
import os


class MetricsWriter:
  """Appends {'step': s, name: value, ...} lines and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, 'metrics.jsonl')
    from data_pipelines._tf import tf  # GPU-hidden TensorFlow, shared with the data path

    self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
    self._tf = tf

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    with self._tb.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.scalar(name, float(value))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
