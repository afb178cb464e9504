"""Metrics to `metrics.jsonl` and TensorBoard (tf.summary), from process 0 only.

`metrics.jsonl` is the record: one strict-JSON object per line, {"step": s, name: value, ...}
(a non-finite value is written as null). A run that resumes from the checkpoint of step s
redoes the steps after s, so `MetricsWriter(workdir, resume_step=s)` first drops the records of
later steps, and rebuilds the TensorBoard logs from the records kept: each logged step then
has exactly one record in both, however the previous process ended (kill -9 included; a torn
last line is dropped too).

clu's metric writers (clu 0.0.12 imports and runs with our jax 0.10.2) are not used: they write
TensorBoard through TensorFlow just as this module does, but have no JSON-lines record and no
truncation on resume, which is what this module is for; they would add a dependency for none of
what is needed here.
"""

from __future__ import annotations

import json
import math
import os
import shutil

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _strict(value: float) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def read_records(path: str) -> list[dict]:
  """The records of a metrics.jsonl; lines that do not parse (a torn write) are skipped."""
  records = []
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and isinstance(record.get('step'), int):
        records.append(record)
  return records


class MetricsWriter:
  """Appends {'step': s, name: value, ...} lines and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    """`resume_step`: the step training continues from (0 for a fresh start): records of
    later steps are dropped. None keeps the files as they are."""
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, METRICS_FILE)
    tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    kept = None
    if resume_step is not None:
      kept = [r for r in read_records(self._path) if r['step'] <= resume_step]
      tmp = self._path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(json.dumps(r, allow_nan=False) + '\n' for r in kept)
      os.replace(tmp, self._path)
      shutil.rmtree(tb_dir, ignore_errors=True)  # rebuilt below from the records kept
    from issf_common.tensorflow_cpu import tf  # GPU-hidden TensorFlow, shared with the data path

    self._tf = tf
    self._tb = tf.summary.create_file_writer(tb_dir)
    for record in kept or ():
      self._write_tensorboard(record['step'], {k: v for k, v in record.items() if k != 'step'})

  def _write_tensorboard(self, step: int, scalars: dict) -> None:
    with self._tb.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.scalar(name, float('nan') if value is None else float(value))
    self._tb.flush()

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _strict(v) for k, v in scalars.items()}}
    with open(self._path, 'a') as f:
      f.write(json.dumps(record, allow_nan=False) + '\n')
    self._write_tensorboard(step, scalars)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
