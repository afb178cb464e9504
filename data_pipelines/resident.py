"""Training batches gathered from features kept resident in memory, not read through tf.data.

The THUMOS14 training set is 534 MB in float32: it fits in any accelerator's memory, and
feeding it through tf.data each step (host decode, pad, copy over PCIe) would cost more than a
GPU's step. `ResidentTrainIterator` keeps the prepared training features as one flat float32
[S + 1, D] array (all videos' snippets one after another, then a zero row for padding) and
makes each batch by a gather: on accelerators the array is copied once to every device of the
mesh and the gather runs there, so only the plan crosses from the host each step (gather
indices int32 [B, T] and the small per-video arrays); on CPU devices, whose memory is the
host's, the array stays one NumPy array and the gather is a NumPy take on the host (no copy
per device, no program to compile per batch shape). The features load in a thread from the
constructor on; `template()` gives the next step's batch as ShapeDtypeStructs from the plan
alone, so the trainer compiles the step meanwhile, and the first `next` waits for the load.

The plan is the tf.data pipeline's own (`input_pipeline.plan_steps`: the same epoch order,
crops, buckets and micro-batches from (seed, epoch, batch)), so the batches are bitwise the ones
that `sharding.DeviceIterator` places from `create_train_iterator`'s, with the same `state()` for
exact resumption. Its batches are already sharded over the mesh's `data` axis (keys of the
train step: features, mask, labels, video_index, valid, position).

`use_resident(setting, manifest, mesh)` decides for `config.data.resident`: 'on', 'off', or
'auto' = on when the set takes at most a quarter of the memory that holds it: the smallest
device memory on accelerators (room left for the step's activations), the host's physical
memory on CPU. On a 2-core CPU the tf.data pipeline's decoding and padding threads compete
with the step for the cores: THUMOS14-shaped warm-up epochs took 24.5-27.9 s resident against
28.6-31.9 s through tf.data, about 12 % (docs/results.md, "Device-resident features").
"""

from __future__ import annotations

import concurrent.futures
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from data_pipelines import input_pipeline, shards

SETTINGS = ('auto', 'on', 'off')
AXIS = 'data'  # the mesh axis of `issf_jax.train.step`
FRACTION_OF_DEVICE_MEMORY = 0.25
FRACTION_OF_HOST_MEMORY = 0.25  # CPU devices: of the host's physical memory


def cpu_only(mesh) -> bool:
  """Whether every device of `mesh` is a CPU, whose memory is the host's."""
  return all(d.platform == 'cpu' for d in mesh.devices.flat)


def host_memory_bytes() -> int | None:
  """The host's physical memory, or None where the platform does not say."""
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (AttributeError, OSError, ValueError):
    return None


def train_set_bytes(manifest: dict) -> int:
  """Bytes of the training features in float32 (one replica)."""
  snippets = sum(v['num_snippets'] for v in manifest['videos']['train'])
  return 4 * snippets * int(manifest['feature_dim'])


def use_resident(setting: str, manifest: dict, mesh) -> bool:
  """Whether to keep the training features on the devices (module docstring)."""
  if setting not in SETTINGS:
    raise ValueError(f'data.resident must be one of {SETTINGS}, got {setting!r}')
  if setting != 'auto':
    return setting == 'on'
  if cpu_only(mesh):  # one host copy (`ResidentTrainIterator`)
    host = host_memory_bytes()
    return host is not None and train_set_bytes(manifest) <= FRACTION_OF_HOST_MEMORY * host
  devices = list(mesh.devices.flat)
  if any(d.platform == 'cpu' for d in devices):
    return False
  limits = []
  for d in devices:
    if d.process_index != jax.process_index():
      continue
    stats = d.memory_stats() or {}
    if 'bytes_limit' not in stats:
      return False
    limits.append(stats['bytes_limit'])
  return train_set_bytes(manifest) <= FRACTION_OF_DEVICE_MEMORY * min(limits)


def _pad_rows(batch: dict, multiple: int, offset: int) -> dict:
  """`step.pad_batch` (padding videos: zeros, index and position -1), numpy only."""
  size = len(batch['mask'])
  batch = dict(batch)
  batch.setdefault('valid', np.ones(size, np.float32))
  batch.setdefault('position', np.arange(offset, offset + size, dtype=np.int32))
  extra = (-size) % multiple
  if not extra:
    return batch
  out = {}
  for k, v in batch.items():
    fill = -1 if k in ('video_index', 'position') else 0
    out[k] = np.concatenate([v, np.full((extra,) + v.shape[1:], fill, v.dtype)])
  return out


