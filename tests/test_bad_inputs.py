"""Every console script over a table of bad inputs, as a new user would type them (issue 16).

Each must print exactly one line on stderr, `<command>: error: ...`, naming the flag, file or
value; exit with status 2; print no traceback; and write nothing (the table's paths all lie in
the test's own folder, whose listing must not change). Each row is one subprocess (about 2-5 s:
the commands import JAX or TensorFlow only once the input has been checked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_DIR, TINY_TRAIN_OVERRIDES, config_flags
from tests.test_cli import assert_user_error, command, run

SYNTHETIC = str(REPO_DIR / 'configs' / 'synthetic.py')
SYNTHETIC_CMD = 'python -m launch.synthetic'  # the generator has no console script
ANET = str(REPO_DIR / 'configs' / 'activitynet13.py')


def listing(root: Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def assert_one_error_line(proc, prog: str, *pieces: str) -> str:
  """Exit status 2, stderr exactly one line `<prog>: error: ...` holding `pieces`."""
  out = proc.stdout + proc.stderr
  assert proc.returncode == 2, (proc.returncode, out[-3000:])
  assert 'Traceback' not in out, out[-3000:]
  lines = proc.stderr.splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f'{prog}: error: '), lines[0]
  for piece in pieces:
    assert piece in lines[0], (piece, lines[0])
  return lines[0]


@pytest.fixture(scope='module')
def run_config() -> str:
  """A run folder's config.json (configs/synthetic.py at D = 64), as issf-train writes it."""
  from configs import synthetic

  config = synthetic.get_config()
  config.model.feature_dim = 64
  return config.to_json_best_effort(indent=2, sort_keys=True)


@pytest.fixture
def inputs(tmp_path, run_config) -> Path:
  """A ground truth, predictions with an infinite score, one video's features, features files
  that are not one video's [T, D] .npy, a run folder holding only its config.json, and a shard
  folder whose manifest is cut short."""
  video = {'subset': 'test', 'annotations': [{'segment': [0.0, 10.0], 'label': 'A'}]}
  (tmp_path / 'gt.json').write_text(json.dumps({'database': {'v': video}}))
  inf = {'results': {'v': [{'label': 'A', 'score': float('inf'), 'segment': [0.0, 5.0]}]}}
  (tmp_path / 'pred_inf.json').write_text(json.dumps(inf))  # writes the literal Infinity
  np.save(tmp_path / 'x.npy', np.zeros((8, 64), np.float32))
  (tmp_path / 'empty.npy').write_bytes(b'')
  (tmp_path / 'text.npy').write_text('0.1 0.2\n')
  np.savez(tmp_path / 'x.npz', x=np.zeros((8, 64), np.float32))
  np.save(tmp_path / 'bool.npy', np.zeros((8, 64), bool))
  np.save(tmp_path / 'complex.npy', np.zeros((8, 64), complex))
  (tmp_path / 'empty.json').write_text('')
  (tmp_path / 'trained').mkdir()
  (tmp_path / 'trained' / 'config.json').write_text(run_config)
  for name, text in (('corrupt', '{"data": {'), ('empty_object', '{}')):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'config.json').write_text(text)
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'imports.py').write_text(
    'import nosuchmodule\n\n\ndef get_config(arg=None):\n  pass\n'
  )
  (tmp_path / 'empty.py').write_text('')
  (tmp_path / 'none.py').write_text('def get_config(arg=None):\n  del arg\n')
  for name, segment, label in (('reversed', [5.0, 1.0], 'A'), ('negative', [-2.0, 1.0], 'A'),
                               ('int_label', [0.0, 10.0], 3)):  # fmt: skip
    bad = {'subset': 'test', 'annotations': [{'segment': segment, 'label': label}]}
    (tmp_path / f'gt_{name}.json').write_text(json.dumps({'database': {'v': bad}}))
  ok = {'results': {'v': [{'label': 'A', 'score': 0.5, 'segment': [0.0, 5.0]}]}}
  (tmp_path / 'pred_ok.json').write_text(json.dumps(ok))
  one = '[{"label": "A", "score": 0.5, "segment": [0.0, 5.0]}]'
  (tmp_path / 'pred_twice.json').write_text(f'{{"results": {{"v": {one}, "v": {one}}}}}')
  (tmp_path / 'badshards').mkdir()
  (tmp_path / 'badshards' / 'manifest.json').write_text('{"format_version": ')
  return tmp_path


