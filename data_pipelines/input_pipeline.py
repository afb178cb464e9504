"""The tf.data input pipeline: shard directory -> numpy batches for the trainer and the evaluator.

Training batch (B_host = global_batch_size // process_count):
  features     float32 [B_host, T, D]   zero beyond each row's length
  mask         bool    [B_host, T]      True on real snippets
  labels       float32 [B_host, C]      multi-hot video labels
  video_index  int32   [B_host]         row of the manifest's train table
  length       int32   [B_host]         number of True in mask
T is the global batch's longest (cropped) video rounded up to a multiple of bucket_size in 'thumos'
mode, and t_s in 'activitynet' mode (random-bin sampling, mask all True).

Order. Epoch e visits the videos in `sampling.epoch_order(seed, e, N)`, cut into global batches;
the last N mod global_batch_size videos of each epoch's permutation are dropped (drop_remainder:
every step has the same batch size; THUMOS 200 / 10 gives exactly 20 steps). Host p takes rows
[p*B_host, (p+1)*B_host) of every global batch, and T is computed from the manifest's lengths of the
whole global batch, so the hosts' slices concatenate to the one-host batch exactly. All randomness
comes from numpy seeded by (seed, epoch, video) (`sampling.py`), so `state()` -> (epoch, batch) of
the next batch is enough to resume bitwise. A Python generator plans rows and reads records by
position (`shards.RecordIndex`); tf.data parses, gathers, pads, batches and prefetches in parallel.
Iterators should be `close()`d when done; those still open at exit are closed by an atexit hook.

THUMOS mode with max_len: T is bucketed from min(longest, max_len), so it can exceed max_len by
less than one bucket (the padding is masked).

Micro-batching (`batching='micro'`, `plan_steps`): the same global batches, each yielded as a list
of global_batch_size // micro_batch_size micro-batches of host rows micro_batch_size //
process_count, each padded to a geometric bucket of its own longest video and carrying
'position' int32 [rows] (the video's place in the global batch). The trainer accumulates their
gradients into one optimizer step (`issf_jax/train/micro.py`). With micro_batch_size 1 (one
device) no video is padded beyond its own bucket: on THUMOS14's training lengths the executed
FLOPs fall from about 4x the true-length FLOPs to about 1.15x (docs/results.md).
"""

import atexit
import collections
import dataclasses
import weakref
from collections.abc import Iterator

import numpy as np
from absl import logging

from data_pipelines import manifest as manifest_lib
from data_pipelines import sampling, shards

load_manifest = manifest_lib.load_manifest
load_ground_truth = manifest_lib.load_ground_truth
MODES = ('thumos', 'activitynet')
BATCHING = ('exact', 'micro')

# Iterators still open at interpreter exit. A tf.data pipeline fed by a Python generator that is
# alive when the interpreter finalizes can deadlock the exit (measured: 2 hangs in 6 runs), so
# they are closed by an atexit hook, which runs while Python is still whole.
_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
  for it in list(_OPEN):
    it.close()


