"""The experiment configs: the papers' hyperparameters, ablation arguments, --config overrides."""

from __future__ import annotations

import pytest
from absl import flags
from ml_collections import config_flags

from configs import activitynet13, common, synthetic, thumos14
from tests.conftest import REPO_DIR, run_python, subprocess_env


def test_thumos14_has_the_paper_hyperparameters():
  c = thumos14.get_config()
  assert c.dataset == 'thumos14'
  assert (c.model.num_classes, c.model.feature_dim) == (20, 2048)
  assert c.train.num_epochs == 180
  assert c.optim.lr == 5e-5
  assert c.train.batch_size == 10
  assert c.model.sigma == 0.88
  assert c.model.saliency_ratio == 0.5  # p
  assert c.model.brm_reduction == 4  # r
  assert c.loss.theta == 0.2
  assert c.loss.lambda_att == 0.1  # lambda
  # The default recipe is the authors' code: memory at the end of epoch index 1, 9 slots,
  # merge until epoch 85 (moment_up), 0.8/0.2 pseudo-label, BRM MLPs without biases.
  assert c.ablation.recipe == 'authors' and c.memory.class_index == 'own'
  assert (c.train.memory_init_epoch, c.memory.merge_until_epoch) == (1, 85)
  assert (c.memory.slots, c.memory.update_mode, c.memory.read_empty_slots) == (
    9,
    'merge_blend',
    True,
  )
  assert (c.model.pseudo_label_brm_weight, c.model.pseudo_label_dem_weight) == (0.8, 0.2)
  assert (c.model.brm_mlp_bias, c.model.brm_empty_set, c.model.saliency_min_selected) == (
    False,
    'zero',
    0,
  )
  assert c.eval.protocol == 'rskp'
  assert c.data.mode == 'thumos'
  assert c.eval.tiou_thresholds == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
  # The default ablation arguments: the full model.
  assert (c.model.use_brm, c.model.use_dem, c.model.brm_variant) == (True, True, 'weighted')
  assert (c.model.saliency_strategy, c.model.saliency_distance) == ('distance', 'l1')


def test_spec_v1_recipe_keeps_the_earlier_resolutions():
  c = thumos14.get_config('recipe=spec_v1')
  assert (c.train.memory_init_epoch, c.memory.slots, c.memory.update_mode) == (100, 5, 'ours')
  assert (c.model.pseudo_label_brm_weight, c.model.pseudo_label_dem_weight) == (1.0, 1.0)
  assert (c.model.brm_mlp_bias, c.model.brm_empty_set, c.model.saliency_min_selected) == (
    True,
    'renormalize',
    1,
  )
  assert c.memory.read_empty_slots is False
  assert activitynet13.get_config('recipe=spec_v1').train.memory_init_epoch == 50
  assert thumos14.get_config('recipe=spec_v1,update=momentum').memory.update_mode == 'momentum'
  released = thumos14.get_config('memory_class_index=released')
  assert (released.memory.class_index, released.memory.merge_tie_order) == ('released', 'torch')


def test_tie_orders_default_to_the_device_and_torch_on_request():
  """`index` (no host callback: cacheable programs) unless `ties=torch` asks for the authors'
  CPU order, or the released indexing, where a video's snippets meet themselves in the merge."""
  ties = lambda c: (c.model.saliency_tie_order, c.memory.merge_tie_order)
  assert ties(thumos14.get_config()) == ('index', 'index')
  assert 'ties' not in thumos14.get_config().ablation  # the default leaves no trace
  assert ties(thumos14.get_config('ties=torch')) == ('torch', 'torch')
  assert ties(thumos14.get_config('memory_class_index=released')) == ('index', 'torch')
  assert ties(thumos14.get_config('memory_class_index=released,ties=index')) == ('index', 'index')
  assert thumos14.get_config('ties=torch').ablation.ties == 'torch'


def test_recipe_epoch_events_follow_num_epochs_overrides():
  c = synthetic.get_config()
  c.train.num_epochs = 90  # as --config.train.num_epochs=90 does
  assert (c.train.memory_init_epoch, c.memory.merge_until_epoch) == (0, 43)
  c = synthetic.get_config('recipe=spec_v1')
  c.train.num_epochs = 90
  assert c.train.memory_init_epoch == 50


