"""Shared test fixtures: paths to `../shared` and its golden data, and small ISSF models.

`../shared` (next to the repository) holds read-only reference material. Tests that need it
skip when it is absent, and fail when a folder named by an environment variable is missing.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import pytest

from issf_jax import defaults
from issf_jax.model import build_model, init_params

REPO_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_DIR.parent / 'shared'

# The small test model: D = 64, C = 5 (the D=64 golden weights have the same sizes).
SMALL_D = 64
SMALL_C = 5


def golden_dir(name: str, env_var: str | None = None) -> Path:
  """The golden folder `../shared/golden/<name>`, or the folder named by `env_var` when set.

  Skips the calling test when the default folder does not exist (no `../shared` checkout);
  fails when the environment variable names a folder that does not exist.
  """
  override = os.environ.get(env_var) if env_var else None
  if override:
    path = Path(override)
    if not path.is_dir():
      pytest.fail(f'{env_var}={override!r} is not a directory.')
    return path
  path = SHARED_DIR / 'golden' / name
  if not path.is_dir():
    pytest.skip(f'golden data {path} not present')
  return path


@pytest.fixture(scope='session')
def shared_dir() -> Path:
  """`../shared`; skips when it is absent."""
  if not SHARED_DIR.is_dir():
    pytest.skip(f'{SHARED_DIR} not present')
  return SHARED_DIR


def small_config(**overrides):
  """The default `model` config section at D = 64, C = 5, with `overrides` applied."""
  config = defaults.model_config(num_classes=SMALL_C, feature_dim=SMALL_D)
  config.update(overrides)
  return config


@functools.cache
def _small_params():
  # The default config creates every parameter any variant uses (both BRM channel units),
  # so one tree serves every variant; linen's apply ignores the ones a variant does not use.
  model = build_model(small_config())
  return jax.jit(lambda key: init_params(model, key))(jax.random.key(0))


@pytest.fixture(scope='session')
def small_params():
  """Initial parameters of the D = 64, C = 5 model (shared by every variant)."""
  return _small_params()
