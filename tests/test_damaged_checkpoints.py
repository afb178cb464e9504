"""A damaged checkpoint: one line naming the step, and a resume from the newest intact one.

A checkpoint's files can be cut short (a full disk, a copy interrupted) or lost (a deleted
`_METADATA`, a `meta/` folder removed). `issf-eval` and `issf-predict` name the step and the
other steps on one line; `issf-train` resumes from the newest step that restores, says which
it skipped, and keeps the damaged folder aside (`checkpoints.damaged/<step>`). The resumed run
is the uninterrupted one: resume is bitwise, so its step-24 predictions equal `tiny_run`'s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_DIR, run_python, subprocess_env, train_args
from tests.test_bad_inputs import assert_one_error_line
from tests.test_cli import command, run


def _damage(step_dir: Path, how: str) -> None:
  if how == 'truncated':  # every array file of the state cut to 5 bytes
    for path in (step_dir / 'state' / 'd').iterdir():
      path.write_bytes(path.read_bytes()[:5])
  elif how == 'no_METADATA':
    (step_dir / 'state' / '_METADATA').unlink()
  elif how == 'no_meta':
    shutil.rmtree(step_dir / 'meta')
  else:
    raise ValueError(how)


@pytest.fixture(scope='module')
def damaged_run(tmp_path_factory, tiny_run) -> Path:
  """A copy of the tiny run whose newest checkpoint (24) has truncated state files."""
  workdir = tmp_path_factory.mktemp('damaged') / 'run'
  shutil.copytree(tiny_run, workdir)
  _damage(workdir / 'checkpoints' / '24', 'truncated')
  return workdir


@pytest.mark.parametrize('how', ['truncated', 'no_METADATA', 'no_meta'])
def test_restore_names_the_damaged_step(tmp_path, tiny_run, how):
  """Each kind of damage is one DamagedCheckpointError naming the step and the others; the
  newest intact step still restores."""
  from issf_jax import checkpointing
  from issf_jax.train import restore, run_dir

  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run / 'checkpoints', workdir / 'checkpoints')
  _damage(workdir / 'checkpoints' / '24', how)
  config = run_dir.load_config(str(tiny_run))
  with pytest.raises(checkpointing.DamagedCheckpointError, match=r'step 24 is damaged .*'
                     r'the other steps are \[6, 12, 18\]\.$'):  # fmt: skip
    restore.restore_state(config, str(workdir / 'checkpoints'), 'latest')
  _, step = restore.restore_state(config, str(workdir / 'checkpoints'), 18)
  assert step == 18


def test_eval_names_the_damaged_step(damaged_run):
  proc = run(command('issf-eval') + ['--workdir', damaged_run])
  assert_one_error_line(proc, 'issf-eval', 'step 24 is damaged', 'other steps are [6, 12, 18]')


def test_predict_names_the_damaged_step(damaged_run, tmp_path):
  np.save(tmp_path / 'x.npy', np.zeros((8, 64), np.float32))
  proc = run(command('issf-predict') + ['--workdir', damaged_run, '--features', tmp_path / 'x.npy'])
  assert_one_error_line(proc, 'issf-predict', 'step 24 is damaged')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['x.npy']  # no detections written


def test_resume_skips_the_damaged_step(damaged_run, tiny_run, tiny_shards, jax_cache_dir, tmp_path):
  """Resumes from step 18, says it skipped 24, and trains step 24 again to the same result.
  The shards are named relative to the working folder: the run's config.json names them by
  the absolute path the run was started with, so this is no config change."""
  workdir = tmp_path / 'run'  # a copy: the other tests read the damaged run as it is
  shutil.copytree(damaged_run, workdir)
  (workdir / 'predictions' / 'step_24.json').unlink()
  shards = os.path.relpath(tiny_shards, REPO_DIR)  # the subprocess runs in REPO_DIR
  proc = run_python(train_args(workdir, shards), subprocess_env(jax_cache_dir))
  warning = [line for line in proc.stderr.splitlines() if 'Skipped damaged checkpoint' in line]
  assert len(warning) == 1 and 'step(s) [24]' in warning[0], proc.stderr[-3000:]
  assert 'resuming from step 18' in warning[0]
  assert 'Traceback' not in proc.stderr
  assert (workdir / 'checkpoints.damaged' / '24' / 'state').is_dir()  # kept to look at
  assert (workdir / 'checkpoints' / '24' / 'state' / '_METADATA').is_file()  # saved again
  assert json.loads((workdir / 'config.json').read_text())['data']['shards_dir'] == str(tiny_shards)
  again = json.loads((workdir / 'predictions' / 'step_24.json').read_text())
  assert again == json.loads((tiny_run / 'predictions' / 'step_24.json').read_text())