def test_activitynet13_has_the_paper_hyperparameters():
  c = activitynet13.get_config()
  assert (c.model.num_classes, c.model.feature_dim) == (200, 2048)
  assert c.train.num_epochs == 100
  assert c.optim.lr == 1e-4
  assert c.train.batch_size == 32
  assert c.model.sigma == 0.9
  assert c.model.saliency_ratio == 0.9
  assert c.model.brm_reduction == 4
  assert (c.loss.theta, c.loss.lambda_att) == (0.2, 0.1)
  assert c.train.memory_init_epoch == 1  # recipe=authors: ceil(2 * 100 / 180) - 1
  assert c.data.mode == 'activitynet' and c.data.t_s == 75
  assert c.eval.protocol == 'official'
  assert c.eval.tiou_thresholds == pytest.approx([0.5 + 0.05 * i for i in range(10)])


def test_synthetic_loads():
  c = synthetic.get_config()
  assert c.dataset == 'synthetic' and c.data.synthetic_scale == 'small'
  assert (c.model.num_classes, c.model.feature_dim) == (20, 256)
  assert 0 <= c.train.memory_init_epoch < c.train.num_epochs
  assert synthetic.get_config('scale=tiny').data.synthetic_scale == 'tiny'
  # Each scale's model width is the width its generator writes.
  for scale, dim in (('tiny', 64), ('small', 256), ('full', 2048)):
    model = synthetic.get_config(f'scale={scale}').model
    assert (model.feature_dim, model.embed_dim) == (dim, dim), scale


def test_a_config_argument_given_twice_is_refused():
  from issf_common import errors

  with pytest.raises(errors.ConfigError, match='modules is given twice'):
    synthetic.get_config('modules=full,modules=base')


@pytest.mark.parametrize('module', [thumos14, activitynet13, synthetic])
def test_ablation_arguments_set_their_fields(module):
  c = module.get_config('saliency=l2')
  assert (c.model.saliency_strategy, c.model.saliency_distance) == ('distance', 'l2')
  assert module.get_config('saliency=random').model.saliency_strategy == 'random'
  assert module.get_config('saliency=classification').model.saliency_strategy == 'classification'
  assert module.get_config('brm=add').model.brm_variant == 'add'
  assert module.get_config('update=direct').memory.update_mode == 'direct'
  assert module.get_config('memory=batched').memory.mode == 'batched'
  assert module.get_config('mode=paper').model.saliency_mode == 'paper'

  base = module.get_config('modules=base')
  assert (base.model.use_brm, base.model.use_dem, base.model.fusion) == (False, False, 'base')
  assert base.train.memory_init_epoch == -1  # no memory to build

  both = module.get_config('saliency=l2,brm=add,update=direct,modules=base_brm')
  assert (both.model.use_brm, both.model.use_dem) == (True, False)
  assert both.train.memory_init_epoch == -1
  assert both.model.saliency_distance == 'l2' and both.model.brm_variant == 'add'
  assert both.memory.update_mode == 'direct'
  assert both.ablation['modules'] == 'base_brm' and both.ablation['brm'] == 'add'
  # Arguments change only what they name.
  full = module.get_config()
  assert both.optim.to_dict() == full.optim.to_dict()
  assert both.train.num_epochs == full.train.num_epochs


@pytest.mark.parametrize(
  'arg,message',
  [
    ('salincy=l2', "Unknown config argument 'salincy'"),
    ('saliency=l3', "saliency='l3'"),
    ('modules=brm_only', "modules='brm_only'"),
    ('update', 'is not key=value'),
  ],
)
def test_bad_ablation_arguments_are_errors(arg, message):
  with pytest.raises(ValueError, match=message):
    thumos14.get_config(arg)
  with pytest.raises(ValueError):
    common.parse_arg(arg)


