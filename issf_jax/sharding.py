"""Where arrays live: the 1-D `data` mesh, replicated state, sharded batches, host copies.

Data parallelism is one mesh axis, `data`, over every device of every process. The train
state is replicated (`replicate`); each global batch of videos is split over `data`
(`shard_batch`), each process giving the rows it read (`DeviceIterator` puts the input
pipeline's host batches there, padded by `pad_batch` so each device takes as many videos).
`host_value` brings a replicated array back as numpy, also when its devices span processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over the first `num_devices` devices (all by default)."""
  from issf_common import errors

  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise errors.ConfigError(
        f'train.num_devices = {num_devices}, but only {len(devices)} devices are present'
      )
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  """The sharding of a value held whole by every device of `mesh`."""
  return NamedSharding(mesh, P())


def replicate(tree, mesh):
  """Places a pytree on every device of the mesh."""
  if jax.process_count() > 1:
    # jax 0.10.2: device_put of a jax.Array onto devices of other processes builds a broken
    # array ("input arrays must have one shard each"); from host numpy it works.
    tree = jax.device_get(tree)
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: dict, mesh) -> dict:
  """Places a host-local numpy batch on the mesh, split over `data` (multi-host safe)."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }


def pad_batch(batch: dict, multiple: int, offset: int = 0) -> dict:
  """Adds `valid` and `position`, and pads the video axis to a multiple of `multiple`.

  Args:
    batch: a host-local numpy batch.
    multiple: the local device count (each device takes the same number of videos).
    offset: this host's first position in the global batch (process_index * host batch).
  Padding videos are all-zero with `valid` 0, `position` and `video_index` -1; they change
  neither the loss, the gradient nor the memory.
  """
  size = len(batch['features'])
  batch = dict(batch)
  batch.setdefault('valid', np.ones(size, np.float32))
  batch.setdefault('position', np.arange(offset, offset + size, dtype=np.int32))
  batch.pop('length', None)
  extra = (-size) % multiple
  if not extra:
    return batch
  padded = {}
  for k, v in batch.items():
    v = np.asarray(v)
    fill = -1 if k in ('video_index', 'position') else 0
    pad = np.full((extra,) + v.shape[1:], fill, v.dtype)
    padded[k] = np.concatenate([v, pad])
  return padded


def local_device_count(mesh) -> int:
  """The devices of `mesh` that belong to this process."""
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def place_batch(batch: dict, mesh) -> dict:
  """This process's host batch -> its rows of the global batch on the mesh (padded)."""
  size = len(batch['features'])
  batch = pad_batch(batch, local_device_count(mesh), offset=jax.process_index() * size)
  return shard_batch(batch, mesh)


class DeviceIterator:
  """The input pipeline's host batches, placed on the mesh (`place_batch`) as they are taken.

  `state()` and `close()` are the wrapped iterator's, so a checkpoint stores its position.
  """

  def __init__(self, host_iterator, mesh):
    self._it, self.mesh = host_iterator, mesh

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict | list[dict]:
    batch = next(self._it)
    if isinstance(batch, list):  # one optimizer step's micro-batches (data.batching='micro')
      return [place_batch(b, self.mesh) for b in batch]
    return place_batch(batch, self.mesh)

  def state(self) -> dict:
    return self._it.state()

  def close(self) -> None:
    self._it.close()


def host_value(tree):
  """Host numpy copies of (replicated, possibly multi-process) arrays."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_shards[0].data)  # replicated: any shard is the whole
    return np.asarray(x)

  return jax.tree.map(one, tree)