@dataclasses.dataclass(frozen=True)
class Host:
  """This process's share of every global batch: host `index` of `count` (multi-host pods)."""

  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not 0 <= self.index < self.count:
      raise ValueError(f'process_index {self.index} not in [0, {self.count})')

  @classmethod
  def current(cls) -> 'Host':
    """jax.process_index() of jax.process_count()."""
    import jax  # Only here: the pipeline itself never touches a device.

    return cls(jax.process_index(), jax.process_count())


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """How the training batches are planned: the same on every host and for both iterators
  (`TrainIterator`, `resident.ResidentTrainIterator`).

  mode: 'thumos' | 'activitynet'. max_len (thumos): videos longer than this are cropped to a
  random window (RSKP: None, full length). t_s (activitynet): snippets sampled per video.
  batching: 'exact' (one padded batch per step) | 'micro' (a list of micro-batches per step,
  `plan_steps`); micro_batch_size, bucket_growth and micro_buckets only matter for 'micro'.
  micro_buckets: 0, geometric edges (x bucket_growth); N > 0, N edges fitted to the training
  lengths (`sampling.fitted_bucket_edges`).
  """

  global_batch_size: int
  seed: int
  mode: str
  bucket_size: int = 64
  max_len: int | None = None
  t_s: int = 75
  batching: str = 'exact'
  micro_batch_size: int = 1
  bucket_growth: float = 1.2
  micro_buckets: int = 0

  def check(self, n_hosts: int) -> None:
    """Raises ValueError when these options cannot serve `n_hosts` hosts."""
    size, micro = self.global_batch_size, self.micro_batch_size
    if self.mode not in MODES:
      raise ValueError(f'mode must be one of {MODES}, got {self.mode!r}')
    if self.batching not in BATCHING:
      raise ValueError(f'batching must be one of {BATCHING}, got {self.batching!r}')
    if size % n_hosts:
      raise ValueError(f'global_batch_size {size} not divisible by {n_hosts} hosts')
    if self.batching == 'micro' and (micro < 1 or size % micro or micro % n_hosts):
      raise ValueError(
        f'micro_batch_size {micro} must divide global_batch_size {size}'
        f' and be a multiple of the {n_hosts} hosts'
      )


class Position:
  """(epoch, batch) of an iterator's next training batch; `state()` resumes it exactly."""

  def __init__(self, num_videos: int, global_batch_size: int, start_epoch: int, start_batch: int):
    self.steps_per_epoch = num_videos // global_batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'{num_videos} train videos < global_batch_size {global_batch_size}')
    self.epoch = start_epoch + start_batch // self.steps_per_epoch
    self.batch = start_batch % self.steps_per_epoch

  def advance(self) -> None:
    self.batch += 1
    if self.batch == self.steps_per_epoch:
      self.epoch, self.batch = self.epoch + 1, 0

  def state(self) -> dict:
    return {'epoch': self.epoch, 'batch': self.batch}


def plan_steps(
  lengths: np.ndarray,
  options: BatchingOptions,
  *,
  start_epoch: int,
  start_batch: int,
  host: Host,
) -> Iterator[list[tuple[int, list[tuple[int, np.ndarray, int]]]]]:
  """This host's plan of every training step from (start_epoch, start_batch) on, forever.

  Yields per step a list of groups (t_pad, rows), rows = [(video, indices int32 [n], position)]
  for this host; position is the video's place in the global batch (its dropout key). 'exact':
  one group, the global batch padded to a bucket_size multiple (module docstring). 'micro': the
  same global batch (same videos, same order of epochs and steps) cut into groups of
  micro_batch_size videos, each padded to its own bucket (`_micro_bucket`; THUMOS mode);
  with micro_batch_size 1 the groups keep the batch order, otherwise they follow the videos
  sorted by length (stable), so that each group holds videos of similar lengths. Host p takes
  rows [p k, (p + 1) k) of every group, k = group size // host.count. Pure numpy.
  """
  o, p = options, host.index
  seed, mode, max_len, batching = o.seed, o.mode, o.max_len, o.batching
  n, size = len(lengths), o.global_batch_size
  micro_bucket = _micro_bucket(lengths, o)
  steps = n // size
  group_size = o.micro_batch_size if batching == 'micro' else size
  epoch, first = start_epoch, start_batch
  while True:
    order = sampling.epoch_order(seed, epoch, n)
    for b in range(first, steps):
      global_rows = order[b * size : (b + 1) * size]
      used = lengths[global_rows] if max_len is None else np.minimum(lengths[global_rows], max_len)
      if mode == 'thumos' and batching == 'micro' and group_size > 1:
        sequence = np.argsort(used, kind='stable')
      else:
        sequence = np.arange(size)
      step = []
      for g in range(0, size, group_size):
        members = sequence[g : g + group_size]
        if mode != 'thumos':
          t_pad = o.t_s
        elif batching == 'exact':
          t_pad = sampling.bucket_length(used[members].max(), o.bucket_size)
        else:
          t_pad = micro_bucket(used[members].max())
        share = group_size // host.count
        rows = []
        for position in members[p * share : (p + 1) * share]:
          v = int(global_rows[position])
          rng = sampling.video_rng(seed, epoch, v)
          if mode == 'thumos':
            idx = sampling.crop_indices(int(lengths[v]), max_len, rng)
          else:
            idx = sampling.random_bin_indices(int(lengths[v]), o.t_s, rng)
          rows.append((v, idx, int(position)))
        step.append((int(t_pad), rows))
      yield step
    epoch, first = epoch + 1, 0


