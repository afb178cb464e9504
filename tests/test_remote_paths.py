"""Shard folders and run folders on a non-local file system: TensorFlow's in-memory `ram://`.

The stack here has no bucket, but TensorFlow's file systems include `ram://` (in the process's
memory), and etils.epath, the path library the code uses (`issf_common/paths.py`), sends URL
schemes to TensorFlow's file systems through its own `tf_backend`, exactly as it does for gs://
when TensorFlow is installed. epath knows gs://, s3://, az:// and hf:// by name, so the tests
register `ram://` with it (`tests/ram_scheme.py`: epath's own path class, told which scheme to
send to TensorFlow). A `ram://` path handed to `open()` or `os.path` would become a local relative
path `ram:/...`: the tests run in an empty working directory and check that nothing lands there.

What this does not cover: Orbax checkpoints (Orbax writes arrays through TensorStore, which knows
local paths, gs:// and s3:// only, not ram://) and a real bucket's latency, consistency or
permissions.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import uuid

import numpy as np
import pytest

from data_pipelines import (
  input_pipeline,
  manifest,
  one_video,
  prepare,
  shards,
  synthetic,
  wtalc,
)
from data_pipelines import source as source_lib
from issf_common import errors, paths
from issf_common.tensorflow_cpu import tf
from issf_jax.evaluation import ground_truth, prediction_file, read_ambiguous_txt
from issf_jax.repro import runs
from issf_jax.train import evaluator, metrics_writer, run_dir, run_lock
from launch import score
from tests.conftest import REPO_DIR, data_file, synthetic_config
from tests.ram_scheme import RamPath

GOLDEN = REPO_DIR / 'tests' / 'testdata' / 'official_eval'


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


def _ram_bytes(url: str) -> bytes:
  with tf.io.gfile.GFile(url, 'rb') as f:  # TensorFlow itself, not the code under test
    return f.read()


def _put(url: str, data: bytes | str) -> str:
  if tf.io.gfile.exists(url):  # ram:// appends to a file opened for writing (tests/ram_scheme.py)
    tf.io.gfile.remove(url)
  with tf.io.gfile.GFile(url, 'wb') as f:
    f.write(data.encode() if isinstance(data, str) else data)
  return url


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
  _put(shard, _ram_bytes(shard)[:-3])
  with pytest.raises(manifest.ChecksumError, match=shard):
    manifest.verify_shards(remote, got, 'test')


def test_run_folder_files_on_ram(tmp_path):
  workdir = _ram('run')
  config = synthetic_config('ram://elsewhere/shards', {'train.batch_size': 4})
  with run_lock.hold(workdir):  # an object store has no flock: nothing is taken or written
    run_dir.write_run_info(config, workdir)
  assert sorted(tf.io.gfile.listdir(workdir)) == ['config.json', 'git_revision.txt']
  assert run_dir.load_config(workdir).train.batch_size == 4
  assert run_dir.check_resume_config(config, workdir, step=8) == {}
  with config.unlocked():
    config.data.eval_batch_size = 3  # an evaluation setting: allowed; the old config is kept
  changes = run_dir.check_resume_config(config, workdir, step=8)
  assert list(changes) == ['data.eval_batch_size']
  kept = run_dir.write_run_info(config, workdir, step=8, changes=changes)
  assert kept == paths.join(workdir, 'config.before_step_8.json')
  assert json.loads(paths.read_text(kept))['data']['eval_batch_size'] != 3
  assert run_dir.load_config(workdir).data.eval_batch_size == 3

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
  writer = metrics_writer.MetricsWriter(workdir, resume_step=2)
  writer.write(3, {'eval/average_mAP': 0.25, 'eval/mAP@0.5': float('nan')})
  writer.close()
  logged = metrics_writer.logged_evaluation(workdir, 3)  # what issf-demo reports of a run
  assert logged['average_mAP'] == 0.25 and np.isnan(logged['mAP@0.5'])

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


def _same_tree(local: pathlib.Path, remote: str) -> list[str]:
  """Asserts that `remote` holds the files of `local`, byte for byte; returns their names."""
  names = sorted(str(p.relative_to(local)) for p in local.rglob('*') if p.is_file())
  remote_names = sorted(
    os.path.relpath(os.path.join(d, f), remote).replace(os.sep, '/')
    for d, _, files in tf.io.gfile.walk(remote)
    for f in files
  )
  assert remote_names == names
  for name in names:
    assert _ram_bytes(f'{remote}/{name}') == (local / name).read_bytes(), name
  return names


@pytest.mark.parametrize(
  'out_format,layout', [('wtalc', 'wtalc'), ('wtalc', 'rskp'), ('acmnet', 'wtalc')]
)
def test_released_packages_on_ram(out_format, layout, tmp_path):
  """The W-TALC (both layouts) and ACM-Net writers put the same bytes in ram:// as on disk, and
  issf-prepare --src ram://... converts them into the same shard folder as from the disk."""
  local, remote = tmp_path / 'src', _ram('src')
  kwargs = dict(scale='tiny', seed=5, layout=layout, out_format=out_format, num_train=6)
  synthetic.generate(str(local), num_test=4, **kwargs)
  synthetic.generate(remote, num_test=4, **kwargs)
  names = _same_tree(local, remote)
  assert any(n.endswith('.npy') for n in names) and len(names) >= 3

  fmt = 'acmnet' if out_format == 'acmnet' else 'wtalc'
  want = prepare.convert(fmt, str(local), str(tmp_path / 'a'), videos_per_shard=4)
  got = prepare.convert(fmt, remote, str(tmp_path / 'b'), videos_per_shard=4)
  # Same videos, shards and checksums; the source files by their paths relative to --src.
  assert got == want and want['counts'] == {'train': 6, 'test': 4}
  assert {f['path'] for f in got['source_files']} == set(names)