TRAIN = ['issf-train', '--config', SYNTHETIC, '--workdir', '{tmp}/run',
         '--config.data.shards_dir={tmp}/shards']  # fmt: skip
PREDICT = ['issf-predict', '--workdir', '{tmp}/run', '--features', '{tmp}/x.npy']
PREDICT_RUN = ['issf-predict', '--workdir', '{tmp}/trained', '--features']  # + a features file
SCORE = ['issf-eval', 'score', '--ground_truth', '{tmp}/gt.json', '--subset', 'test']
SCORE_GT = ['issf-eval', 'score', '--predictions', '{tmp}/pred_ok.json', '--subset', 'test',
            '--ground_truth']  # fmt: skip
PREPARE = ['issf-prepare', '--format', 'wtalc', '--src', '{tmp}', '--out', '{tmp}/shards']

# id -> (command line, the error line's program, pieces the error line must hold)
CASES = {
  'train_unknown_key': (TRAIN + ['--config.nosuch.key=1'], 'issf-train',
                        ['--config.nosuch.key', "no field 'nosuch'"]),
  'train_batch_size_0': (TRAIN + ['--config.train.batch_size=0'], 'issf-train',
                         ['--config.train.batch_size=0', '>= 1']),
  'train_batch_size_negative': (TRAIN + ['--config.train.batch_size=-3'], 'issf-train',
                                ['--config.train.batch_size=-3', '>= 1']),
  'train_negative_lr': (TRAIN + ['--config.optim.lr=-1'], 'issf-train',
                        ['--config.optim.lr=-1', '> 0']),
  'train_dropout_1.5': (TRAIN + ['--config.model.dropout=1.5'], 'issf-train',
                        ['--config.model.dropout=1.5', '[0, 1)']),
  'train_update_mode_typo': (TRAIN + ['--config.memory.update_mode=merge_blnd'], 'issf-train',
                             ['--config.memory.update_mode=merge_blnd', 'one of']),
  'train_unknown_scale': (['issf-train', '--config', f'{ANET}:scale=tinyy', '--workdir',
                           '{tmp}/run'], 'issf-train', ["scale='tinyy'", 'tiny']),
  'train_unknown_synthetic_scale': (['issf-train', '--config', f'{SYNTHETIC}:scale=tinyy',
                                     '--workdir', '{tmp}/run'], 'issf-train', ["scale='tinyy'"]),
  'eval_negative_lr': (['issf-eval', '--workdir', '{tmp}/run', '--config', SYNTHETIC,
                        '--config.optim.lr=-1'], 'issf-eval', ['--config.optim.lr=-1']),
  'predict_fps_0': (PREDICT + ['--fps', '0'], 'issf-predict', ['--fps 0', '> 0']),
  'predict_fps_negative': (PREDICT + ['--fps', '-25'], 'issf-predict', ['--fps -25', '> 0']),
  'predict_stride_0': (PREDICT + ['--stride', '0'], 'issf-predict', ['--stride 0', '>= 1']),
  'predict_output_missing_folder': (PREDICT + ['--output', '{tmp}/nope/dets.json'],
                                    'issf-predict', ['--output', '{tmp}/nope']),
  'predict_plot_missing_folder': (PREDICT + ['--plot', '{tmp}/nope/plot.png'], 'issf-predict',
                                  ['--plot', '{tmp}/nope']),
  'score_infinite_score': (SCORE + ['--predictions', '{tmp}/pred_inf.json'], 'issf-eval score',
                           ['pred_inf.json', "results['v'][0]", 'inf']),
  'score_bad_tiou': (SCORE + ['--predictions', '{tmp}/pred_inf.json', '--tiou', '0.5:1.5:0.1'],
                     'issf-eval score', ['--tiou', '(0, 1]']),
  'score_missing_flag': (['issf-eval', 'score', '--predictions', '{tmp}/pred_inf.json'],
                         'issf-eval score', ['--ground_truth', 'see --help']),
  'prepare_videos_per_shard_0': (PREPARE + ['--videos_per_shard', '0'], 'issf-prepare',
                                 ['--videos_per_shard 0', '>= 1']),
  'prepare_unknown_format': (['issf-prepare', '--format', 'wtalk', '--src', '{tmp}', '--out',
                              '{tmp}/shards'], 'issf-prepare', ['--format', "'wtalk'"]),
  'repro_unknown_table': (['issf-repro', '--table', '7', '--workdir', '{tmp}/repro'],
                          'issf-repro', ['Unknown table']),
  'repro_batch_size_0': (['issf-repro', '--table', '4', '--workdir', '{tmp}/repro',
                          '--config.train.batch_size=0'], 'issf-repro',
                         ['--config.train.batch_size=0', '>= 1']),
  # A best metric that no evaluation reports (it crashed at the third checkpoint save).
  'train_best_metric_unknown': (TRAIN + ['--config.train.best_metric=nosuch'], 'issf-train',
                                ['--config.train.best_metric=nosuch', 'average_mAP']),
  'eval_best_metric_unknown': (['issf-eval', '--workdir', '{tmp}/run', '--config', SYNTHETIC,
                                '--config.train.best_metric=nosuch'], 'issf-eval',
                               ['--config.train.best_metric=nosuch']),
  # Numbers no field can take (they crashed inside training).
  'train_lr_inf': (TRAIN + ['--config.optim.lr=inf'], 'issf-train',
                   ['--config.optim.lr=inf', 'finite']),
  'train_seed_negative': (TRAIN + ['--config.train.seed=-1'], 'issf-train',
                          ['--config.train.seed=-1', '[0, ']),
  'train_num_epochs_huge': (TRAIN + ['--config.train.num_epochs=99999999999999999999'],
                            'issf-train', ['--config.train.num_epochs=', '2**31']),
  # issf-predict: features that are not one video's [T, D] real .npy, checked before the model.
  'predict_features_empty': (PREDICT_RUN + ['{tmp}/empty.npy'], 'issf-predict',
                             ['{tmp}/empty.npy', 'empty']),
  'predict_features_text': (PREDICT_RUN + ['{tmp}/text.npy'], 'issf-predict',
                            ['{tmp}/text.npy', 'not a .npy file']),
  'predict_features_npz': (PREDICT_RUN + ['{tmp}/x.npz'], 'issf-predict', ['x.npz', '.npz']),
  'predict_features_bool': (PREDICT_RUN + ['{tmp}/bool.npy'], 'issf-predict',
                            ['bool.npy', 'dtype bool']),
  'predict_features_complex': (PREDICT_RUN + ['{tmp}/complex.npy'], 'issf-predict',
                               ['complex.npy', 'dtype complex']),
  'predict_fps_inf': (PREDICT + ['--fps', 'inf'], 'issf-predict', ['--fps inf', 'finite']),
  'predict_branches_without_plot': (PREDICT + ['--branches'], 'issf-predict',
                                    ['--branches', '--plot']),
  'predict_plot_unknown_format': (PREDICT + ['--plot', '{tmp}/t.xyz'], 'issf-predict',
                                  ['--plot {tmp}/t.xyz', 'png']),
  'predict_plot_no_extension': (PREDICT + ['--plot', '{tmp}/timeline'], 'issf-predict',
                                ['--plot {tmp}/timeline', 'png']),
  'predict_plot_folder': (PREDICT + ['--plot', '{tmp}'], 'issf-predict', ['--plot', 'folder']),
  'predict_output_folder': (PREDICT + ['--output', '{tmp}'], 'issf-predict',
                            ['--output', 'folder']),
  'predict_output_read_only': (PREDICT_RUN + ['{tmp}/x.npy', '--output', '/sys/dets.json'],
                               'issf-predict', ['--output /sys', 'cannot be written']),
  'predict_ground_truth_missing': (PREDICT_RUN + ['{tmp}/x.npy', '--ground_truth',
                                   '{tmp}/nope.json', '--plot', '{tmp}/t.png'], 'issf-predict',
                                   ['{tmp}/nope.json', 'not found']),
  'predict_ground_truth_empty': (PREDICT_RUN + ['{tmp}/x.npy', '--ground_truth',
                                 '{tmp}/empty.json', '--plot', '{tmp}/t.png'], 'issf-predict',
                                 ['{tmp}/empty.json', 'invalid JSON']),
  'predict_neither_features_nor_video': (['issf-predict', '--workdir', '{tmp}/trained'],
                                         'issf-predict', ['--features or --video_id']),
  'predict_video_id_without_shards': (['issf-predict', '--workdir', '{tmp}/trained',
                                       '--video_id', 'v', '--shards_dir', '{tmp}/nope'],
                                      'issf-predict', ['{tmp}/nope', 'issf-prepare']),
  # A run folder's config.json that is not one.
  'eval_config_json_corrupt': (['issf-eval', '--workdir', '{tmp}/corrupt'], 'issf-eval',
                               ['{tmp}/corrupt/config.json', 'JSON']),
  'predict_config_json_empty': (['issf-predict', '--workdir', '{tmp}/empty_object',
                                 '--features', '{tmp}/x.npy'], 'issf-predict',
                                ['{tmp}/empty_object/config.json', 'no data, model']),
  'train_manifest_corrupt': (TRAIN[:-1] + ['--config.data.shards_dir={tmp}/badshards'],
                             'issf-train', ['{tmp}/badshards/manifest.json', 'issf-prepare']),
  # Config files that do not load, or load to nothing; a config argument given twice.
  'train_config_syntax_error': (['issf-train', '--config', '{tmp}/syntax.py', '--workdir',
                                 '{tmp}/run'], 'issf-train', ['syntax.py', 'syntax error']),
  'eval_config_missing_import': (['issf-eval', '--config', '{tmp}/imports.py', '--workdir',
                                  '{tmp}/trained'], 'issf-eval', ['imports.py', 'nosuchmodule']),
  'repro_config_no_get_config': (['issf-repro', '--table', '4', '--config', '{tmp}/empty.py',
                                  '--workdir', '{tmp}/repro'], 'issf-repro',
                                 ['empty.py', 'no get_config()']),
  'train_config_returns_none': (['issf-train', '--config', '{tmp}/none.py', '--workdir',
                                 '{tmp}/run'], 'issf-train', ['none.py', 'returned None']),
  'train_config_argument_twice': (['issf-train', '--config', f'{SYNTHETIC}:modules=full,'
                                   'modules=base', '--workdir', '{tmp}/run'], 'issf-train',
                                  ['modules is given twice']),
  # Seeds out of range.
  'repro_negative_data_seed': (['issf-repro', '--table', '4', '--data_seed=-5', '--workdir',
                                '{tmp}/repro'], 'issf-repro', ['--data_seed=-5']),
  'synthetic_negative_seed': (['python -m launch.synthetic', '--seed=-1', '--out', '{tmp}/syn'],
                              'python -m launch.synthetic', ['--seed -1', '>= 0']),
  # A regular file where a folder goes, and folders that cannot be written (/sys: as root too).
  'train_workdir_is_a_file': (TRAIN[:3] + ['--workdir', '{tmp}/x.npy'], 'issf-train',
                              ['--workdir {tmp}/x.npy', 'is a file']),
  'prepare_out_is_a_file': (PREPARE[:-1] + ['{tmp}/x.npy'], 'issf-prepare',
                            ['--out {tmp}/x.npy', 'is a file']),
  'repro_workdir_is_a_file': (['issf-repro', '--table', '4', '--workdir', '{tmp}/x.npy'],
                              'issf-repro', ['--workdir {tmp}/x.npy', 'is a file']),
  'synthetic_out_is_a_file': (['python -m launch.synthetic', '--out', '{tmp}/x.npy'],
                              'python -m launch.synthetic', ['--out {tmp}/x.npy', 'is a file']),
  'train_workdir_read_only': (TRAIN[:3] + ['--workdir', '/sys/issf_run'], 'issf-train',
                              ['--workdir /sys/issf_run', 'cannot be written']),
  'prepare_out_read_only': (PREPARE[:-1] + ['/sys/issf_shards'], 'issf-prepare',
                            ['--out /sys/issf_shards', 'cannot be written']),
  'repro_workdir_read_only': (['issf-repro', '--table', '4', '--workdir', '/sys/issf_repro'],
                              'issf-repro', ['--workdir /sys/issf_repro', 'cannot be written']),
  # Ground truth that is refused as predictions are: reversed or negative segments; a label
  # that is not a class name (3 became a class "3").
  'score_gt_reversed_segment': (SCORE_GT + ['{tmp}/gt_reversed.json'], 'issf-eval score',
                                ['gt_reversed.json', "database['v'].annotations[0]", 'invalid']),
  'score_gt_negative_time': (SCORE_GT + ['{tmp}/gt_negative.json'], 'issf-eval score',
                             ['gt_negative.json', 'negative']),
  'score_video_listed_twice': (SCORE + ['--predictions', '{tmp}/pred_twice.json'],
                               'issf-eval score', ['pred_twice.json', "key 'v' appears twice"]),
  'score_gt_integer_label': (SCORE_GT + ['{tmp}/gt_int_label.json'], 'issf-eval score',
                             ['gt_int_label.json', 'label 3 is not a string']),
}  # fmt: skip


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input(case, inputs):
  args, prog, pieces = CASES[case]
  tmp = str(inputs)
  args = [a.replace('{tmp}', tmp) for a in args]
  before = listing(inputs)
  program = (
    [sys.executable, '-m', 'launch.synthetic'] if args[0] == SYNTHETIC_CMD else command(args[0])
  )
  proc = run(program + args[1:])
  assert_one_error_line(proc, prog, *(p.replace('{tmp}', tmp) for p in pieces))
  assert listing(inputs) == before