def micro_lengths(lengths: np.ndarray, options: BatchingOptions) -> list[int]:
  """Every padded length T a 'micro' run's micro-batches can have (`plan_steps`), sorted.

  A group is padded to the bucket of its longest video, so the buckets of the single videos
  hold every group's; known before the first step, whatever the epoch, so that the programs
  can be compiled ahead of need (`micro.make_micro_train_step(...).precompile`).
  """
  o = options
  if o.batching != 'micro':
    raise ValueError(f"micro_lengths needs batching='micro', got {o.batching!r}")
  if o.mode != 'thumos':
    return [int(o.t_s)]
  used = np.asarray(lengths) if o.max_len is None else np.minimum(lengths, o.max_len)
  bucket = _micro_bucket(lengths, o)
  return sorted({bucket(int(t)) for t in used})


def _micro_bucket(lengths, options: BatchingOptions):
  """length -> padded length of a 'micro' micro-batch whose longest video has that length:
  the geometric edges, or `micro_buckets` edges fitted to the (cropped) training `lengths`."""
  o = options
  if not o.micro_buckets or o.batching != 'micro' or o.mode != 'thumos':
    return lambda t: sampling.geometric_bucket_length(int(t), o.bucket_growth)
  used = np.asarray(lengths) if o.max_len is None else np.minimum(lengths, o.max_len)
  edges = sampling.fitted_bucket_edges(used, o.micro_buckets)
  return lambda t: sampling.fitted_bucket_length(int(t), edges)


class ShardSubset:
  """One subset of a shard directory: manifest, lengths, random access to the records."""

  def __init__(self, shards_dir: str, subset: str, verify: bool):
    self.manifest = load_manifest(shards_dir)
    if verify:
      manifest_lib.verify_shards(shards_dir, self.manifest, subset)
    self.index = shards.RecordIndex(manifest_lib.shard_paths(shards_dir, self.manifest, subset))
    table = self.manifest['videos'][subset]
    if len(self.index) != len(table):
      raise ValueError(
        f'{shards_dir}: {len(self.index)} {subset} records but the manifest lists {len(table)}'
      )
    self.lengths = np.array([v['num_snippets'] for v in table], np.int64)
    self.feature_dim = int(self.manifest['feature_dim'])
    self.num_classes = int(self.manifest['num_classes'])

  def dataset(self, rows, extra_keys: bool, contiguous: bool, position: bool = False):
    """rows: generator of (serialized, video_index, indices [n], t_pad[, position]) -> tf.data.

    contiguous: the indices are always a range (THUMOS mode): slice instead of gather, which
    aliases the decoded buffer when the range is the whole video. position: the rows carry the
    video's position in its global batch, output as 'position' (micro-batching).
    """
    # Imported here: the planning above (plan_steps, the options) is TensorFlow-free, for the
    # resident and numpy paths (numpy_pipeline.py).
    from issf_common.tensorflow_cpu import tf

    signature = (
      tf.TensorSpec([], tf.string),
      tf.TensorSpec([], tf.int32),
      tf.TensorSpec([None], tf.int32),
      tf.TensorSpec([], tf.int32),
    ) + ((tf.TensorSpec([], tf.int32),) if position else ())
    d, c = self.feature_dim, self.num_classes

    def parse(serialized, video_index, indices, t_pad, pos=None):
      ex = shards.parse_example(serialized, d, c)
      n = tf.shape(indices)[0]
      if contiguous:
        start = tf.concat([indices, [0]], 0)[0]  # 0 for an empty (padding) row.
        x = ex['features'][start : start + n]
      else:
        x = tf.gather(ex['features'], indices)
      x = tf.pad(x, [[0, t_pad - n], [0, 0]])
      out = {
        'features': tf.ensure_shape(x, [None, d]),
        'mask': tf.sequence_mask(n, t_pad),
        'labels': ex['labels'],
        'video_index': video_index,
        'length': n,
      }
      if pos is not None:
        out['position'] = pos
      if extra_keys:
        out['valid'] = video_index >= 0
        out['num_snippets_orig'] = tf.cast(ex['num_snippets'], tf.int32)
      return out

    ds = tf.data.Dataset.from_generator(rows, output_signature=signature)
    # parse has no Python control flow: skipping AutoGraph halves the tracing time.
    parse = tf.autograph.experimental.do_not_convert(parse)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def padding_record(self, subset: str) -> bytes:
    """An Example with T = 0 and zero labels: becomes an all-zero, all-masked row."""
    return shards.encode_example(
      np.zeros((0, self.feature_dim), np.float32),
      np.zeros(self.num_classes, np.float32),
      video_id='',
      video_index=-1,
      duration=0.0,
      subset=subset,
    )