def _parse(argv: list[str]):
  """Parses `argv` the way launch.train does (config_flags, locked config)."""
  values = flags.FlagValues()
  argv = ['prog', *argv]  # the override flags are declared from argv
  config_flags.DEFINE_config_file(
    'config', None, 'config', flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


def test_config_flag_overrides_and_arguments():
  path = str(REPO_DIR / 'configs' / 'thumos14.py')
  c = _parse([
    '--config', f'{path}:brm=add,modules=base_brm', '--config.model.sigma=0.5',
    '--config.train.batch_size=4', '--config.data.shards_dir=/x', '--config.optim.lr=0.001',
  ])  # fmt: skip
  assert c.model.sigma == 0.5 and c.train.batch_size == 4 and c.optim.lr == 0.001
  assert isinstance(c.train.batch_size, int)
  assert c.data.shards_dir == '/x'
  assert c.model.brm_variant == 'add' and c.model.use_dem is False
  assert c.train.num_epochs == 180  # untouched


def test_config_flag_typo_is_an_error_in_process():
  path = str(REPO_DIR / 'configs' / 'thumos14.py')
  # ml_collections raises the ConfigDict's AttributeError ('Did you mean "sigma"?').
  with pytest.raises((flags.Error, AttributeError), match='sigmaa'):
    _parse(['--config', path, '--config.model.sigmaa=0.5'])


@pytest.mark.parametrize(
  'extra,message',
  [
    (['--config.model.sigmaa=0.5'], 'Did you mean "sigma" instead of "sigmaa"'),
    (['--config.train.batch_size=ten'], 'batch_size'),
  ],
)
def test_train_binary_rejects_bad_overrides(tmp_path, jax_cache_dir, extra, message):
  workdir = tmp_path / 'run'
  proc = run_python(
    ['-m', 'launch.train', '--config', REPO_DIR / 'configs' / 'synthetic.py', '--workdir',
     workdir, '--config.data.shards_dir=/nonexistent', *extra],
    subprocess_env(jax_cache_dir), check=False, timeout=120,
  )  # fmt: skip
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-3000:]
  assert not workdir.exists()  # failed at flag parsing, before the trainer started


def test_train_binary_rejects_a_bad_ablation_argument(tmp_path, jax_cache_dir):
  workdir = tmp_path / 'run'
  proc = run_python(
    ['-m', 'launch.train', '--config', f'{REPO_DIR / "configs" / "synthetic.py"}:brm=bogus',
     '--workdir', workdir],
    subprocess_env(jax_cache_dir), check=False, timeout=120,
  )  # fmt: skip
  assert proc.returncode != 0
  assert "brm='bogus'" in proc.stderr, proc.stderr[-3000:]
  assert not workdir.exists()


def test_show_config_prints_the_resolved_config_and_writes_nothing(tmp_path, jax_cache_dir):
  workdir = tmp_path / 'run'
  config = f'{REPO_DIR / "configs" / "synthetic.py"}:recipe=spec_v1'
  proc = run_python(
    ['-m', 'launch.train', '--config', config, '--show_config', '--config.train.num_epochs=90',
     '--workdir', workdir],
    subprocess_env(jax_cache_dir), timeout=120,
  )  # fmt: skip
  want = synthetic.get_config('recipe=spec_v1')
  want.train.num_epochs = 90  # the lazy memory_init_epoch follows: 50
  assert proc.stdout == str(want)
  assert 'memory_init_epoch: 50\n' in proc.stdout and 'num_epochs: 90\n' in proc.stdout
  assert not workdir.exists()
  # No --workdir is needed to look; without --show_config it is.
  proc = run_python(['-m', 'launch.train', '--config', config, '--show_config'],
                    subprocess_env(jax_cache_dir), timeout=120)  # fmt: skip
  assert proc.stdout == str(synthetic.get_config('recipe=spec_v1'))
  proc = run_python(['-m', 'launch.train', '--config', config], subprocess_env(jax_cache_dir),
                    check=False, timeout=120)  # fmt: skip
  assert proc.returncode == 2 and '--workdir is required' in proc.stderr, proc.stderr[-3000:]


def test_tuple_fields_are_overridden_from_the_command_line(jax_cache_dir):
  """tIoU thresholds and extra protocols are tuples, so a flag can set them; a tuple of strings
  written without quotes is one string, and that is refused by name instead of at the first
  evaluation."""
  config = str(REPO_DIR / 'configs' / 'synthetic.py')
  flags = [
    '--config.eval.tiou_thresholds=(0.3, 0.5)',
    "--config.eval.extra_protocols=('official',)",
  ]
  proc = run_python(['-m', 'launch.train', '--config', config, '--show_config', *flags],
                    subprocess_env(jax_cache_dir), timeout=120)  # fmt: skip
  want = synthetic.get_config()
  want.eval.tiou_thresholds, want.eval.extra_protocols = (0.3, 0.5), ('official',)
  assert proc.stdout == str(want)
  proc = run_python(['-m', 'launch.train', '--config', config, '--show_config',
                     '--config.eval.extra_protocols=(official,)'],
                    subprocess_env(jax_cache_dir), check=False, timeout=120)  # fmt: skip
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert (
    proc.stderr.strip()
    .splitlines()[-1]
    .startswith(
      "issf-train: error: --config.eval.extra_protocols=('(official,)',): must hold only rskp"
    )
  ), proc.stderr
