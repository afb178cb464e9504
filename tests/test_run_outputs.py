"""What a run folder holds is never lost or mislabelled by a later command.

* `make demo` a second time reports the finished run (its logged evaluation), and does not
  overwrite results.txt / results.json with an empty evaluation;
* the run's config.json names its shards by an absolute path (a relative one broke issf-eval and
  issf-predict from another folder), a run written with a relative one still resumes, and
  issf-predict says so when it cannot name the classes;
* `issf-eval --workdir RUN --config.a.b=v` applies the overrides to the run's own config and
  writes beside the trainer's predictions/ and eval/ files, under a name that says the config
  differs, recording the config; the trainer's files are left as they were.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from tests.conftest import REPO_DIR, run_python, subprocess_env
from tests.test_cli import command, run


@pytest.fixture(scope='module')
def run_copy(tmp_path_factory, tiny_run):
  workdir = tmp_path_factory.mktemp('outputs') / 'run'
  shutil.copytree(tiny_run, workdir, ignore=shutil.ignore_patterns('tensorboard'))
  return workdir


def _files(folder) -> dict:
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- The demo, run twice ------------------------------------------------------------------


def test_logged_evaluation_is_the_trainers(tiny_run):
  """What a second demo reports for a finished run: the evaluation the trainer logged at its
  last step, equal to the numbers of its eval/step_24.json (NaN where the file holds null)."""
  from issf_jax.train import metrics_writer

  logged = metrics_writer.logged_evaluation(str(tiny_run), 24)
  result = json.loads((tiny_run / 'eval' / 'step_24.json').read_text())
  assert logged['average_mAP'] == result['average_mAP']
  assert [logged[f'mAP@{t:g}'] for t in result['tiou_thresholds']] == result['mAP']
  assert math.isnan(logged['classification_mAP']) == (result['classification_mAP'] is None)
  from issf_common import errors

  with pytest.raises(errors.MissingFileError, match='no evaluation at step 18'):
    metrics_writer.logged_evaluation(str(tiny_run), 18)


@pytest.mark.slow
def test_demo_twice_keeps_the_results(tmp_path, jax_cache_dir):
  """The second `make demo` prints the same table and leaves results.json's numbers and
  training time as they were (it printed nan and wrote "eval": {}); config.json's shards are
  absolute although --workdir was relative."""
  args = ['-m', 'launch.demo', '--workdir', os.path.relpath(tmp_path / 'demo', REPO_DIR),
          '--scale', 'tiny', '--epochs', '1']  # fmt: skip
  env = subprocess_env(jax_cache_dir)
  first = run_python(args, env)
  results = json.loads((tmp_path / 'demo' / 'results.json').read_text())
  second = run_python(args, env)
  assert second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]  # the ISSF row
  assert 'had finished' in second.stdout
  assert json.loads((tmp_path / 'demo' / 'results.json').read_text()) == results
  config = json.loads((tmp_path / 'demo' / 'issf' / 'config.json').read_text())
  assert config['data']['shards_dir'] == str(tmp_path / 'demo' / 'data' / 'synthetic_tiny_0_shards')


# ---- Relative shard folders -----------------------------------------------------------------


def test_a_relative_shards_dir_of_an_older_run_is_no_change(tmp_path, tiny_run):
  """An older run folder stored data.shards_dir relative to where it was trained; resuming
  there (the launch script now makes it absolute) is the same data, not a config change."""
  from issf_jax.train import run_dir

  config = run_dir.load_config(str(tiny_run))
  stored = run_dir.config_dict(config)
  stored['data']['shards_dir'] = os.path.relpath(config.data.shards_dir)
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  assert run_dir.check_resume_config(config, str(tmp_path), 24) == {}
  with config.unlocked():
    config.data.shards_dir = str(tmp_path / 'elsewhere')
  with pytest.raises(run_dir.ConfigChangeError, match='data.shards_dir'):
    run_dir.check_resume_config(config, str(tmp_path), 24)


def test_predict_says_why_the_classes_have_no_names(tmp_path, run_copy):
  """A run whose shards cannot be found: the detections are labelled class_<i> with a
  warning naming the run's data.shards_dir (it was silent)."""
  workdir = tmp_path / 'run'
  shutil.copytree(run_copy, workdir)
  config = json.loads((workdir / 'config.json').read_text())
  config['data']['shards_dir'] = 'runs/moved_shards'
  (workdir / 'config.json').write_text(json.dumps(config))
  np.save(tmp_path / 'x.npy', np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32))
  proc = run(command('issf-predict') + ['--workdir', workdir, '--features', tmp_path / 'x.npy'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and "'runs/moved_shards'" in warnings[0], proc.stderr[-3000:]
  assert 'class_0..class_19' in warnings[0]
  labels = {d['label'] for d in json.loads((tmp_path / 'x.dets.json').read_text())['detections']}
  assert labels and all(label.startswith('class_') for label in labels)


# ---- issf-eval with another config ----------------------------------------------------------


def test_eval_with_overrides_writes_beside_the_trainers_files(run_copy, jax_cache_dir):
  """The override `--sweep_scales` prints, on the run folder alone: the trainer's files stay
  byte for byte; the new ones are tagged and record the difference and the config."""
  before = {d: _files(run_copy / d) for d in ('predictions', 'eval')}
  override = '--config.eval.proposals.thresholds_start=0.01'
  proc = run_python(['-m', 'launch.evaluate', '--workdir', run_copy, override],
                    subprocess_env(jax_cache_dir))  # fmt: skip
  for folder in ('predictions', 'eval'):
    after = _files(run_copy / folder)
    new = sorted(set(after) - set(before[folder]))
    assert len(new) == 1 and new[0].startswith('step_24.config-'), new
    assert {k: after[k] for k in before[folder]} == before[folder]  # untouched
  tag = new[0][len('step_24.') : -len('.json')]
  assert f'{tag}.json' in proc.stdout
  result = json.loads((run_copy / 'eval' / f'step_24.{tag}.json').read_text())
  assert result['config_changes'] == {'eval.proposals.thresholds_start': [0.001, 0.01]}
  assert result['config']['eval']['proposals']['thresholds_start'] == 0.01
  assert result['checkpoint'] == {'step': 24, 'which': 'latest'}


def test_overrides_without_config_read_the_run_folder():
  from launch import cli

  argv = ['issf-eval', '--workdir', 'runs/a', '--config.eval.protocol=official']
  assert cli.with_run_config(argv) == [
    'issf-eval', f'--config={cli.RUN_FOLDER_CONFIG}:runs/a', *argv[1:]
  ]  # fmt: skip
  for same in (argv[:3], argv + ['--config', 'configs/thumos14.py'], ['x', '--config.a=1']):
    assert cli.with_run_config(same) == same


# ---- Console: Ctrl-C, and the classification mAP of a split without some class ---------------


def test_ctrl_c_says_where_the_run_resumes(tmp_path, tiny_shards, jax_cache_dir):
  """SIGINT during training: exit status 130 and one line naming the checkpoint the same
  command resumes from (it was a KeyboardInterrupt traceback)."""
  import signal
  import subprocess
  import sys

  from tests.conftest import train_args

  workdir = tmp_path / 'run'
  # A progress line every step, and the signal in a plain training step (step 15: after the
  # memory initialisation, evaluation and checkpoint that end epoch 2 at step 12), so that it
  # lands in the loop the test is about, whatever the machine's load.
  args = train_args(workdir, tiny_shards, {'train.num_epochs': 40, 'train.log_every_steps': 1})
  # Unbuffered: a piped child's progress lines would otherwise arrive at its exit, after the
  # run had finished without an interrupt.
  env = dict(subprocess_env(jax_cache_dir), PYTHONUNBUFFERED='1')
  # Ctrl-C's default action in the child even when this test runs in a background job (whose
  # shell ignores SIGINT, and an ignored SIGINT is inherited and kept by Python): a signal with
  # a handler here is reset to its default at the child's exec (no preexec_fn: forking a
  # multithreaded process to run Python is what Python warns against).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
  finally:
    signal.signal(signal.SIGINT, previous)
  try:
    for line in proc.stdout:
      if 'step     15/' in line:  # the checkpoints of steps 6 and 12 are complete by then
        break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-3000:]
  [line] = [line for line in stderr.splitlines() if 'interrupted' in line]
  step = int(line.rsplit('step ', 1)[1])
  assert (
    line == f'issf-train: interrupted; the same command resumes {workdir} from its last '
    f'checkpoint, step {step}'
  )
  assert step in (6, 12) and (workdir / 'checkpoints' / str(step) / 'state').is_dir()


def test_a_nan_classification_map_is_explained_not_warned(tiny_run):
  """The tiny split has classes without a positive video: the table says why its
  classification mAP is nan, and no raw UserWarning (with its source line) is printed."""
  assert 'UserWarning' not in (tiny_run.parent / 'stderr.txt').read_text()
  assert 'its AP is undefined' in (tiny_run.parent / 'stdout.txt').read_text()


@pytest.mark.slow
def test_a_full_disk_in_training_is_one_line(tmp_path, tiny_shards, jax_cache_dir):
  """A run folder on a 600 kB tmpfs fills at the third checkpoint: one line naming the
  folder and the checkpoint the same command resumes from (it was 5 tracebacks). Needs root
  (mount); skipped elsewhere."""
  import subprocess

  from tests.conftest import train_args

  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', str(disk)],
                    capture_output=True).returncode != 0:  # fmt: skip
    pytest.skip('cannot mount a small tmpfs here')
  try:
    proc = run_python(train_args(disk / 'run', tiny_shards), subprocess_env(jax_cache_dir),
                      check=False)  # fmt: skip
  finally:
    subprocess.run(['umount', str(disk)], check=True)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  [line] = [line for line in proc.stderr.splitlines() if ': error: ' in line]
  assert line.startswith(f'issf-train: error: --workdir {disk / "run"}: no space left')
  assert 'resumes from its last checkpoint, step 12' in line