class ResidentTrainIterator:
  """Infinite iterator of sharded training batches gathered on the devices (module docstring).

  Arguments as `input_pipeline.create_train_iterator`, plus the trainer's `mesh`; the host and
  host count are jax.process_index() / jax.process_count(). Yields a dict per step ('exact') or
  a list of dicts, one per micro-batch ('micro'). host_gather: gather on the host (NumPy)
  instead of on the devices; None: on the host where the mesh's devices are CPUs.
  """

  def __init__(
    self,
    shards_dir: str,
    mesh,
    options: input_pipeline.BatchingOptions,
    *,
    start_epoch: int = 0,
    start_batch: int = 0,
    verify: bool = True,
    host_gather: bool | None = None,
  ):
    host = input_pipeline.Host.current()
    p, n_hosts = host.index, host.count
    options.check(n_hosts)
    src = input_pipeline.ShardSubset(shards_dir, 'train', verify)
    n = len(src.lengths)
    size = options.global_batch_size
    self._position = input_pipeline.Position(n, size, start_epoch, start_batch)
    self.steps_per_epoch = self._position.steps_per_epoch
    self.manifest = src.manifest
    self._micro = options.batching == 'micro'
    self._mesh, self._offset = mesh, p * (size // n_hosts)
    self._local_devices = len([d for d in mesh.devices.flat if d.process_index == p])

    self._starts = np.concatenate([[0], np.cumsum(src.lengths)[:-1]]).astype(np.int64)
    self._zero_row = int(src.lengths.sum())
    if self._zero_row + 1 > np.iinfo(np.int32).max:
      raise ValueError(f'{shards_dir}: {self._zero_row} training snippets overflow int32 indices')
    self.resident_bytes = 4 * (self._zero_row + 1) * src.feature_dim
    self._feature_dim, self._num_classes = src.feature_dim, src.num_classes
    self._sharding = NamedSharding(mesh, P(AXIS))
    if host_gather is None:
      host_gather = cpu_only(mesh)
    self.host_gather = host_gather
    self._features = self._labels = self._gather = None
    if not host_gather:
      self._gather = jax.jit(
        lambda table, idx: jnp.take(table, idx, axis=0, mode='clip'), out_shardings=self._sharding
      )
    self._plan = input_pipeline.plan_steps(
      src.lengths, options, start_epoch=self._position.epoch, start_batch=self._position.batch,
      host=host,
    )  # fmt: skip
    self._peeked = None  # the next step's plan, taken by `template`
    # Read in a thread (1.7-2.9 s for THUMOS14 on 2 cores), so that the trainer compiles the
    # phase's programs from `template` meanwhile; the first `next` waits for it.
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='resident-features')
    self._loading = pool.submit(self._load, src, shards_dir)
    pool.shutdown(wait=False)

  def _load(self, src: input_pipeline.ShardSubset, shards_dir: str):
    """(features: the flat [S + 1, D] array, on the devices unless `host_gather`; labels:
    float32 [N, C]), read from the records."""
    # Filled in place: a list of the videos' arrays and its concatenation would hold the set
    # twice at once.
    flat = np.zeros((self._zero_row + 1, src.feature_dim), np.float32)
    labels = []
    for v in range(len(src.lengths)):
      ex = shards.decode_numpy(src.index.read(v))
      if ex['features'].shape != (src.lengths[v], src.feature_dim):
        raise ValueError(
          f'{shards_dir}: training video {ex["video_id"]} has features of shape '
          f'{ex["features"].shape}, the manifest says {(int(src.lengths[v]), src.feature_dim)}'
        )
      flat[self._starts[v] : self._starts[v] + len(ex['features'])] = ex['features']
      labels.append(ex['labels'])
    if not self.host_gather:
      flat = jax.device_put(flat, NamedSharding(self._mesh, P()))
    return flat, np.stack(labels)

  def _wait_for_features(self) -> None:
    if self._features is None:
      self._features, self._labels = self._loading.result()  # re-raises the reader's error

  def __iter__(self) -> ResidentTrainIterator:
    return self

  def _group(self, t_pad: int, rows, spec_only: bool = False) -> dict:
    count = len(rows)
    idx = np.full((count, t_pad), self._zero_row, np.int32)
    mask = np.zeros((count, t_pad), bool)
    for r, (v, indices, _) in enumerate(rows):
      idx[r, : len(indices)] = self._starts[v] + indices
      mask[r, : len(indices)] = True
    videos = [v for v, _, _ in rows]
    batch = {
      'gather': idx,
      'mask': mask,
      'labels': (
        np.zeros((count, self._num_classes), np.float32) if spec_only else self._labels[videos]
      ),
      'video_index': np.array(videos, np.int32),
    }
    if self._micro:
      batch['position'] = np.array([pos for _, _, pos in rows], np.int32)
    batch = _pad_rows(batch, self._local_devices, self._offset)
    batch['gather'][batch['valid'] == 0] = self._zero_row
    gather = batch.pop('gather')
    if spec_only:  # shapes only, nothing placed: every host's rows make the global batch
      hosts = self._mesh.devices.size // self._local_devices

      def spec(shape, dtype):
        return jax.ShapeDtypeStruct((shape[0] * hosts,) + shape[1:], dtype, sharding=self._sharding)

      out = {k: spec(v.shape, v.dtype) for k, v in batch.items()}
      out['features'] = spec(batch['mask'].shape + (self._feature_dim,), np.dtype(np.float32))
      return out
    if self.host_gather:
      batch['features'] = self._features[gather]
    out = {k: jax.make_array_from_process_local_data(self._sharding, v) for k, v in batch.items()}
    if not self.host_gather:
      out['features'] = self._gather(
        self._features, jax.make_array_from_process_local_data(self._sharding, gather)
      )
    return out

  def _next_plan(self):
    if self._plan is None:
      raise StopIteration
    if self._peeked is None:
      self._peeked = next(self._plan)
    return self._peeked

  def template(self):
    """The next step's batch as ShapeDtypeStructs (shapes, dtypes, shardings), without
    taking it and without waiting for the features: what the trainer compiles the step for."""
    groups = [self._group(t_pad, rows, spec_only=True) for t_pad, rows in self._next_plan()]
    return groups if self._micro else groups[0]

  def __next__(self):
    plan = self._next_plan()
    self._wait_for_features()
    groups = [self._group(t_pad, rows) for t_pad, rows in plan]
    self._peeked = None
    self._position.advance()
    return groups if self._micro else groups[0]

  def close(self) -> None:
    """Stops the iterator and frees the resident features; `state()` stays valid."""
    self._loading.exception()  # waits for the reader; its error, if any, is not ours to raise
    self._plan, self._features, self._peeked = None, None, None

  def state(self) -> dict:
    """Position of the NEXT batch: pass it back as start_epoch / start_batch to resume."""
    return self._position.state()
