"""A quiet console: nothing from TensorFlow's or absl's C++ logging before a command's own output.

TF 2.21 prints 4 lines at import (`WARNING: All log messages before absl::InitializeLog()...` and
`oneDNN custom operations are on`, twice) whatever `TF_CPP_MIN_LOG_LEVEL` says;
`issf_common/tensorflow_cpu.py` sets `TF_ENABLE_ONEDNN_OPTS=0` unless the user set it. Each case
runs in a subprocess with the user's environment minus both TF variables (as a new user's shell).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import source, wtalc
from tests.conftest import REPO_DIR


def _user_env(**extra) -> dict:
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')
  }
  env.update(PYTHONPATH=str(REPO_DIR), JAX_PLATFORMS='cpu', **extra)
  return env


def _run(args, **extra_env) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, *map(str, args)], cwd=REPO_DIR, env=_user_env(**extra_env),
    capture_output=True, text=True, timeout=180,
  )  # fmt: skip


@pytest.fixture(scope='module')
def wtalc_src(tmp_path_factory):
  """A two-video W-TALC release folder (D = 8)."""
  folder = tmp_path_factory.mktemp('wtalc_src')
  videos = [
    source.VideoEntry('vid_a', 'train', 6.4, ('Alpha',), ((1.0, 2.0, 'Alpha'),)),
    source.VideoEntry('vid_b', 'test', 3.2, ('Beta',), ((0.0, 1.0, 'Beta'),)),
  ]
  features = [np.ones((source.expected_num_snippets(v.duration), 8), np.float32) for v in videos]
  wtalc.write_wtalc(str(folder), 'Toy', ('Alpha', 'Beta'), videos, features,
                    raw_subsets=['validation', 'test'])  # fmt: skip
  return folder


def test_help_prints_nothing_on_stderr():
  proc = _run(['-m', 'launch.prepare', '--help'])
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('usage: issf-prepare'), proc.stdout[:200]
  assert proc.stderr == ''


def test_importing_tensorflow_prints_nothing():
  proc = _run(['-c', 'import issf_common.tensorflow_cpu'])
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ''


def test_error_after_tensorflow_loaded_is_the_only_line(wtalc_src):
  # --out == --src is refused after the release has been read and TF imported for the writer.
  proc = _run(['-m', 'launch.prepare', '--format', 'wtalc', '--src', wtalc_src, '--out', wtalc_src])
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.splitlines() == [
    f'issf-prepare: error: --out {wtalc_src}: must differ from --src'
  ]


@pytest.mark.skipif(
  sys.platform != 'linux' or platform.machine() != 'x86_64', reason='the oneDNN banner is x86 TF'
)
def test_a_users_own_setting_wins(wtalc_src):
  # The control: with the user's TF_ENABLE_ONEDNN_OPTS=1 the same command prints TF's banner
  # first, so the case above does load TensorFlow and the check above can fail.
  proc = _run(
    ['-m', 'launch.prepare', '--format', 'wtalc', '--src', wtalc_src, '--out', wtalc_src],
    TF_ENABLE_ONEDNN_OPTS='1',
  )  # fmt: skip
  lines = proc.stderr.splitlines()
  assert proc.returncode == 2 and lines[-1].startswith('issf-prepare: error: --out'), lines
  assert any('oneDNN custom operations are on' in line for line in lines[:-1]), lines