@pytest.mark.parametrize('case', ['train_batch_size_0', 'eval_negative_lr', 'predict_fps_0'])
def test_bad_flags_are_refused_before_jax_is_imported(case, inputs):
  """A bad flag or config value is refused before JAX, Flax or TensorFlow is imported (about
  2.5 s of a refusal when the config check imported the model's modules, 0.4-0.6 s now): the
  same row of the table, under `python -X importtime`, which lists every module imported."""
  args, prog, _ = CASES[case]
  args = [a.replace('{tmp}', str(inputs)) for a in args]
  modules = {'issf-train': 'launch.train', 'issf-eval': 'launch.evaluate',
             'issf-predict': 'launch.predict'}  # fmt: skip
  proc = run([sys.executable, '-X', 'importtime', '-m', modules[prog], *args[1:]])
  assert proc.returncode == 2, proc.stderr[-3000:]
  imported = {line.split('|')[-1].strip() for line in proc.stderr.splitlines() if '|' in line}
  assert 'numpy' in imported  # the listing is there
  heavy = sorted(m for m in imported if m.split('.')[0] in ('jax', 'flax', 'tensorflow'))
  assert not heavy, heavy[:10]


def _train(workdir: Path, shards: Path) -> list[str]:
  return command('issf-train') + [
    '--config', SYNTHETIC, '--workdir', str(workdir), f'--config.data.shards_dir={shards}',
    *config_flags(TINY_TRAIN_OVERRIDES),
  ]  # fmt: skip


