"""Device-resident training features: the same batches as tf.data, bitwise, and the same resume.

The tf.data batch is taken as the trainer feeds it (`step.pad_batch`, then on the mesh); the
resident iterator's batches are already on the mesh. Both modes of batching, two epochs (an
epoch boundary), then a resume from `state()` in the middle; and three train steps from either
source give bitwise the same state; the gather on the host (CPU devices) and on the devices
give the same batches. 'auto' on CPU: on when the set takes at most a quarter of the host's
memory.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from data_pipelines import input_pipeline, prepare, resident, synthetic
from issf_jax import sharding
from issf_jax.train import step as step_lib
from tests.conftest import FAST_COMPILE, TINY_TRAIN_OVERRIDES, synthetic_config

OPTIONS = input_pipeline.BatchingOptions(global_batch_size=4, seed=7, mode='thumos', bucket_size=16)


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  src = synthetic.generate(str(tmp_path_factory.mktemp('src')), scale='tiny', seed=5)
  out = str(tmp_path_factory.mktemp('shards'))
  prepare.convert('wtalc', src, out, videos_per_shard=5)
  return out


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh(1)


def _tf_batches(shards, mesh, n, **options):
  it = input_pipeline.create_train_iterator(
    shards, dataclasses.replace(OPTIONS, **options), host=input_pipeline.Host()
  )

  def feed(b):
    return jax.device_get(sharding.shard_batch(sharding.pad_batch(b, 1), mesh))

  out = []
  for _ in range(n):
    b = next(it)
    out.append([feed(x) for x in b] if isinstance(b, list) else [feed(b)])
  state = it.state()
  it.close()
  return out, state


def _resident_batches(shards, mesh, n, start_epoch=0, start_batch=0, host_gather=None, **options):
  it = resident.ResidentTrainIterator(
    shards, mesh, dataclasses.replace(OPTIONS, **options), start_epoch=start_epoch,
    start_batch=start_batch, host_gather=host_gather,
  )  # fmt: skip
  assert it.host_gather is (True if host_gather is None else host_gather)  # CPU: on the host
  out = []
  for i in range(n):
    template = it.template() if i % 2 else None  # peeks: the batches stay tf.data's
    b = next(it)
    if template is not None:  # what the trainer precompiles is what the step gets
      _assert_template_of(template, b)
    out.append([jax.device_get(x) for x in b] if isinstance(b, list) else [jax.device_get(b)])
  it.close()
  return out, it.state()


def _assert_template_of(template, batch):
  template, batch = (template, batch) if isinstance(batch, list) else ([template], [batch])
  assert len(template) == len(batch)
  for spec, x in zip(template, batch, strict=True):
    assert spec.keys() == x.keys()
    for k, v in x.items():
      assert isinstance(spec[k], jax.ShapeDtypeStruct), k
      assert (spec[k].shape, spec[k].dtype, spec[k].sharding) == (v.shape, v.dtype, v.sharding), k


def _assert_same(a, b):
  assert len(a) == len(b)
  for step_a, step_b in zip(a, b, strict=True):
    assert len(step_a) == len(step_b)
    for x, y in zip(step_a, step_b, strict=True):
      assert x.keys() == y.keys()
      for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        assert x[k].tobytes() == y[k].tobytes(), k


@pytest.mark.parametrize(
  'batching', [{}, {'batching': 'micro', 'micro_batch_size': 1}, {'batching': 'micro',
                                                                  'micro_batch_size': 2}]
)  # fmt: skip
def test_resident_batches_and_resume_equal_tf_data(shards, mesh, batching):
  want, want_state = _tf_batches(shards, mesh, 12, **batching)
  got, got_state = _resident_batches(shards, mesh, 12, **batching)
  assert got_state == want_state == {'epoch': 2, 'batch': 0}
  _assert_same(got, want)
  if batching:  # micro-batches are padded to their own bucket, not the batch's
    assert len({x['features'].shape[1] for step in got for x in step}) > 1
  resumed, _ = _resident_batches(shards, mesh, 5, start_epoch=1, start_batch=1, **batching)
  _assert_same(resumed, want[7:])
  on_devices, _ = _resident_batches(shards, mesh, 12, host_gather=False, **batching)
  _assert_same(on_devices, want)


def test_same_training_steps_from_either_source(shards, mesh):
  overrides = dict(TINY_TRAIN_OVERRIDES, **{'data.bucket_size': 96})
  c = synthetic_config(shards, overrides)
  c.model.feature_dim = c.model.embed_dim = input_pipeline.load_manifest(shards)['feature_dim']
  step = step_lib.make_train_step(
    c, mesh, memory_ready=False, steps_per_epoch=6, compiler_options=FAST_COMPILE
  )
  create = jax.jit(lambda k: step_lib.create_train_state(c, k), compiler_options=FAST_COMPILE)
  key = jax.random.key_data(jax.random.key(0))
  options = input_pipeline.BatchingOptions(
    global_batch_size=4, seed=3, mode='thumos', bucket_size=96
  )
  tf_it = input_pipeline.create_train_iterator(shards, options, host=input_pipeline.Host())
  res_it = resident.ResidentTrainIterator(shards, mesh, options)
  finals = []
  for feed in (
    lambda: sharding.shard_batch(sharding.pad_batch(next(tf_it), 1), mesh),
    lambda: next(res_it),
  ):
    state = sharding.replicate(create(jax.random.key(1)), mesh)
    for _ in range(3):
      state, _ = step(state, feed(), key)
    finals.append(jax.device_get(state))
  tf_it.close()
  for x, y in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_auto_on_cpu_follows_host_memory_and_on_off_are_obeyed(shards, mesh, monkeypatch):
  manifest = input_pipeline.load_manifest(shards)
  lengths = [v['num_snippets'] for v in manifest['videos']['train']]
  size = resident.train_set_bytes(manifest)
  assert size == 4 * sum(lengths) * manifest['feature_dim']
  for host_bytes, want in ((4 * size, True), (4 * size - 1, False), (None, False)):
    monkeypatch.setattr(resident, 'host_memory_bytes', lambda b=host_bytes: b)
    assert resident.use_resident('auto', manifest, mesh) is want, host_bytes
  assert resident.use_resident('on', manifest, mesh)
  assert not resident.use_resident('off', manifest, mesh)
  with pytest.raises(ValueError, match='data.resident'):
    resident.use_resident('yes', manifest, mesh)


def test_a_record_that_disagrees_with_the_manifest_is_refused(shards, mesh, tmp_path):
  import json
  import shutil

  copy = tmp_path / 'shards'
  shutil.copytree(shards, copy)
  manifest = json.loads((copy / 'manifest.json').read_text())
  video = manifest['videos']['train'][0]
  video['num_snippets'] += 1
  (copy / 'manifest.json').write_text(json.dumps(manifest))
  # The features load in a thread (while the trainer compiles); the first batch reports it.
  it = resident.ResidentTrainIterator(str(copy), mesh, OPTIONS)
  with pytest.raises(ValueError, match=f'{video["video_id"]} has features of shape'):
    next(it)
  it.close()
