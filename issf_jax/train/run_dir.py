"""The run folder's record of the run: `config.json`, `git_revision.txt`, and the resume check.

A resumed run must train the run that its checkpoints started. `check_resume_config` compares
the config with the run's `config.json`, key by key (dotted paths), and refuses a difference
in any key that changes the training trajectory, naming the keys. The keys in `SAFE_KEYS` only
change what is evaluated, logged or kept, or on how many devices the same steps run (the step
is device-count invariant), so they may change freely. `write_run_info` never replaces a
`config.json` that differs without keeping the old one beside it.
"""

from __future__ import annotations

import json
import os
import subprocess

from issf_common import errors, paths
from issf_jax import config_validation

CONFIG_FILE = 'config.json'
# Prefixes ('eval.') and full keys that may differ on resume.
SAFE_KEYS = (
  'eval.',
  'data.eval_subset',
  'data.eval_batch_size',
  'train.log_every_steps',
  'train.eval_every_epochs',
  'train.checkpoint_every_epochs',
  'train.keep_last',
  'train.best_metric',
  'train.max_steps',
  'train.num_devices',
  'train.distributed',
)


class ConfigChangeError(errors.ConfigError):
  """A resume with a config that would change the training."""


def config_dict(config) -> dict:
  """The config as plain JSON data (what `config.json` holds)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def is_safe(key: str) -> bool:
  return any(key.startswith(s) if s.endswith('.') else key == s for s in SAFE_KEYS)


_MISSING = '<absent>'
# Keys added after runs were made, with the value that reproduces what those runs did: their
# absence from a stored config means that value (the code reads them with the same default).
ABSENT_MEANS = {
  'data.micro_buckets': 0,  # the geometric buckets
  'model.matmul_dtype': 'float32',
}


def config_changes(stored: dict, current: dict) -> dict:
  """{dotted key: (stored value, current value)} for every key that differs (a key of
  ABSENT_MEANS missing from `stored` counts as its value there)."""
  a, b = flatten(stored), flatten(current)
  a = {**{k: v for k, v in ABSENT_MEANS.items() if k in b}, **a}
  return {
    k: (a.get(k, _MISSING), b.get(k, _MISSING))
    for k in sorted(a.keys() | b.keys())
    if a.get(k, _MISSING) != b.get(k, _MISSING)
  }


def _describe(changes: dict) -> str:
  def short(v):
    text = json.dumps(v) if v is not _MISSING else v
    return text if len(text) <= 40 else text[:37] + '...'

  return ', '.join(f'{k} {short(a)} -> {short(b)}' for k, (a, b) in changes.items())


def read_config(workdir: str) -> dict | None:
  """`<workdir>/config.json` as plain data, or None when the run has none."""
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    return None
  try:
    return json.loads(paths.read_text(path))
  except (OSError, json.JSONDecodeError) as err:
    raise errors.InputError(f'{path}: cannot be read ({err})') from None


def stored_value(workdir: str, key: str):
  """The value at dotted `key` in the run's config.json, or None (no file, no such key)."""
  stored = read_config(workdir)
  return None if stored is None else flatten(stored).get(key)


def check_resume_config(config, workdir: str, step: int, allow_change: bool = False) -> dict:
  """Compares `config` with `<workdir>/config.json` before a resume at `step`.

  Returns:
    The changes {key: (stored, current)} (all safe, or allowed).
  Raises:
    ConfigChangeError: a key outside SAFE_KEYS differs and `allow_change` is False.
  """
  path = paths.join(workdir, CONFIG_FILE)
  stored = read_config(workdir)
  if stored is None:
    return {}
  current = config_dict(config)
  stored_shards = stored.get('data', {}).get('shards_dir')
  if stored_shards and not os.path.isabs(stored_shards) and '://' not in stored_shards:
    # Written relative by an earlier version; the same folder, now absolute, is no change.
    if os.path.abspath(stored_shards) == current.get('data', {}).get('shards_dir'):
      stored['data']['shards_dir'] = current['data']['shards_dir']
  changes = config_changes(stored, current)
  unsafe = {k: v for k, v in changes.items() if not is_safe(k)}
  if unsafe and not allow_change:
    raise ConfigChangeError(
      f'{path}: resuming at step {step} with a config that changes the training: '
      f"{_describe(unsafe)}. Use the run's config, a new --workdir, or --allow_config_change."
    )
  return changes


def _git_revision() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True)
    dirty = subprocess.run(
      ['git', 'status', '--porcelain'], cwd=here, capture_output=True, text=True
    )
  except OSError:
    return ''
  if out.returncode != 0:
    return ''
  return out.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')


def write_run_info(config, workdir: str, step: int = 0, changes: dict | None = None) -> str | None:
  """Writes config.json and git_revision.txt; returns where the replaced config went, if any.

  When `changes` is non-empty, the old config.json is first renamed to
  `config.before_step_<step>.json`, so the run folder keeps every config it trained with.
  """
  paths.makedirs(workdir)
  path = paths.join(workdir, CONFIG_FILE)
  kept = None
  if changes and paths.exists(path):
    kept = paths.join(workdir, f'config.before_step_{step}.json')
    paths.path(path).replace(kept)
  paths.write_atomic(path, config.to_json_best_effort(indent=2, sort_keys=True))
  paths.write_atomic(paths.join(workdir, 'git_revision.txt'), _git_revision() + '\n')
  return kept


# What every run's config.json holds (configs/common.py's sections).
RUN_CONFIG_SECTIONS = ('data', 'model', 'memory', 'loss', 'optim', 'train', 'eval')


def load_config(workdir: str):
  """The ConfigDict a run wrote to `<workdir>/config.json` (its values in their ranges)."""
  import ml_collections

  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    raise errors.MissingFileError(f'{path} does not exist: is {workdir} a run directory?')
  try:
    data = json.loads(paths.read_text(path))
  except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise errors.ConfigError(f'{path}: cannot be read as JSON ({err})') from None
  missing = [s for s in RUN_CONFIG_SECTIONS if not isinstance(data, dict) or s not in data]
  if missing:
    raise errors.ConfigError(
      f"{path}: not a run's config (no {', '.join(missing)} section); issf-train writes it"
    )
  config = ml_collections.ConfigDict(data)
  for key, value, rule in config_validation.problems(config):  # an edited config.json
    raise errors.ConfigError(f'{path}: {config_validation.describe(key, value, rule)}')
  return config