def test_bad_released_files_on_ram_are_named(tmp_path):
  remote = _ram('src')
  synthetic.generate(remote, scale='tiny', seed=5, num_train=6, num_test=4)
  features = paths.join(remote, 'Synthetic' + wtalc.FEATURES_SUFFIX)
  _put(features, _ram_bytes(features)[:100])  # cut short
  with pytest.raises(source_lib.DataValidationError, match=f'^{features}: cannot be read as .npy'):
    wtalc.read_wtalc(remote)
  tf.io.gfile.remove(paths.join(remote, 'Synthetic-Annotations', 'segments.npy'))
  with pytest.raises(errors.MissingFileError, match=f'annotation file {remote}/.*segments.npy'):
    wtalc.read_wtalc(remote)
  with pytest.raises(errors.MissingFileError, match=f'^--src {remote}/nothing: no such folder'):
    prepare.read_source('wtalc', remote + '/nothing')


def test_one_video_features_on_ram(tmp_path):
  """issf-predict's readers: a [T, D] .npy and a video of a W-TALC release, from ram://."""
  x = np.arange(12 * 8, dtype=np.float32).reshape(12, 8) / 7
  buffer = io.BytesIO()
  np.save(buffer, x)
  url = _put(_ram('video.npy'), buffer.getvalue())
  np.testing.assert_array_equal(one_video.load_features(url, 8), x)
  with pytest.raises(
    errors.InputError, match=rf'^features file {url}: features must be \[T>0, 9\]'
  ):
    one_video.load_features(url, 9)
  missing = _ram('none.npy')
  with pytest.raises(errors.MissingFileError, match=f'^features file {missing}: not found$'):
    one_video.load_features(missing, 8)
  folder = _ram('folder')
  tf.io.gfile.makedirs(folder)
  with pytest.raises(errors.InputError, match=f'^features file {folder}: cannot be read'):
    one_video.load_features(folder, 8)  # TensorFlow's own error, as an OSError
  cut = _put(_ram('cut.npy'), buffer.getvalue()[:-5])
  with pytest.raises(errors.InputError, match=f'^features file {cut}: cannot be read as .npy'):
    one_video.load_features(cut, 8)

  local, remote = tmp_path / 'src', _ram('src')
  for folder in (str(local), remote):
    synthetic.generate(folder, scale='tiny', seed=5, num_train=6, num_test=4)
  name = 'Synthetic' + wtalc.FEATURES_SUFFIX
  assert one_video.is_wtalc_features(paths.join(remote, name))
  want = one_video.from_wtalc(str(local / name), 'syn_test_00002')
  got = one_video.from_wtalc(paths.join(remote, name), 'syn_test_00002')
  np.testing.assert_array_equal(got.features, want.features)
  assert (got.subset, got.fps) == (want.subset, None) and got.features.shape[1] == 64
  with pytest.raises(errors.InputError, match='--video_id nope: not in ram://.*videoname.npy'):
    one_video.from_wtalc(paths.join(remote, name), 'nope')
  with pytest.raises(errors.InputError, match='holds Python objects'):
    one_video.load_features(paths.join(remote, name), 64)


