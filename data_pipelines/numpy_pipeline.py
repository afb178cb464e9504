"""The input pipeline without TensorFlow: the tf.data pipeline's batches, made in numpy.

Where TensorFlow is not installed (the GPU machines' fixed image) the trainer and the evaluator
take their host batches from here (`pipelines.select`). It is a drop-in for
`input_pipeline`: the same functions (`create_train_iterator`, `create_eval_iterator`,
`load_manifest`, ...), the same plan (`input_pipeline.plan_steps`, the eval batches in manifest
order), the same keys, dtypes and shapes, and bitwise the same values
(tests/test_data_numpy_pipeline.py). The records are read by position (`shards.RecordIndex`)
and decoded by `shards.decode_numpy`, one video at a time, in the calling thread: no prefetch.
On an accelerator the training batches normally come from the resident features instead
(`resident.py`), so only the evaluations and the memory initialisation read through here.

Training batch (host rows B = global_batch_size // process_count, or a micro-batch's rows):
  features float32 [B, T, D], mask bool [B, T], labels float32 [B, C], video_index int32 [B],
  length int32 [B] (+ position int32 [B] with batching 'micro').
Evaluation batch: the same keys plus valid bool [B] (+ num_snippets_orig int32 [B] in
'activitynet' mode); padding rows are all zero with video_index -1.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from data_pipelines import input_pipeline, sampling, shards
from data_pipelines.input_pipeline import (  # noqa: F401  (the module's interface)
  BatchingOptions,
  EvalOptions,
  Host,
  Position,
  load_ground_truth,
  load_manifest,
  micro_lengths,
  plan_steps,
)

MODES = input_pipeline.MODES
BATCHING = input_pipeline.BATCHING


class _Records:
  """Decoded features [T, D] and labels [C] of a subset's videos, read on demand."""

  def __init__(self, src: input_pipeline.ShardSubset):
    self.src = src

  def read(self, v: int) -> tuple[np.ndarray, np.ndarray]:
    ex = shards.decode_numpy(self.src.index.read(int(v)))
    return ex['features'], ex['labels']


def _rows_batch(records: _Records, t_pad: int, rows, *, contiguous: bool) -> dict:
  """rows [(video or -1, indices int32 [n])] -> one batch dict of len(rows) rows (no 'valid')."""
  count, d, c = len(rows), records.src.feature_dim, records.src.num_classes
  features = np.zeros((count, t_pad, d), np.float32)
  mask = np.zeros((count, t_pad), bool)
  labels = np.zeros((count, c), np.float32)
  index = np.full(count, -1, np.int32)
  length = np.zeros(count, np.int32)
  for r, (v, idx) in enumerate(rows):
    n = len(idx)
    length[r], mask[r, :n] = n, True
    if v < 0:
      continue
    x, labels[r] = records.read(v)
    index[r] = v
    if contiguous and n:  # a range: slice, as the tf.data graph does
      features[r, :n] = x[idx[0] : idx[0] + n]
    elif n:
      features[r, :n] = x[idx]
  return {'features': features, 'mask': mask, 'labels': labels, 'video_index': index,
          'length': length}  # fmt: skip


class TrainIterator:
  """`input_pipeline.TrainIterator` in numpy (same arguments less `prefetch`, same batches,
  same `state()`): a dict per step ('exact') or a list of micro-batch dicts ('micro')."""

  def __init__(
    self,
    shards_dir: str,
    options: BatchingOptions,
    *,
    start_epoch: int = 0,
    start_batch: int = 0,
    host: Host | None = None,
    verify: bool = True,
    prefetch: int = 0,
  ):
    del prefetch  # Batches are made when asked for.
    host = host or Host.current()
    options.check(host.count)
    src = input_pipeline.ShardSubset(shards_dir, 'train', verify)
    size = options.global_batch_size
    self._position = Position(len(src.lengths), size, start_epoch, start_batch)
    self.steps_per_epoch = self._position.steps_per_epoch
    self.global_batch_size = size
    self.host_batch_size = size // host.count
    self.manifest = src.manifest
    self._records = _Records(src)
    self._micro = options.batching == 'micro'
    self._contiguous = options.mode == 'thumos'
    self._plan = plan_steps(
      src.lengths, options, start_epoch=self._position.epoch, start_batch=self._position.batch,
      host=host,
    )  # fmt: skip

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self):
    if self._plan is None:
      raise StopIteration
    groups = []
    for t_pad, rows in next(self._plan):
      batch = _rows_batch(
        self._records, t_pad, [(v, idx) for v, idx, _ in rows], contiguous=self._contiguous
      )
      if self._micro:
        batch['position'] = np.array([pos for _, _, pos in rows], np.int32)
      groups.append(batch)
    self._position.advance()
    return groups if self._micro else groups[0]

  def close(self) -> None:
    self._plan = None

  def state(self) -> dict:
    """Position of the NEXT batch: pass it back as start_epoch / start_batch to resume."""
    return self._position.state()


create_train_iterator = TrainIterator


def create_eval_iterator(
  shards_dir: str,
  options: EvalOptions,
  *,
  subset: str = 'test',
  host: Host | None = None,
  verify: bool = True,
  order: str = 'manifest',
) -> Iterator[dict]:
  """`input_pipeline.create_eval_iterator` in numpy: every video of `subset` once, in manifest
  order (or by length), as the same batches (its docstring)."""
  batch_size, mode, t_s = options.batch_size, options.mode, options.t_s
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  host = host or Host.current()
  p, n_hosts = host.index, host.count
  if batch_size % n_hosts:
    raise ValueError(f'batch_size {batch_size} not divisible by {n_hosts} hosts')
  src = input_pipeline.ShardSubset(shards_dir, subset, verify)
  return _eval_batches(src, batch_size, mode, options.bucket_size, t_s, p, n_hosts, order)


def _eval_batches(src, batch_size, mode, bucket_size, t_s, p, n_hosts, order):
  records, lengths = _Records(src), src.lengths
  n, bh = len(lengths), batch_size // n_hosts
  sequence = sampling.eval_sequence(lengths, batch_size, order)  # n: a padding row
  if mode == 'thumos':
    padded = sampling.eval_padded_lengths(lengths, batch_size, order, bucket_size)
  empty = np.zeros(0, np.int32)
  for start in range(0, n, batch_size):
    global_rows = sequence[start : start + batch_size]
    t_pad = padded[start // batch_size] if mode == 'thumos' else t_s
    rows = []
    for v in global_rows[p * bh : (p + 1) * bh]:
      if v >= n:
        rows.append((-1, empty))
        continue
      t = int(lengths[v])
      idx = np.arange(t, dtype=np.int32) if mode == 'thumos' else sampling.uniform_indices(t, t_s)
      rows.append((int(v), idx))
    batch = _rows_batch(records, int(t_pad), rows, contiguous=mode == 'thumos')
    batch['valid'] = batch['video_index'] >= 0
    if mode != 'thumos':
      batch['num_snippets_orig'] = np.array(
        [lengths[v] if v >= 0 else 0 for v, _ in rows], np.int32
      )
    yield batch
