"""Shard folders and run folders on a non-local file system: TensorFlow's in-memory `ram://`.

The stack here has no bucket, but TensorFlow's file systems include `ram://` (in the process's
memory), and etils.epath, the path library the code uses (`issf_common/paths.py`), sends URL
schemes to TensorFlow's file systems through its own `tf_backend`, exactly as it does for gs://
when TensorFlow is installed. epath knows gs://, s3://, az:// and hf:// by name, so the test
registers `ram://` with it (`RamPath`, below: epath's own path class, told which scheme to send
to TensorFlow). A `ram://` path handed to `open()` or `os.path` would become a local relative
path `ram:/...`: the tests run in an empty working directory and check that nothing lands there.

What this does not cover: Orbax checkpoints (Orbax writes arrays through TensorStore, which knows
local paths, gs:// and s3:// only, not ram://) and a real bucket's latency, consistency or
permissions.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from etils import epath
from etils.epath import backend, gpath

from data_pipelines import input_pipeline, manifest, prepare, shards, synthetic
from issf_common import paths
from issf_common.tensorflow_cpu import tf
from issf_jax.repro import runs
from issf_jax.train import evaluator, metrics_writer, restore, run_dir, run_lock
from tests.conftest import synthetic_config


@epath.register_path_cls('ram://')
class RamPath(gpath.PosixGPath):
  """`ram://a/b` through epath's TensorFlow backend (pathlib reads it as the parts 'ram:', ...)."""

  @property
  def _uri_scheme(self):
    return 'ram' if self.parts[:1] == ('ram:',) else None

  @property
  def _backend(self):
    return backend.tf_backend if self._uri_scheme else super()._backend

  @property
  def _path_str(self) -> str:
    if self._uri_scheme:
      return 'ram://' + '/'.join(self.parts[1:])
    return super()._path_str


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
  """Runs each test in an empty folder; after it, nothing may have been written there."""
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield
  assert sorted(p.name for p in cwd.iterdir()) == []


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A tiny synthetic W-TALC release (24 train / 16 test videos, D = 64), local."""
  return synthetic.generate(str(tmp_path_factory.mktemp('src')), scale='tiny', seed=3)


def _ram(name: str) -> str:
  return f'ram://issf-{uuid.uuid4().hex[:8]}/{name}'


def test_the_scheme_is_tensorflows_memory():
  url = _ram('probe')
  assert isinstance(paths.path(url), RamPath) and str(paths.path(url)) == url
  assert paths.join(url, 'a', 'b.json') == url + '/a/b.json'
  assert paths.absolute(url) == url and paths.absolute('gs://b/run') == 'gs://b/run'
  paths.write_atomic(paths.join(url, 'x.txt'), 'hello')
  assert tf.io.gfile.listdir(url) == ['x.txt']  # written through TensorFlow, not the disk
  assert paths.read_text(paths.join(url, 'x.txt')) == 'hello'


def test_shards_on_ram_equal_the_local_ones(source, tmp_path):
  local, remote = str(tmp_path / 'shards'), _ram('shards')
  want = prepare.convert('wtalc', source, local, videos_per_shard=7)
  got = prepare.convert('wtalc', source, remote, videos_per_shard=7)
  assert got == want  # same files, sizes and sha256
  names = sorted(s['file'] for subset in got['shards'].values() for s in subset)
  assert sorted(tf.io.gfile.listdir(remote)) == sorted(
    [*names, manifest.MANIFEST, manifest.GROUND_TRUTH]
  )  # fmt: skip

  # Read back: the manifest, the ground truth (sha256 checked), every shard verified and scanned.
  assert manifest.load_manifest(remote) == want
  assert manifest.load_ground_truth(remote) == manifest.load_ground_truth(local)
  for subset in ('train', 'test'):
    manifest.verify_shards(remote, got, subset)
    a = shards.RecordIndex(manifest.shard_paths(local, want, subset))
    b = shards.RecordIndex(manifest.shard_paths(remote, got, subset))
    assert len(a) == len(b) == want['counts'][subset]
    for i in range(len(a)):
      assert a.read(i) == b.read(i)

  # The training batches tf.data makes from them.
  options = input_pipeline.BatchingOptions(
    global_batch_size=4, seed=7, mode='thumos', bucket_size=16
  )
  batches = []
  for folder in (local, remote):
    it = input_pipeline.create_train_iterator(folder, options)
    batches.append([next(it) for _ in range(8)])
    it.close()
  for x, y in zip(*batches, strict=True):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_a_damaged_shard_on_ram_is_named(source):
  remote = _ram('shards')
  got = prepare.convert('wtalc', source, remote)
  shard = paths.join(remote, got['shards']['test'][0]['file'])
  data = tf.io.gfile.GFile(shard, 'rb').read()
  with tf.io.gfile.GFile(shard, 'wb') as f:
    f.write(data[:-3])
  with pytest.raises(manifest.ChecksumError, match=shard):
    manifest.verify_shards(remote, got, 'test')


def test_run_folder_files_on_ram(tmp_path):
  workdir = _ram('run')
  config = synthetic_config('ram://elsewhere/shards', {'train.batch_size': 4})
  with run_lock.hold(workdir):  # an object store has no flock: nothing is taken or written
    run_dir.write_run_info(config, workdir)
  assert sorted(tf.io.gfile.listdir(workdir)) == ['config.json', 'git_revision.txt']
  assert restore.load_config(workdir).train.batch_size == 4
  assert run_dir.check_resume_config(config, workdir, step=8) == {}
  with config.unlocked():
    config.data.eval_batch_size = 3  # an evaluation setting: allowed; the old config is kept
  changes = run_dir.check_resume_config(config, workdir, step=8)
  assert list(changes) == ['data.eval_batch_size']
  kept = run_dir.write_run_info(config, workdir, step=8, changes=changes)
  assert kept == paths.join(workdir, 'config.before_step_8.json')
  assert json.loads(paths.read_text(kept))['data']['eval_batch_size'] != 3
  assert restore.load_config(workdir).data.eval_batch_size == 3

  writer = metrics_writer.MetricsWriter(workdir, resume_step=0)
  for step in (1, 2, 3):
    writer.write(step, {'loss': 1.0 / step, 'bad': float('nan')})
  writer.close()
  path = paths.join(workdir, metrics_writer.METRICS_FILE)
  assert [r['step'] for r in metrics_writer.read_records(path)] == [1, 2, 3]
  assert metrics_writer.read_records(path)[0] == {'step': 1, 'loss': 1.0, 'bad': None}
  assert tf.io.gfile.listdir(paths.join(workdir, metrics_writer.TENSORBOARD_DIR))
  # A resume from step 2 drops the later record and rebuilds TensorBoard from the rest.
  metrics_writer.MetricsWriter(workdir, resume_step=2).close()
  assert [r['step'] for r in metrics_writer.read_records(path)] == [1, 2]

  out = evaluator.write_json(paths.join(workdir, 'eval', 'step_8.json'), {'mAP': [1.5, np.nan]})
  assert json.loads(paths.read_text(out)) == {'mAP': [1.5, None]}
  leftovers = [n for n in tf.io.gfile.listdir(workdir) if n.endswith(paths.PARTIAL_SUFFIX)]
  assert leftovers == []


def test_repro_run_folders_on_ram():
  directory = runs.run_directory(_ram('repro'), 'k' * 40)
  assert (
    runs.load_result(directory, 'k' * 40) is None and runs.latest_checkpoint_step(directory) == 0
  )
  runs.write_json_atomic(paths.join(directory, runs.RESULT_FILE), {'key': 'k' * 40, 'x': np.inf})
  assert runs.load_result(directory, 'k' * 40) == {'key': 'k' * 40, 'x': None}
  assert runs.load_result(directory, 'other') is None
  for step in ('6', '12'):
    paths.makedirs(paths.join(directory, 'checkpoints', step))
  assert runs.latest_checkpoint_step(directory) == 12
  records = [{'step': 6, 'eval/average_mAP': 0.25}, {'step': 7, 'loss': 1.0}]
  paths.write_atomic(
    paths.join(directory, 'metrics.jsonl'), ''.join(json.dumps(r) + '\n' for r in records)
  )
  assert runs.read_eval_history(directory) == {6: {'average_mAP': 0.25}}