def test_scoring_files_on_ram(tmp_path, capsys):
  """issf-eval score with the predictions, the ground truth and the output in ram://: the
  official evaluator's golden numbers (tests/testdata/official_eval), and its one-line errors."""
  expected = json.loads((GOLDEN / 'expected.json').read_text())
  case = expected['cases']['shifted']
  gt_name = pathlib.PurePath(expected['ground_truth']['file']).name
  folder = _ram('eval')
  gt = _put(paths.join(folder, 'gt.json'), _read_plain(data_file(GOLDEN, gt_name)))
  pred = _put(
    paths.join(folder, 'pred.json'), _read_plain(data_file(GOLDEN, case['prediction_file']))
  )
  out = paths.join(folder, 'out', 'result.json')
  args = ['--predictions', pred, '--ground_truth', gt, '--subset', 'Test', '--tiou', '0.1:0.7:0.1']
  assert score.main([*args, '--output_json', out]) == 0, capsys.readouterr().err
  result = json.loads(_ram_bytes(out))
  np.testing.assert_allclose(result['mAP'], case['mAP'], rtol=0, atol=1e-9)
  assert abs(result['average_mAP'] - case['average_mAP']) <= 1e-9
  assert result['num_videos'] == 212 and result['num_instances'] == 3358
  capsys.readouterr()

  # The stdlib reader (no msgspec) reads the same file from ram:// too.
  fast = prediction_file.load_predictions(pred)
  slow = ground_truth.parse_predictions(prediction_file.load_predictions(pred, fast=False))
  for field in ('start', 'end', 'score'):
    np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))

  missing = paths.join(folder, 'missing.json')
  bad = _put(paths.join(folder, 'bad.json'), '{"results": ')
  for path, reason in (
    (missing, 'not found'),
    (bad, 'invalid JSON'),
    (paths.join(folder, 'out'), 'cannot be read'),  # a folder: TensorFlow's error, an OSError
  ):
    assert score.main(['--predictions', path, *args[2:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'issf-eval score: error: predictions file {path}: {reason}'), err
    assert err.count('\n') == 1, err

  ambiguous = _put(paths.join(folder, 'Ambiguous_test.txt'), 'v1  1.5 2.0\nv2  3.0 4.5\nv1  7 8\n')
  assert read_ambiguous_txt(ambiguous) == {'v1': [[1.5, 2.0], [7.0, 8.0]], 'v2': [[3.0, 4.5]]}


def _read_plain(path: pathlib.Path) -> bytes:
  return gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()


# issf-repro --dry_run twice on one ram:// --workdir, in one process (ram:// is its memory): the
# first run writes the synthetic data and its shards there, the second finds them (and a run
# folder with a checkpoint made in between).
_REPRO = r"""
import contextlib, io, re, sys
import tests.ram_scheme
from issf_common import paths
from issf_common.tensorflow_cpu import tf
from launch import reproduce

workdir = sys.argv[1]
for attempt in (1, 2):
  sys.argv = ['issf-repro', '--table=4', '--rows=base', '--seeds=1', '--scale=tiny', '--dry_run',
              '--workdir=' + workdir]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    try:
      reproduce.run()
    except SystemExit as e:
      assert not e.code, e.code
  print(f'--- run {attempt}\n' + out.getvalue())
  run = re.search(r'(ram://\S+/runs/\w+)', out.getvalue()).group(1)
  paths.makedirs(paths.join(run, 'checkpoints', '6'))
print('--- data', sorted(tf.io.gfile.listdir(workdir + '/data')))
"""


def test_repro_data_folder_on_ram(tmp_path):
  workdir = _ram('repro')
  env = dict(os.environ, PYTHONPATH=str(REPO_DIR), JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
    [sys.executable, '-c', _REPRO, workdir], cwd=os.getcwd(), env=env, capture_output=True,
    text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  first, second, data = re.split(r'--- (?:run 2|data)', proc.stdout)
  shards_dir = f'{workdir}/data/synthetic_tiny_seed0_shards'
  assert f'synthetic benchmark (tiny, draw 0) -> {shards_dir} in' in first
  assert re.search(rf'{workdir}/runs/\w+  new', first)
  assert 'synthetic benchmark' not in second  # the data folder's manifest is found: reused
  assert re.search(rf'{workdir}/runs/\w+  checkpoint at step 6', second)
  assert data.strip() == "['synthetic_tiny_seed0', 'synthetic_tiny_seed0_shards']"
