"""The commands as a user meets them: `--help` on each, and user errors as one line, exit 2.

Each test runs the installed console script (`.venv/bin/issf-*`, the wrapper for which absl's
own short help listed no flag) or `python -m`, in a subprocess. None of them starts JAX on a
device or TensorFlow, so each takes about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_DIR

BIN = Path(sys.executable).parent


def command(name: str) -> list[str]:
  """The console script `name` of this environment (`make env` installs them)."""
  path = BIN / name
  if not path.exists():
    pytest.skip(f'{path} not installed (pip install -e .)')
  return [str(path)]


def run(args, timeout: float = 120) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(REPO_DIR))
  return subprocess.run(
    [str(a) for a in args], cwd=REPO_DIR, env=env, capture_output=True, text=True,
    timeout=timeout,
  )  # fmt: skip


def assert_user_error(proc, *pieces: str) -> str:
  """rc 2, no traceback, one error line on stderr that holds `pieces` (log lines may precede)."""
  assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
  assert 'Traceback' not in proc.stderr + proc.stdout, proc.stderr[-4000:]
  lines = [line for line in proc.stderr.splitlines() if ': error: ' in line]
  assert len(lines) == 1, proc.stderr
  assert not [line for line in proc.stderr.splitlines() if line.lstrip().startswith('File "')]
  for piece in pieces:
    assert piece in lines[0], (piece, lines[0])
  return lines[0]


# (arguments before --help, the description's first words, flags that must be listed)
HELP_CASES = {
  'issf-train': ([], 'Trains ISSF on a shard folder',
                 ['--config', '--workdir', '--allow_config_change', '--distributed',
                  '--compilation_cache']),
  'issf-eval': ([], 'Evaluates a trained run',
                ['--workdir', '--checkpoint', '--checkpoint_dir', 'issf-eval score',
                 '--compilation_cache']),
  'issf-predict': ([], 'Detects the actions in one video',
                   ['--workdir', '--checkpoint', '--features', '--plot', '--compilation_cache']),
  'issf-prepare': ([], 'Converts released I3D features', ['--format', '--src', '--out']),
  'issf-repro': ([], "Reproduces one of the paper's ablation tables over seeds",
                 ['--table', '--seeds', '--config_args', '--vary_synthetic_draw',
                  '--compilation_cache']),
  'issf-eval score': (['score'], 'Scores an ActivityNet-format predictions file',
                      ['--predictions', '--ground_truth', '--subset', '--tiou']),
}  # fmt: skip


@pytest.mark.parametrize('name', list(HELP_CASES))
def test_help_lists_the_commands_own_flags(name):
  sub, description, wanted = HELP_CASES[name]
  proc = run(command(name.split()[0]) + sub + ['--help'])
  assert proc.returncode == 0, proc.stderr
  text = ' '.join(proc.stdout.split())  # argparse wraps the description
  assert description in text, text
  for flag in wanted:
    assert flag in text, (flag, text)


def test_help_through_python_m():
  proc = run([sys.executable, '-m', 'launch.train', '--help'])
  assert proc.returncode == 0 and '--allow_config_change' in proc.stdout, proc.stderr


def test_prepare_missing_input_folder(tmp_path):
  proc = run(command('issf-prepare') + ['--format', 'wtalc', '--src', tmp_path / 'absent',
                                        '--out', tmp_path / 'out'])  # fmt: skip
  assert_user_error(proc, 'issf-prepare: error:', str(tmp_path / 'absent'), 'no such folder')


def test_prepare_wrong_feature_width_names_the_video(tmp_path):
  from data_pipelines import source, wtalc

  videos = [
    source.VideoEntry('vid_a', 'train', 6.4, ('Alpha',), ((1.0, 2.0, 'Alpha'),)),
    source.VideoEntry('vid_b', 'test', 6.4, ('Beta',), ((0.5, 1.5, 'Beta'),)),
  ]
  t = source.expected_num_snippets(6.4)
  features = [np.zeros((t, 2048), np.float32), np.zeros((t, 2047), np.float32)]
  wtalc.write_wtalc(str(tmp_path / 'src'), 'Toy', ('Alpha', 'Beta'), videos, features,
                    raw_subsets=['validation', 'test'])  # fmt: skip
  proc = run(command('issf-prepare') + ['--format', 'wtalc', '--src', tmp_path / 'src',
                                        '--out', tmp_path / 'out'])  # fmt: skip
  assert_user_error(proc, 'issf-prepare: error:', 'vid_b', '2047')
  assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_score_malformed_predictions_json(tmp_path):
  pred = tmp_path / 'pred.json'
  pred.write_text('{"results": {"v": [')
  gt = tmp_path / 'gt.json'
  video = {'subset': 'test', 'annotations': [{'segment': [0.0, 1.0], 'label': 'A'}]}
  gt.write_text(json.dumps({'database': {'v': video}}))
  proc = run(command('issf-eval') + ['score', '--predictions', pred, '--ground_truth', gt,
                                     '--subset', 'test'])  # fmt: skip
  assert_user_error(proc, 'issf-eval score: error:', 'pred.json', 'invalid JSON')


def test_train_missing_shard_folder(tmp_path):
  proc = run(command('issf-train') + [
    '--config', REPO_DIR / 'configs' / 'synthetic.py', '--workdir', tmp_path / 'run',
    f'--config.data.shards_dir={tmp_path / "no_shards"}',
  ])  # fmt: skip
  assert_user_error(proc, 'issf-train: error:', str(tmp_path / 'no_shards'), 'manifest.json')
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'flag, pieces',
  [
    ('--config.train.batch_sise=4', ['--config.train.batch_sise', "no field 'batch_sise'"]),
    ('--config.train.batch_size=four', ['--config.train.batch_size=four', 'int']),
  ],
)
def test_train_config_typo_or_bad_value(tmp_path, flag, pieces):
  proc = run(command('issf-train') + [
    '--config', REPO_DIR / 'configs' / 'synthetic.py', '--workdir', tmp_path / 'run', flag,
  ])  # fmt: skip
  assert_user_error(proc, 'issf-train: error:', *pieces)


def test_train_missing_config_file_and_bad_ablation(tmp_path):
  proc = run(command('issf-train') + ['--config', tmp_path / 'nope.py', '--workdir', tmp_path])
  assert_user_error(proc, str(tmp_path / 'nope.py'), 'No such file')
  config = f'{REPO_DIR / "configs" / "thumos14.py"}:saliency=l3'
  proc = run(command('issf-train') + ['--config', config, '--workdir', tmp_path])
  assert_user_error(proc, "saliency='l3'", 'choose from')


def test_eval_not_a_run_folder(tmp_path):
  proc = run(command('issf-eval') + ['--workdir', tmp_path / 'absent'])
  assert_user_error(proc, 'issf-eval: error:', str(tmp_path / 'absent'), 'config.json')


def test_predict_checkpoint_is_not_a_folder(tmp_path):
  """--checkpoint picks a step everywhere; a run folder there is pointed to --workdir."""
  proc = run(command('issf-predict') + ['--workdir', tmp_path, '--checkpoint', tmp_path,
                                        '--features', tmp_path / 'x.npy'])  # fmt: skip
  assert_user_error(proc, 'issf-predict: error:', '--checkpoint', '--workdir')


def test_a_bug_keeps_its_traceback(tmp_path):
  script = tmp_path / 'buggy.py'
  script.write_text(
    'import sys\nfrom launch import cli\n'
    'def main(argv):\n  raise RuntimeError("a bug")\n'
    "cli.run_absl(main, sys.modules['__main__'], 'buggy')\n"
  )
  proc = run([sys.executable, script])
  assert proc.returncode == 1
  assert 'Traceback' in proc.stderr and 'RuntimeError: a bug' in proc.stderr


def test_no_tpu_backend_line(tmp_path):
  """JAX logs the backends it could not start (TPU, on every CPU machine) at INFO; the
  commands drop that line. JAX_PLATFORMS unset, as a user runs them."""
  script = tmp_path / 'devices.py'
  script.write_text(
    'import sys\nfrom launch import cli\n'
    'def main(argv):\n  import jax\n  print(jax.devices())\n'
    "cli.run_absl(main, sys.modules['__main__'], 'devices')\n"
  )
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  env['PYTHONPATH'] = str(REPO_DIR)
  proc = subprocess.run([sys.executable, script, '--verbosity=0'], cwd=REPO_DIR, env=env,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  assert 'Device' in proc.stdout
  assert 'tpu' not in proc.stderr.lower(), proc.stderr