def _batched(ds, batch: int, prefetch: int):
  from issf_common.tensorflow_cpu import tf

  options = tf.data.Options()
  options.deterministic = True
  return ds.batch(batch).prefetch(prefetch).with_options(options)


class _PipelineIterator:
  """Batches from a tf.data pipeline until `close()` (also done at exit), then StopIteration."""

  def _start(self, ds) -> None:
    self._it = ds.as_numpy_iterator()
    _OPEN.add(self)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    return self._next()

  def _next(self) -> dict:
    raise NotImplementedError

  def close(self) -> None:
    """Stops the pipeline; a TrainIterator's `state()` stays valid for resuming."""
    self._it = None
    _OPEN.discard(self)


class TrainIterator(_PipelineIterator):
  """Infinite iterator of the training batches of `shards_dir` planned by `options` (module
  docstring); `state()` resumes it exactly.

  start_epoch / start_batch: where to start (a `state()`). verify: check the train shards'
  sha256 against the manifest first (ChecksumError). host: this process's share (default
  `Host.current()`). prefetch: batches tf.data prepares ahead.
  """

  def __init__(
    self,
    shards_dir: str,
    options: BatchingOptions,
    *,
    start_epoch: int = 0,
    start_batch: int = 0,
    host: Host | None = None,
    verify: bool = True,
    prefetch: int = 2,
  ):
    host = host or Host.current()
    n_hosts = host.count
    options.check(n_hosts)
    src = ShardSubset(shards_dir, 'train', verify)
    size = options.global_batch_size
    self._position = Position(len(src.lengths), size, start_epoch, start_batch)
    self.steps_per_epoch = self._position.steps_per_epoch
    self.global_batch_size = size
    self.host_batch_size = size // n_hosts
    self.manifest = src.manifest
    self.shape_counts: collections.Counter = collections.Counter()
    plan = plan_steps(
      src.lengths, options, start_epoch=self._position.epoch, start_batch=self._position.batch,
      host=host,
    )  # fmt: skip
    micro = options.batching == 'micro'
    self.micro_batches_per_step = size // options.micro_batch_size if micro else 0
    group_rows = options.micro_batch_size // n_hosts if micro else self.host_batch_size

    def rows():
      for step in plan:
        for t_pad, group in step:
          for v, idx, position in group:
            row = (src.index.read(v), np.int32(v), idx, np.int32(t_pad))
            yield row + (np.int32(position),) if micro else row

    ds = src.dataset(rows, False, contiguous=options.mode == 'thumos', position=micro)
    ds = _batched(ds, group_rows, prefetch)
    self._start(ds)

  def _next(self) -> dict:
    if self.micro_batches_per_step:
      batch = [self._next_group() for _ in range(self.micro_batches_per_step)]
    else:
      batch = self._next_group()
    self._position.advance()
    return batch

  def _next_group(self) -> dict:
    batch = next(self._it)
    shape = batch['features'].shape
    if shape not in self.shape_counts:
      logging.info('input pipeline: new batch shape %s (%d before)', shape, len(self.shape_counts))
    self.shape_counts[shape] += 1
    return batch

  @property
  def num_distinct_shapes(self) -> int:
    return len(self.shape_counts)

  def state(self) -> dict:
    """Position of the NEXT batch: pass it back as start_epoch / start_batch to resume."""
    return self._position.state()


