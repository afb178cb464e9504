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
what is needed here. Where TensorFlow is not installed (the GPU machines' fixed image), the
TensorBoard events are written with tensorboard's own protos and `data_pipelines.tfrecord`'s
framing instead (`_EventFile`): the same scalars, read by TensorBoard alike.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time

from issf_common import paths

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _strict(value: float) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def read_records(path: str) -> list[dict]:
  """The records of a metrics.jsonl; lines that do not parse (a torn write) are skipped."""
  records = []
  if not paths.exists(path):
    return records
  with paths.path(path).open('r') as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and isinstance(record.get('step'), int):
        records.append(record)
  return records


class _EventFile:
  """TensorBoard scalars without TensorFlow: an events file of Event protos (tensorboard's),
  one TFRecord each; the interface of the part of tf.summary used here."""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    paths.makedirs(logdir)
    name = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.v2'
    self._file = paths.path(paths.join(logdir, name)).open('ab')  # closed by close()
    self._append(self._event(wall_time=time.time(), file_version='brain.Event:2'))

  def _append(self, event) -> None:
    from data_pipelines import tfrecord

    self._file.write(tfrecord.frame(event.SerializeToString()))

  def scalars(self, step: int, scalars: dict) -> None:
    values = [self._summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    summary = self._summary(value=values)
    self._append(self._event(wall_time=time.time(), step=step, summary=summary))
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def logged_evaluation(workdir: str, step: int) -> dict:
  """The summary metrics of the evaluation at `step`, as `<workdir>/metrics.jsonl` records them
  ('eval/' dropped; a NaN, written as null, is NaN again)."""
  from issf_common import errors

  records = read_records(paths.join(workdir, METRICS_FILE))
  found = [r for r in records if r['step'] == step and 'eval/average_mAP' in r]
  if not found:
    raise errors.MissingFileError(f'{workdir}: metrics.jsonl has no evaluation at step {step}')
  return {
    k.removeprefix('eval/'): math.nan if v is None else v
    for k, v in found[-1].items()
    if k.startswith('eval/')
  }


class MetricsWriter:
  """Appends {'step': s, name: value, ...} lines and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    """`resume_step`: the step training continues from (0 for a fresh start): records of
    later steps are dropped. None keeps the files as they are."""
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    paths.makedirs(workdir)
    self._path = paths.join(workdir, METRICS_FILE)
    tb_dir = paths.join(workdir, TENSORBOARD_DIR)
    kept = None
    if resume_step is not None:
      kept = [r for r in read_records(self._path) if r['step'] <= resume_step]
      paths.write_atomic(self._path, ''.join(json.dumps(r, allow_nan=False) + '\n' for r in kept))
      if paths.exists(tb_dir):
        paths.path(tb_dir).rmtree()  # rebuilt below from the records kept
    from issf_common import tensorflow_optional

    self._tf = tensorflow_optional.tensorflow()  # GPU-hidden, shared with the data path
    if self._tf is None:
      self._tb = _EventFile(tb_dir)
    else:
      self._tb = self._tf.summary.create_file_writer(tb_dir)
    for record in kept or ():
      self._write_tensorboard(record['step'], {k: v for k, v in record.items() if k != 'step'})

  def _write_tensorboard(self, step: int, scalars: dict) -> None:
    scalars = {k: float('nan') if v is None else float(v) for k, v in scalars.items()}
    if self._tf is None:
      self._tb.scalars(int(step), scalars)
      return
    with self._tb.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.scalar(name, value)
    self._tb.flush()

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _strict(v) for k, v in scalars.items()}}
    paths.append_text(self._path, json.dumps(record, allow_nan=False) + '\n')
    self._write_tensorboard(step, scalars)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
