"""A quiet console: nothing from TensorFlow's or absl's C++ logging before a command's own output.

TF 2.21 prints 4 lines at import (`WARNING: All log messages before absl::InitializeLog()...` and
`oneDNN custom operations are on`, twice) whatever `TF_CPP_MIN_LOG_LEVEL` says;
`issf_common/tensorflow_cpu.py` sets `TF_ENABLE_ONEDNN_OPTS=0` unless the user set it. Each case
runs in a subprocess with the user's environment minus both TF variables (as a new user's shell).
"""

from __future__ import annotations

import os
import platform
import re
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


# What TensorFlow's and absl's C++ logging print (`I0000 00:00:... port.cc:153] ...`).
NOISE = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations')


@pytest.fixture(scope='module')
def wtalc_src(tmp_path_factory):
  """A W-TALC release folder (D = 8) whose test subset lists one video twice: issf-prepare
  writes the train shards (importing TensorFlow, which writes them), then stops at the test
  subset with one error line."""
  folder = tmp_path_factory.mktemp('wtalc_src')
  v = source.VideoEntry
  videos = [
    v('vid_a', 'train', 6.4, ('Alpha',), ((1.0, 2.0, 'Alpha'),)),
    v('vid_b', 'test', 3.2, ('Beta',), ((0.0, 1.0, 'Beta'),)),
    v('vid_b', 'test', 3.2, ('Beta',), ((0.0, 1.0, 'Beta'),)),
  ]
  features = [np.ones((source.expected_num_snippets(x.duration), 8), np.float32) for x in videos]
  wtalc.write_wtalc(str(folder), 'Toy', ('Alpha', 'Beta'), videos, features,
                    raw_subsets=['validation', 'test', 'test'])  # fmt: skip
  return folder


def _prepare(src, out, **env) -> subprocess.CompletedProcess:
  return _run(['-m', 'launch.prepare', '--format', 'wtalc', '--src', src, '--out', out], **env)


def test_help_prints_nothing_on_stderr():
  proc = _run(['-m', 'launch.prepare', '--help'])
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('usage: issf-prepare'), proc.stdout[:200]
  assert proc.stderr == ''


def test_importing_tensorflow_prints_nothing():
  proc = _run(['-c', 'import issf_common.tensorflow_cpu'])
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ''


def test_error_after_tensorflow_loaded(wtalc_src, tmp_path):
  proc = _prepare(wtalc_src, tmp_path / 'out')
  lines = proc.stderr.splitlines()
  assert proc.returncode == 2, proc.stderr
  assert lines[-1] == "issf-prepare: error: duplicate video ids in subset test: ['vid_b']"
  # Before it, only the command's own progress (absl's Python logging, `INFO:absl:...`).
  assert all(line.startswith('INFO:absl:') for line in lines[:-1]), lines
  assert not [line for line in lines if NOISE.search(line)], lines


@pytest.mark.skipif(
  sys.platform != 'linux' or platform.machine() != 'x86_64', reason='the oneDNN banner is x86 TF'
)
def test_a_users_own_setting_wins(wtalc_src, tmp_path):
  # The control: with the user's TF_ENABLE_ONEDNN_OPTS=1 the same command prints TF's banner
  # first, so the case above does load TensorFlow and the check above can fail.
  proc = _prepare(wtalc_src, tmp_path / 'out', TF_ENABLE_ONEDNN_OPTS='1')
  lines = proc.stderr.splitlines()
  assert proc.returncode == 2 and lines[-1].startswith('issf-prepare: error: duplicate'), lines
  assert any('oneDNN custom operations are on' in line for line in lines[:-1]), lines