# The training batches of a shard folder: `create_train_iterator(shards_dir, options, ...)`.
create_train_iterator = TrainIterator


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """How evaluation batches are shaped: `batch_size` videos per global batch; `mode` 'thumos'
  (full length, T padded to a multiple of bucket_size) | 'activitynet' (t_s snippets sampled)."""

  batch_size: int
  mode: str
  bucket_size: int = 64
  t_s: int = 75

  @classmethod
  def from_data_config(cls, data, batch_size: int) -> 'EvalOptions':
    """Mode, bucket size and T_s of a config's `data` section, as training uses them."""
    return cls(batch_size, data.mode, data.bucket_size, data.t_s)


def create_eval_iterator(
  shards_dir: str,
  options: EvalOptions,
  *,
  subset: str = 'test',
  host: Host | None = None,
  verify: bool = True,
  order: str = 'manifest',
) -> Iterator[dict]:
  """Every video of `subset` once, in manifest order (or by length), as batches.

  options.batch_size is the global batch (each host gets batch_size // host.count rows of each
  global batch, like training); all hosts yield the same number of batches with the same shapes.
  Batches carry the training keys plus 'valid' [B] bool (padding rows of the last batch:
  all-zero, mask False, video_index -1) and 'num_snippets_orig' [B] int32 (the video's T before
  sampling; 'activitynet' mode only). 'thumos': the full video, T bucketed as in training.
  'activitynet': `sampling.uniform_indices`, padded to t_s.
  order: 'manifest', or 'length' (shortest first, ties in manifest order) for a pass whose
  result does not depend on the order (the memory initialisation): a batch then pads its
  videos to about their own length, and fewer padded lengths mean fewer compiled programs.
  """
  batch_size, mode, t_s = options.batch_size, options.mode, options.t_s
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  host = host or Host.current()
  p, n_hosts = host.index, host.count
  if batch_size % n_hosts:
    raise ValueError(f'batch_size {batch_size} not divisible by {n_hosts} hosts')
  src = ShardSubset(shards_dir, subset, verify)
  lengths, n, bh = src.lengths, len(src.lengths), batch_size // n_hosts
  pad_record = src.padding_record(subset)
  empty = np.zeros(0, np.int32)

  sequence = sampling.eval_sequence(lengths, batch_size, order)  # n: a padding row
  if mode == 'thumos':
    padded = sampling.eval_padded_lengths(lengths, batch_size, order, options.bucket_size)

  def rows():
    for start in range(0, n, batch_size):
      global_rows = sequence[start : start + batch_size]
      t_pad = padded[start // batch_size] if mode == 'thumos' else t_s
      for v in global_rows[p * bh : (p + 1) * bh]:
        if v >= n:
          yield pad_record, np.int32(-1), empty, np.int32(t_pad)
          continue
        t = int(lengths[v])
        idx = np.arange(t, dtype=np.int32) if mode == 'thumos' else sampling.uniform_indices(t, t_s)
        yield src.index.read(int(v)), np.int32(v), idx, np.int32(t_pad)

  ds = _batched(src.dataset(rows, True, contiguous=mode == 'thumos'), bh, 2)
  return _EvalIterator(ds, drop=('num_snippets_orig',) if mode == 'thumos' else ())


class _EvalIterator(_PipelineIterator):
  """One pass over a batched dataset; closable like TrainIterator."""

  def __init__(self, ds, drop: tuple[str, ...]):
    self._drop = drop
    self._start(ds)

  def _next(self) -> dict:
    try:
      batch = next(self._it)
    except StopIteration:
      self.close()
      raise
    for key in self._drop:
      del batch[key]
    return batch