def test_truncated_test_shard_is_named_before_training(tmp_path, tiny_shards):
  """A test shard cut short, its checksum rewritten to match: refused before the first step
  (it used to fail with a ValueError traceback at the first evaluation)."""
  shards = tmp_path / 'shards'
  shutil.copytree(tiny_shards, shards)
  manifest = json.loads((shards / 'manifest.json').read_text())
  entry = manifest['shards']['test'][-1]
  shard = shards / entry['file']
  shard.write_bytes(shard.read_bytes()[:-100])
  from data_pipelines import manifest as manifest_lib

  entry['sha256'] = manifest_lib.sha256_file(str(shard))
  (shards / 'manifest.json').write_text(json.dumps(manifest))
  before = listing(tmp_path)
  proc = run(_train(tmp_path / 'run', shards))
  assert_one_error_line(proc, 'issf-train', str(shard), 'truncated')
  assert listing(tmp_path) == before


def test_second_trainer_on_a_run_folder_is_refused(tmp_path, tiny_shards):
  """A process holding the run folder's lock (as a first issf-train does) makes a second one
  stop with the holder's pid; once the holder is gone, the lock is free again."""
  workdir = tmp_path / 'run'
  holder = subprocess.Popen(
    [sys.executable, '-c', 'import sys, time\nfrom issf_jax.train import run_lock\n'
     'with run_lock.hold(sys.argv[1]):\n  print("locked", flush=True)\n  time.sleep(600)\n',
     str(workdir)],
    cwd=REPO_DIR, env=dict(os.environ, PYTHONPATH=str(REPO_DIR)), stdout=subprocess.PIPE,
    text=True,
  )  # fmt: skip
  try:
    assert holder.stdout.readline().strip() == 'locked'
    before = listing(tmp_path)
    proc = run(_train(workdir, tiny_shards))
    assert_one_error_line(proc, 'issf-train', str(workdir), f'pid {holder.pid}')
    assert listing(tmp_path) == before  # no checkpoints/, config.json or metrics.jsonl
  finally:
    holder.kill()
    holder.wait()
  from issf_jax.train import run_lock

  with run_lock.hold(str(workdir)):  # the kernel freed the lock with its process
    pass


