"""Shared test fixtures: the in-repository test data, and small ISSF models.

Golden and annotation files live in the repository: `tests/testdata/<name>/` (goldens; each folder's
README.md says where its files came from) and `data_pipelines/annotations/` (real annotations that
library code reads too). An environment variable can name another folder of the same layout (e.g.
cases kept aside); a folder named that way that does not exist fails the test.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

import jax
import pytest

from configs import common
from issf_jax.model import build_model, init_params

REPO_DIR = Path(__file__).resolve().parents[1]
TESTDATA_DIR = REPO_DIR / 'tests' / 'testdata'

# The small test model: D = 64, C = 5 (the D=64 golden weights have the same sizes).
SMALL_D = 64
SMALL_C = 5

# Test programs are small and run once or twice, so on CPU their compile time dominates.
# Without LLVM optimisation it is about halved; the program's semantics do not change.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def fast_jit(fun=None, **kwargs):
  """`jax.jit` with FAST_COMPILE; usable as `@fast_jit` or `@fast_jit(static_argnames=...)`."""
  if fun is None:
    return functools.partial(fast_jit, **kwargs)
  return jax.jit(fun, compiler_options=FAST_COMPILE, **kwargs)


def golden_dir(name: str, env_var: str | None = None) -> Path:
  """The folder named by `env_var` when set, else the in-repository copy `tests/testdata/<name>`.

  Fails the calling test when the environment variable names a folder that does not exist.
  """
  override = os.environ.get(env_var) if env_var else None
  if override:
    path = Path(override)
    if not path.is_dir():
      pytest.fail(f'{env_var}={override!r} is not a directory.')
    return path
  return TESTDATA_DIR / name


def data_file(folder: Path, name: str) -> Path:
  """`folder/name`, or its gzip copy `folder/name.gz` (the in-repository copies of large JSON
  goldens are gzipped; a folder from an environment variable may hold either)."""
  path = Path(folder) / name
  if path.is_file() or not path.with_name(path.name + '.gz').is_file():
    return path
  return path.with_name(path.name + '.gz')


def read_json(path: Path):
  """json.load of a `.json` or `.json.gz` file."""
  path = Path(path)
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rt', encoding='utf-8') as f:
    return json.load(f)


def small_config(**overrides):
  """The default `model` config section at D = 64, C = 5, with `overrides` applied."""
  config = common.model_config(num_classes=SMALL_C, feature_dim=SMALL_D)
  config.update(overrides)
  return config


@functools.cache
def _small_params():
  # The default config creates every parameter any variant uses (both BRM channel units),
  # so one tree serves every variant; linen's apply ignores the ones a variant does not use.
  model = build_model(small_config())
  return fast_jit(lambda key: init_params(model, key))(jax.random.key(0))


@pytest.fixture(scope='session')
def small_params():
  """Initial parameters of the D = 64, C = 5 model (shared by every variant)."""
  return _small_params()


# ---- End-to-end trainer fixtures (test_trainer_*.py, test_eval_binary.py) -------------------
# The trainer runs as `python -m launch.train` subprocesses (absl flags, a kill, several
# devices, a pod), with a session-wide JAX persistent compilation cache so that each program is
# compiled once per session, and with XLA's backend optimisation level 0 (compiles about a third
# faster on this tiny model; every run in a comparison uses the same flags, so "bitwise" still
# compares like with like).

# Tiny runs: 24 train / 16 test videos of D = 64; every video fits one 96-snippet bucket, so
# each program compiles for one shape. Batch 4 -> 6 steps per epoch; the memory is built at the
# end of epoch 1 (step 12); evaluation every 2 epochs; a checkpoint every epoch, all kept.
# `data.batching` is pinned: 'auto' picks 'micro' on the CPU, which compiles one program per
# length bucket met (27 programs instead of 14 for this run: about 3x its CPU time); the tests
# of 'auto' itself are in test_trainer_batching.py.
TINY_TRAIN_OVERRIDES = {
  'data.batching': 'exact',
  'model.feature_dim': SMALL_D,
  'model.embed_dim': SMALL_D,
  'data.bucket_size': 96,
  'data.eval_batch_size': 16,
  'train.batch_size': 4,
  'train.num_epochs': 4,
  'train.memory_init_epoch': 1,
  'train.eval_every_epochs': 2,
  'train.checkpoint_every_epochs': 1,
  'train.keep_last': 10,
}
TINY_STEPS_PER_EPOCH = 6
SUBPROCESS_TIMEOUT_S = 540


def config_flags(overrides: dict) -> list[str]:
  """{'train.batch_size': 4} -> ['--config.train.batch_size=4']."""
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def synthetic_config(shards_dir: str, overrides: dict | None = None):
  """configs/synthetic.py with `data.shards_dir` and the dotted `overrides` applied."""
  from configs import synthetic

  config = synthetic.get_config()
  config.data.shards_dir = str(shards_dir)
  for key, value in (overrides or {}).items():
    *path, field = key.split('.')
    node = config
    for name in path:
      node = node[name]
    if field not in node:
      raise KeyError(f'{key}: no such config field')
    node[field] = value
  return config


def subprocess_env(cache_dir, num_devices: int | None = None) -> dict:
  """Environment of a trainer subprocess: the repo on PYTHONPATH, CPU only, the compilation
  cache, `num_devices` simulated host devices, short collective timeouts."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO_DIR), env.get('PYTHONPATH')) if p)
  env.update(
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=str(cache_dir),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
    TF_CPP_MIN_LOG_LEVEL='2',
  )
  xla = ['--xla_backend_optimization_level=0']
  if num_devices:
    xla.append(f'--xla_force_host_platform_device_count={num_devices}')
  # A collective deadlock (docs/design.md §9) aborts in seconds instead of hanging.
  xla += [
    '--xla_cpu_collective_call_warn_stuck_timeout_seconds=5',
    '--xla_cpu_collective_call_terminate_timeout_seconds=30',
  ]
  env['XLA_FLAGS'] = ' '.join(xla)
  return env


