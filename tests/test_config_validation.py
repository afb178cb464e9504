"""The numeric ranges of the config (issf_jax/config_validation.py): every shipped config with
every documented argument passes, and each range refuses what it should."""

from __future__ import annotations

import itertools
import math

import pytest

from configs import activitynet13, synthetic, thumos14
from issf_common import errors
from issf_jax import config_validation
from issf_jax.repro import runs, tables

# The config arguments the configs' docstrings and README document, per module.
DOCUMENTED = {
  thumos14: ['', 'saliency=l2', 'modules=base_brm', 'brm=add', 'update=direct',
             'recipe=spec_v1', 'memory_class_index=released', 'mode=paper', 'memory=batched'],
  activitynet13: ['', 'scale=full', 'scale=small', 'scale=tiny', 'scale=small,modules=base_brm',
                  'recipe=spec_v1', 'scale=small,recipe=spec_v1'],
  synthetic: ['', 'scale=tiny', 'scale=small', 'scale=full', 'recipe=spec_v1'],
}  # fmt: skip
RECIPES = ['recipe=authors', 'recipe=spec_v1', 'recipe=authors,memory_class_index=released']


def _join(*args: str) -> str | None:
  return ','.join(a for a in args if a) or None


@pytest.mark.parametrize('module', list(DOCUMENTED), ids=lambda m: m.__name__)
def test_every_documented_argument_validates(module):
  for arg in DOCUMENTED[module]:
    config = module.get_config(arg or None)
    assert list(config_validation.problems(config)) == [], arg


@pytest.mark.parametrize('module', list(DOCUMENTED), ids=lambda m: m.__name__)
def test_every_repro_table_row_validates(module):
  """Each row of Tables 3-6 under each recipe, at the config's epochs and at --epochs 4."""
  scales = [a for a in DOCUMENTED[module] if a.startswith('scale=')] or ['']
  for name, scale, recipe in itertools.product(sorted(tables.TABLES), scales, RECIPES):
    for row in tables.TABLES[name].rows:
      # Merged as issf-repro merges them (a row's recipe replaces the harness-wide one): a key
      # given twice in one argument string is refused.
      arg = tables.format_args({**tables.parse_args(_join(scale, recipe)),
                                **tables.parse_args(row.args)}) or None  # fmt: skip
      config = module.get_config(arg)
      assert list(config_validation.problems(config)) == [], arg
      runs.scale_epochs(config, 4)
      assert list(config_validation.problems(config)) == [], (arg, '--epochs 4')


def test_every_rule_names_a_field_of_the_configs():
  """A rule whose key no config has would never fire."""
  for module in DOCUMENTED:
    config = module.get_config()
    for key in config_validation.RULES:
      node = config
      for name in key.split('.'):
        assert name in node, (module.__name__, key)
        node = node[name]


@pytest.mark.parametrize(
  'key, value, rule',
  [
    ('train.batch_size', 0, '>= 1'),
    ('train.batch_size', -3, '>= 1'),
    ('train.num_epochs', 0, '>= 1'),
    ('data.eval_batch_size', 0, '>= 1'),
    ('optim.lr', -1.0, '> 0'),
    ('optim.lr', 0.0, '> 0'),
    ('optim.lr', math.nan, '> 0'),
    ('optim.weight_decay', -1e-4, '>= 0'),
    ('model.dropout', 1.5, '[0, 1)'),
    ('model.dropout', 1.0, '[0, 1)'),
    ('model.saliency_ratio', 1.2, '[0, 1]'),
    ('model.sigma', -0.1, '[0, 1]'),
    ('memory.slots', 0, '>= 1'),
    ('loss.kd_temperature', 0.0, '> 0'),
    ('eval.proposals.fps', 0.0, '> 0'),
    ('eval.proposals.stride', 0, '>= 1'),
    ('eval.tiou_thresholds', [0.5, 1.5], '(0, 1]'),
    ('eval.tiou_thresholds', [0.0], '(0, 1]'),
    ('eval.tiou_thresholds', [], 'empty'),
  ],
)
def test_a_value_out_of_range_is_named(key, value, rule):
  config = thumos14.get_config()
  *path, field = key.split('.')
  node = config
  for name in path:
    node = node[name]
  node[field] = value
  [(got_key, got_value, got_rule)] = config_validation.problems(config)
  assert got_key == key and rule in got_rule
  with pytest.raises(errors.ConfigError, match=f'config {key}='):
    config_validation.validate(config)


@pytest.mark.parametrize(
  'key', sorted(config_validation.CHOICES), ids=lambda k: k.replace('.', '-')
)
def test_a_string_outside_its_choices_is_named(key):
  config = thumos14.get_config('dem=residual')  # dem=paper leaves model.dem_read out
  section, field = key.split('.')
  assert field in config[section], key  # every choice rule names a real field
  if isinstance(config[section][field], tuple):  # each element is checked
    bad, rule = ('official', 'nosuch'), 'must hold only'
  else:
    bad, rule = 'nosuch', 'must be one of'
  config[section][field] = bad
  [(got_key, got_value, got_rule)] = config_validation.problems(config)
  assert (got_key, got_value) == (key, bad) and got_rule.startswith(rule)


def test_an_empty_cas_threshold_range_is_refused():
  config = thumos14.get_config()
  config.eval.proposals.thresholds_stop = config.eval.proposals.thresholds_start
  [(key, _, rule)] = config_validation.problems(config)
  assert key == 'eval.proposals.thresholds_stop' and 'empty' in rule


def test_an_unknown_scale_argument_is_a_config_error():
  for module in (activitynet13, synthetic):
    with pytest.raises(errors.ConfigError, match="scale='tinyy'"):
      module.get_config('scale=tinyy')


def test_best_metric_names_a_metric_the_evaluation_reports(tiny_run):
  """The choices are exactly the metrics a real evaluation logged (the tiny run's last, rskp),
  and with an extra protocol its prefixed ones; a name outside them is refused."""
  import json

  from issf_jax.train import run_dir

  config = run_dir.load_config(str(tiny_run))
  lines = (tiny_run / 'metrics.jsonl').read_text().splitlines()
  [record] = [r for r in map(json.loads, lines) if r['step'] == 24 and 'eval/average_mAP' in r]
  logged = {k.removeprefix('eval/') for k in record if k.startswith('eval/')}
  assert set(config_validation.best_metric_choices(config)) == logged
  with config.unlocked():
    config.eval.extra_protocols = ('official',)
  choices = config_validation.best_metric_choices(config)
  assert 'official/average_mAP' in choices and 'official/classification_mAP' not in choices
  config.train.best_metric = 'official/mAP@0.5'
  assert list(config_validation.problems(config)) == []
  config.train.best_metric = 'nosuch'
  [(key, value, rule)] = config_validation.problems(config)
  assert (key, value) == ('train.best_metric', 'nosuch') and 'natural_average_mAP' in rule
  config.train.best_metric = ''  # no best checkpoint
  assert list(config_validation.problems(config)) == []