# ---- The small items: help texts and messages --------------------------------------------------


def test_help_texts():
  """No "(default: 'None')" for a config flag without a default; issf-prepare's --format and
  --videos_per_shard say what they take."""
  proc = run(command('issf-train') + ['--help'])
  assert proc.returncode == 0 and '--config: Experiment config file.' in proc.stdout
  assert "(default: 'None')" not in proc.stdout
  text = ' '.join(run(command('issf-prepare') + ['--help']).stdout.split())
  assert 'wtalc: <Name>-I3D-JOINTFeatures.npy' in text and 'acmnet: train/*.npy' in text
  assert 'videos per TFRecord shard' in text


def test_one_invalid_segment_is_counted_in_the_singular():
  from issf_jax import evaluation
  from issf_jax.evaluation import ground_truth as gt_lib

  video = {'subset': 'test', 'annotations': [{'segment': [0.0, 10.0], 'label': 'A'}]}
  gt = {'database': {'v': video}}
  pred = {'results': {'v': [{'label': 'A', 'score': 0.5, 'segment': [5.0, 1.0]}]}}
  with pytest.raises(gt_lib.FormatError, match=r'\[5, 1\].*; 1 such segment$'):
    evaluation.evaluate_official(gt, pred, subset='test', tiou_thresholds=[0.5])