def run_python(args, env: dict, *, check: bool = True, timeout: float = SUBPROCESS_TIMEOUT_S):
  """Runs `python ARGS` in the repository root; fails the test with the output's tail."""
  import subprocess
  import sys

  proc = subprocess.run(
    [sys.executable, *map(str, args)], cwd=REPO_DIR, env=env, capture_output=True, text=True,
    timeout=timeout,
  )  # fmt: skip
  if check and proc.returncode != 0:
    pytest.fail(
      f'python {" ".join(map(str, args))} exited with {proc.returncode}\n'
      f'--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}'
    )
  return proc


def train_args(workdir, shards_dir, overrides: dict | None = None) -> list:
  """`-m launch.train` arguments of a tiny run (TINY_TRAIN_OVERRIDES, then `overrides`)."""
  flags = config_flags({**TINY_TRAIN_OVERRIDES, **(overrides or {})})
  return ['-m', 'launch.train', '--config', REPO_DIR / 'configs' / 'synthetic.py', '--workdir',
          workdir, f'--config.data.shards_dir={shards_dir}', *flags]  # fmt: skip


@pytest.fixture(scope='session')
def jax_cache_dir(tmp_path_factory):
  """The JAX compilation cache shared by the session's subprocesses (ISSF_TEST_JAX_CACHE
  names a persistent one, to make reruns faster)."""
  override = os.environ.get('ISSF_TEST_JAX_CACHE')
  if override:
    os.makedirs(override, exist_ok=True)
    return Path(override)
  return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='session')
def tiny_shards(tmp_path_factory) -> Path:
  """The tiny synthetic benchmark (seed 0: 24 train / 16 test videos, D = 64), prepared."""
  from data_pipelines import prepare, synthetic

  root = tmp_path_factory.mktemp('tiny_data')
  src = synthetic.generate(str(root / 'raw'), scale='tiny', seed=0)
  prepare.convert('wtalc', src, str(root / 'shards'))
  return root / 'shards'


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, tiny_shards, jax_cache_dir) -> Path:
  """The workdir of one uninterrupted tiny run (1 device, 24 steps; checkpoints at 6, 12, 18
  and 24, evaluated at 12 and 24). Tests that write into a run copy it first."""
  workdir = tmp_path_factory.mktemp('tiny_run') / 'run'
  proc = run_python(train_args(workdir, tiny_shards), subprocess_env(jax_cache_dir))
  # What the user saw, beside the run folder (tests of the console output read it).
  (workdir.parent / 'stdout.txt').write_text(proc.stdout)
  (workdir.parent / 'stderr.txt').write_text(proc.stderr)
  return workdir
