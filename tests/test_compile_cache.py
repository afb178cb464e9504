"""The persistent compilation cache of the commands (issf_jax/compile_cache.py).

Where the cache goes (the flag, the environment, the default folder, 'off'), and that a second
tiny training run of the same shapes loads every program from the cache and compiles none.
"""

from __future__ import annotations

import os
import re

from issf_jax import compile_cache
from tests.conftest import TINY_TRAIN_OVERRIDES, run_python, subprocess_env, train_args


def test_default_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV_DIR, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.resolve('') == str(tmp_path / 'xdg' / 'issf-jax' / 'xla')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compile_cache.resolve(None) == str(tmp_path / 'home' / '.cache' / 'issf-jax' / 'xla')


def test_environment_wins_over_the_default_and_the_flag_over_both(monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path / 'env'))
  assert compile_cache.resolve('') == str(tmp_path / 'env')
  assert compile_cache.resolve(str(tmp_path / 'flag')) == str(tmp_path / 'flag')
  assert compile_cache.resolve('off') is None
  assert compile_cache.resolve('OFF') is None
  # A bucket stays a URL (not made a local path `<cwd>/gs:/bucket/xla`); JAX opens it itself.
  assert compile_cache.resolve('gs://bucket/xla') == 'gs://bucket/xla'


def test_relative_folder_is_made_absolute(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert compile_cache.resolve('cache') == str(tmp_path / 'cache')


def _counts(stderr: str) -> tuple[int, int, int]:
  """(programs, from scratch, from the cache) of the run's closing 'Compilation:' line."""
  found = re.findall(
    r'Compilation: (\d+) programs in [\d.]+ s, (\d+) from scratch, (\d+) from the persistent '
    r'cache', stderr,
  )  # fmt: skip
  assert len(found) == 1, stderr[-3000:]
  return tuple(map(int, found[0]))


def test_a_second_run_compiles_nothing(tmp_path, tiny_shards):
  # One step, then the last step's evaluation and checkpoint: the train step, the evaluation's
  # programs and the small ones. The tie orders are the jittable ones (the default, set here
  # because the torch orders' host callbacks are never cached: module docstring).
  overrides = {
    **TINY_TRAIN_OVERRIDES, 'train.max_steps': 1, 'model.saliency_tie_order': 'index',
    'memory.merge_tie_order': 'index',
  }  # fmt: skip
  env = subprocess_env(tmp_path / 'unused')
  for name in (compile_cache.ENV_DIR, compile_cache.ENV_MIN_COMPILE_TIME):
    env.pop(name)
  env['XDG_CACHE_HOME'] = str(tmp_path / 'xdg')
  first = run_python(train_args(tmp_path / 'run1', tiny_shards, overrides), env)
  folder = tmp_path / 'xdg' / 'issf-jax' / 'xla'
  assert f'Persistent compilation cache: {folder}' in first.stderr
  programs, scratch, hits = _counts(first.stderr)
  assert scratch == programs > 0 and hits == 0
  assert len(os.listdir(folder)) == programs  # every program written, the small ones too
  # The same run again, the cache named by the flag: every program is loaded.
  args = train_args(tmp_path / 'run2', tiny_shards, overrides)
  second = run_python(args + [f'--compilation_cache={folder}'], env)
  assert _counts(second.stderr) == (programs, 0, programs)