def _tfrecord(path: Path, payloads: list[bytes]) -> None:
  """TFRecord framing with zero crcs (the record scan does not read them)."""
  import struct

  path.write_bytes(b''.join(struct.pack('<QI', len(p), 0) + p + b'\0' * 4 for p in payloads))


def test_shard_checks_name_the_file_and_the_command(tmp_path):
  """A checksum mismatch says to rerun issf-prepare; a shard with fewer records than the
  manifest lists, or cut inside a record, is named before any read."""
  from data_pipelines import manifest as manifest_lib
  from data_pipelines import source

  shard = tmp_path / 'test-00000-of-00001.tfrecord'
  _tfrecord(shard, [b'a' * 10, b'b' * 20])
  entry = {'file': shard.name, 'num_examples': 2, 'sha256': '0' * 64}
  manifest = {'shards': {'test': [entry]}}
  with pytest.raises(source.ChecksumError, match='rerun issf-prepare$'):
    manifest_lib.verify_shards(str(tmp_path), manifest, 'test')
  entry['sha256'] = manifest_lib.sha256_file(str(shard))
  manifest_lib.verify_shards(str(tmp_path), manifest, 'test')  # whole and counted: passes
  assert [n for _, n in manifest_lib.scan_records(str(shard))] == [10, 20]
  entry['num_examples'] = 3
  manifest_lib._VERIFIED.clear()
  with pytest.raises(source.DataValidationError, match=f'{shard}: 2 records, the manifest lists 3'):
    manifest_lib.verify_shards(str(tmp_path), manifest, 'test')
  shard.write_bytes(shard.read_bytes()[:-5])
  entry.update(num_examples=2, sha256=manifest_lib.sha256_file(str(shard)))
  with pytest.raises(source.DataValidationError, match=f'{shard}: truncated TFRecord file'):
    manifest_lib.verify_shards(str(tmp_path), manifest, 'test')


