"""Single-video prediction end to end (issue 5): `python -m launch.predict` on a tiny run's
checkpoint prints the detections, writes them as JSON and draws the timeline (with the
branches' panel: base, BRM, DEM read and pseudo-label)."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import run_python, subprocess_env


def _longest_test_video(shards):
  from data_pipelines import input_pipeline
  from data_pipelines import manifest as manifest_lib
  from data_pipelines import shards as shards_lib

  manifest = input_pipeline.load_manifest(str(shards))
  table = manifest['videos']['test']
  index = shards_lib.RecordIndex(manifest_lib.shard_paths(str(shards), manifest, 'test'))
  i = int(np.argmax([v['num_snippets'] for v in table]))
  record = shards_lib.decode_numpy(index.read(i))
  return record['video_id'], np.array(record['features'])


def test_predict_writes_detections_and_plot(tiny_run, tiny_shards, jax_cache_dir, tmp_path):
  video_id, features = _longest_test_video(tiny_shards)
  path = tmp_path / f'{video_id}.npy'
  np.save(path, features)
  out, plot = tmp_path / 'dets.json', tmp_path / 'timeline.png'
  proc = run_python(
    ['-m', 'launch.predict', '--workdir', tiny_run, '--features', path, '--output', out,
     '--plot', plot, '--ground_truth', tiny_shards / 'ground_truth.json', '--branches'],
    subprocess_env(jax_cache_dir),
  )  # fmt: skip
  assert f'{video_id}: {len(features)} snippets, checkpoint step 24' in proc.stdout
  assert 'start (s)' in proc.stdout
  payload = json.loads(out.read_text())
  assert payload['video'] == video_id and payload['checkpoint_step'] == 24
  duration = len(features) * 16 / 25
  for det in payload['detections']:
    start, end = det['segment']
    assert 0.0 <= start < end <= duration + 1e-6
    assert det['label'] in json.loads((tiny_shards / 'manifest.json').read_text())['classes']
  scores = [d['score'] for d in payload['detections']]
  assert scores == sorted(scores, reverse=True)
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and plot.stat().st_size > 10_000


def test_predict_rejects_features_of_the_wrong_width(tiny_run, jax_cache_dir, tmp_path):
  path = tmp_path / 'bad.npy'
  np.save(path, np.zeros((10, 7), np.float32))
  proc = run_python(
    ['-m', 'launch.predict', '--workdir', tiny_run, '--checkpoint', '12', '--features', path],
    subprocess_env(jax_cache_dir), check=False,
  )  # fmt: skip
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  [line] = [line for line in proc.stderr.splitlines() if 'error:' in line]
  assert line.startswith('issf-predict: error: ') and 'bad.npy' in line and '[T>0, 64]' in line


def test_predict_one_video_of_a_release_by_its_id(tiny_run, tiny_shards, jax_cache_dir, tmp_path):
  """`--video_id` alone reads the video from the run's shard folder, and `--video_id` with
  the released W-TALC features file reads its row: both give the detections of the same
  features saved as one .npy (the .npy path is the reference)."""
  from data_pipelines import one_video

  video_id, features = _longest_test_video(tiny_shards)
  np.save(tmp_path / 'one.npy', features)
  release = tiny_shards.parent / 'raw' / 'Synthetic-I3D-JOINTFeatures.npy'
  env = subprocess_env(jax_cache_dir)
  base = ['-m', 'launch.predict', '--workdir', tiny_run]
  ways = {
    'npy': ['--features', tmp_path / 'one.npy'],
    'shards': ['--video_id', video_id],
    'wtalc': ['--video_id', video_id, '--features', release],
  }
  detections = {}
  for name, args in ways.items():
    out = tmp_path / f'{name}.json'
    proc = run_python([*base, *args, '--output', out], env)
    assert f'{len(features)} snippets' in proc.stdout
    detections[name] = json.loads(out.read_text())['detections']
  assert detections['shards'] == detections['npy'] == detections['wtalc']
  np.testing.assert_array_equal(one_video.from_wtalc(str(release), video_id).features, features)
  import pytest

  from issf_common import errors

  with pytest.raises(errors.InputError, match='--video_id nosuch: not in .*40 videos'):
    one_video.from_shards(str(tiny_shards), 'nosuch')


def test_predict_a_video_too_long_for_memory_says_the_limit(tiny_run, jax_cache_dir, tmp_path):
  """200,000 snippets would need ~640 GB (the model's T x T maps): one line with the need and
  the longest T that fits, before anything is allocated (a JaxRuntimeError traceback)."""
  from tests.test_bad_inputs import assert_one_error_line

  np.save(tmp_path / 'long.npy', np.zeros((200_000, 64), np.float32))
  args = ['-m', 'launch.predict', '--workdir', tiny_run, '--features', tmp_path / 'long.npy']
  proc = run_python(args, subprocess_env(jax_cache_dir), check=False)
  line = assert_one_error_line(proc, 'issf-predict', 'long: 200000 snippets need about 64')
  assert 'cut the video into parts of at most about' in line
  assert sorted(p.name for p in tmp_path.iterdir()) == ['long.npy']