def test_edited_run_config_out_of_range(tmp_path):
  """issf-eval reads the run's config.json: a value out of range there is named too."""
  from configs import synthetic

  config = synthetic.get_config()
  config.optim.lr = -1.0
  (tmp_path / 'config.json').write_text(config.to_json_best_effort())
  before = listing(tmp_path)
  proc = run(command('issf-eval') + ['--workdir', tmp_path])
  assert_one_error_line(proc, 'issf-eval', str(tmp_path / 'config.json'), 'optim.lr=-1.0')
  assert listing(tmp_path) == before


# ---- issf-prepare on a released folder that cannot be converted ----------------------------


@pytest.mark.parametrize('damage', ['empty_features', 'truncated_features', 'no_known_subset',
                                    'wrong_width'])  # fmt: skip
def test_prepare_refuses_a_release_and_leaves_no_folder(tmp_path, tiny_shards, damage):
  """An empty or truncated features file (EOFError / UnpicklingError tracebacks), a release
  with no video in the train or test subset (exit 0 with 0 videos and D=None), a video that
  fails validation mid-conversion (it left an empty --out folder): one line, no --out."""
  src = tmp_path / 'src'
  shutil.copytree(tiny_shards.parent / 'raw', src)
  features = src / 'Synthetic-I3D-JOINTFeatures.npy'
  extra, pieces = [], [str(features)]
  if damage == 'empty_features':
    features.write_bytes(b'')
  elif damage == 'truncated_features':
    features.write_bytes(features.read_bytes()[:5000])
  elif damage == 'no_known_subset':
    subsets = src / 'Synthetic-Annotations' / 'subset.npy'
    np.save(subsets, np.array(['Holdout'] * len(np.load(subsets, allow_pickle=True))))
    pieces = [str(src), 'no video to convert', "['Holdout']"]
  else:
    extra, pieces = ['--feature_dim', '32'], ['32']
  proc = run(command('issf-prepare') + ['--format', 'wtalc', '--src', src, '--out',
                                        tmp_path / 'shards', *extra])  # fmt: skip
  if damage == 'wrong_width':  # found once TensorFlow is loaded: its log lines come first
    assert_user_error(proc, *pieces)
  else:
    assert_one_error_line(proc, 'issf-prepare', *pieces)
  assert not (tmp_path / 'shards').exists()
