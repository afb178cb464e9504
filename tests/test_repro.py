"""The reproduction harness `issf-repro` (issf_jax/repro, launch/reproduce.py).

Table rows resolve to the configs they name; mean ± std on hand-made results; the run key
merges identical configs and only those; a finished run is skipped (a fake result file, no
training); one tiny end-to-end run writes the markdown, JSON and PNG.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections
import pytest

from configs import synthetic as synthetic_config
from configs import thumos14 as thumos14_config
from issf_jax.repro import report, runs, tables
from tests.conftest import REPO_DIR, SMALL_D, run_python, subprocess_env

# A stand-in manifest: planning reads only these fields (no shard is opened).
FAKE_MANIFEST = {
  'shards': {'train': [{'file': 'train-0', 'num_examples': 24, 'sha256': 'a' * 64}]},
  'ground_truth': {'file': 'ground_truth.json', 'sha256': 'b' * 64},
  'classes': [f'c{i}' for i in range(20)],
  'feature_dim': 64,
}


def fake_datasets(n: int, manifest=FAKE_MANIFEST) -> list[runs.Dataset]:
  return [runs.Dataset('/nonexistent/shards', manifest, 0, 'tiny')] * n


# ---- Table definitions -------------------------------------------------------------------


def test_paper_tables_data():
  """paper_tables.json as the paper prints it: four tables; each table's last row is ISSF itself,
  so it carries the same numbers (46.8 / 41.8) in every table; every row sets one key, the one
  its table varies."""
  assert sorted(tables.TABLES) == ['3', '4', '5', '6']
  assert [len(t.rows) for _, t in sorted(tables.TABLES.items())] == [5, 3, 6, 3]
  for name, table in tables.TABLES.items():
    issf = {'3': 'l1', '4': 'issf', '5': 'weighted', '6': 'ours'}[name]
    assert [r.key for r in table.rows if (r.paper_avg, r.paper_map50) == (46.8, 41.8)] == [issf]
    assert len(tables.varied_keys(table)) == 1
    assert all(len(tables.parse_args(r.args)) == 1 for r in table.rows)
  # The one cell the extracted paper text leaves ambiguous ('29.3 32.6') stays unknown.
  assert [r.paper_map50 for r in tables.TABLES['4'].rows] == [29.3, None, 41.8]


@pytest.mark.parametrize('module', [synthetic_config, thumos14_config], ids=['synthetic', 'th14'])
@pytest.mark.parametrize('name', sorted(tables.TABLES))
def test_every_row_resolves_to_the_config_it_names(module, name):
  table = tables.get_table(name)
  assert len({r.key for r in table.rows}) == len(table.rows)
  configs = []
  for row in table.rows:
    config = module.get_config(tables.row_args(table, row))
    configs.append(config)
    for key, value in tables.parse_args(row.args).items():
      assert config.ablation[key] == value
  fields = {
    '3': lambda c: (c.model.saliency_strategy, c.model.saliency_distance),
    '4': lambda c: (c.model.use_brm, c.model.use_dem, c.model.fusion, c.train.memory_init_epoch),
    '5': lambda c: c.model.brm_variant,
    '6': lambda c: c.memory.update_mode,
  }[name]
  # Every row changes the field its table is about: no two rows train the same model.
  assert len({repr(fields(c)) for c in configs}) == len(configs)
  if name == '4':
    base, base_brm, issf = configs
    assert (base.model.use_brm, base.model.use_dem) == (False, False)
    assert (base_brm.model.use_brm, base_brm.model.use_dem) == (True, False)
    assert (issf.model.use_brm, issf.model.use_dem) == (True, True)
    assert base_brm.train.memory_init_epoch == -1 and issf.train.memory_init_epoch >= 0


def test_harness_wide_args_merge_into_every_row_and_may_not_clash():
  table = tables.get_table('4')
  assert tables.row_args(table, table.rows[0], 'saliency=l2') == 'saliency=l2,modules=base'
  config = synthetic_config.get_config(tables.row_args(table, table.rows[2], 'update=direct'))
  assert config.memory.update_mode == 'direct' and config.model.use_dem
  with pytest.raises(ValueError, match="sets 'modules'"):
    tables.row_args(table, table.rows[0], 'modules=full')


def test_argument_sets_repeat_the_table():
  table = tables.expand(tables.get_table('4', 'base,issf'), 'update=direct; update=momentum')
  assert [r.key for r in table.rows] == ['base@0', 'issf@0', 'base@1', 'issf@1']
  assert [r.label for r in table.rows][1] == 'Base+BRM+DEM (ISSF) [update=direct]'
  assert [r.args for r in table.rows] == [
    'update=direct,modules=base', 'update=direct,modules=full',
    'update=momentum,modules=base', 'update=momentum,modules=full',
  ]  # fmt: skip
  assert tables.expand(table, '') == table  # one set keeps the keys
  with pytest.raises(ValueError, match="sets 'modules'"):
    tables.expand(tables.get_table('4'), 'update=direct;modules=base')
  # The runs: Base is one run under both sets (it has no memory); ISSF is two.
  specs = runs.plan_table(tables.get_table('4', 'base,issf'), synthetic_config, fake_datasets(1),
                          extra_args='update=direct;update=momentum')  # fmt: skip
  key = {s.row_key: s.key for s in specs}
  assert key['base@0'] == key['base@1'] and key['issf@0'] != key['issf@1']
  assert specs[1].config.memory.update_mode == 'direct'


def test_row_selection_and_unknown_names():
  table = tables.get_table('table5', 'weighted,self')
  assert [r.key for r in table.rows] == ['self', 'weighted']  # the table's order
  with pytest.raises(ValueError, match='Unknown table'):
    tables.get_table('7')
  with pytest.raises(ValueError, match="no row 'dem'"):
    tables.get_table('4', 'base,dem')
  with pytest.raises(ValueError, match='not key=value'):
    tables.parse_args('modules')


# ---- Aggregation ---------------------------------------------------------------------------


def test_mean_std_by_hand():
  mean, std = report.mean_std([1.0, 2.0, 3.0, 4.0])
  assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))  # ddof 1: 5 / (4 - 1)
  assert report.mean_std([7.0]) == (7.0, None)
  assert report.mean_std([3.0, None, float('nan'), 5.0]) == (4.0, pytest.approx(math.sqrt(2)))
  mean, std = report.mean_std([])
  assert math.isnan(mean) and std is None


def _record(row, last_avg, best_avg, best_epoch, status='finished', minutes=2.0):
  metrics = {
    'last': {'average_mAP': last_avg, 'mAP@0.5': last_avg / 2, 'classification_mAP': 0.9,
             'epoch': 30},
    'best': {'average_mAP': best_avg, 'mAP@0.5': best_avg / 2, 'classification_mAP': 0.8,
             'epoch': best_epoch},
  }  # fmt: skip
  rec = {'row_key': row, 'args': f'modules={row}', 'status': status, 'minutes': minutes}
  if status == 'finished':
    rec['metrics'] = metrics
  return rec


def test_aggregate_keeps_last_and_best_apart():
  table = tables.get_table('4', 'base,issf')
  records = [
    _record('base', 0.40, 0.41, 10, minutes=1.0),
    _record('base', 0.44, 0.47, 20, minutes=3.0),
    _record('base', 0.42, 0.44, 30, minutes=2.0),
    _record('issf', 0.30, 0.50, 20),
    _record('issf', 0.0, 0.0, 0, status='failed'),
    _record('issf', 0.0, 0.0, 0, status='pending'),
  ]
  base, issf = report.aggregate(table, records)
  # last: 40, 44, 42 -> mean 42, std sqrt((4 + 4 + 0) / 2) = 2.
  assert base['last']['average_mAP']['mean'] == pytest.approx(42.0)
  assert base['last']['average_mAP']['std'] == pytest.approx(2.0)
  assert base['last']['mAP@0.5']['mean'] == pytest.approx(21.0)
  # best: 41, 47, 44 -> mean 44, std sqrt((9 + 9 + 0) / 2) = 3.
  assert base['best']['average_mAP']['mean'] == pytest.approx(44.0)
  assert base['best']['average_mAP']['std'] == pytest.approx(3.0)
  assert base['best']['epochs'] == [10, 20, 30]
  assert base['last']['classification_mAP']['mean'] == pytest.approx(90.0)
  assert base['best']['classification_mAP']['mean'] == pytest.approx(80.0)
  assert base['minutes'] == pytest.approx(2.0) and base['seeds'] == 3 and base['failed'] == 0
  assert issf['seeds'] == 1 and issf['failed'] == 1 and issf['pending'] == 1
  assert issf['last']['average_mAP'] == {'mean': 30.0, 'std': None, 'values': [30.0]}
  md = report.markdown('T', ['header'], [base, issf], '0.1:0.7')
  last, best = md.split('### Best on test')
  assert (
    '| Base | `modules=base` | 42.0 ± 2.0 | 21.0 ± 1.0 | 90.0 ± 0.0 | 37.1 | 29.3 | 3 |' in last
  )
  assert '| Base+BRM+DEM (ISSF) | `modules=issf` | 30.0 | 15.0 |' in last
  assert '| 1 (1 failed) (1 pending) |' in last
  assert '| Base | 44.0 ± 3.0 | 22.0 ± 1.5 | 80.0 ± 0.0 | 10, 20, 30 |' in best


def test_runs_zeroed_by_the_early_return_get_their_natural_map_in_a_note():
  table = tables.get_table('4', 'base,issf')
  records = [_record('base', 0.40, 0.41, 10), _record('issf', 0.30, 0.5, 20)]
  zeroed = _record('issf', 0.0, 0.45, 20)  # RSKP's early return: 0.0, natural 0.33.
  for rec, natural in ((records[1], 0.30), (zeroed, 0.33)):
    rec['metrics']['last']['natural_average_mAP'] = natural
  base, issf = report.aggregate(table, [*records, zeroed])
  assert issf['last']['zeroed'] == 1 and base['last']['zeroed'] == 0
  assert issf['last']['average_mAP']['mean'] == pytest.approx(15.0)  # The protocol's number.
  assert issf['last']['natural_average_mAP']['mean'] == pytest.approx(31.5)
  assert base['last']['natural_average_mAP']['values'] == [None]  # Not logged by this run.
  md = report.markdown('T', ['header'], [base, issf], '0.1:0.7')
  last = md.split('### Best on test')[0]
  assert '| Base+BRM+DEM (ISSF) † |' in last and '| Base |' in last
  assert '- Base+BRM+DEM (ISSF): 31.5 ± 2.1 [30.0, 33.0] (1 of 2 seeds zeroed)' in last
  # Without a zeroed run there is no mark and no note.
  plain = report.markdown('T', ['header'], report.aggregate(table, records), '0.1:0.7')
  assert '†' not in plain


def test_eval_history_last_and_best(tmp_path):
  lines = [
    {'step': 10, 'train/loss': 3.0},
    {'step': 20, 'eval/average_mAP': 0.30, 'eval/mAP@0.5': 0.2},
    {'step': 40, 'eval/average_mAP': 0.50, 'eval/mAP@0.5': 0.4},
    {'step': 60, 'eval/average_mAP': 0.45, 'eval/mAP@0.5': 0.3},
    {'step': 40, 'eval/average_mAP': 0.50, 'eval/mAP@0.5': 0.41},  # re-evaluated after a resume
    {'step': 80, 'eval/average_mAP': 0.50, 'eval/mAP@0.5': 0.1},  # ties with 40: 40 is best
  ]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(line) + '\n' for line in lines)
  history = runs.read_eval_history(str(tmp_path))
  assert sorted(history) == [20, 40, 60, 80]
  out = runs.summarize_history(history, steps_per_epoch=20)
  assert out['last'] == {'average_mAP': 0.5, 'mAP@0.5': 0.1, 'step': 80, 'epoch': 4}
  assert out['best'] == {'average_mAP': 0.5, 'mAP@0.5': 0.41, 'step': 40, 'epoch': 2}


# ---- Run keys: dedup of identical configs, and only of those ---------------------------------


def _keys(rows, datasets=None, **kwargs):
  table = tables.Table('t', 't', tuple(tables.Row(f'r{i}', f'r{i}', a) for i, a in enumerate(rows)))
  specs = runs.plan_table(table, synthetic_config, datasets or fake_datasets(1), **kwargs)
  return [s.key for s in specs]


def test_identical_resolved_configs_share_a_run():
  # Base reads no BRM/DEM option: these resolve to one run. With BRM on they differ.
  k = _keys([
    'modules=base', 'modules=base,brm=add,update=direct', 'modules=base,saliency=l2',
    'modules=base_brm', 'modules=base_brm,brm=add', 'modules=base_brm,update=direct',
  ])  # fmt: skip
  assert k[0] == k[1] == k[2]
  assert len({k[0], k[3], k[4]}) == 3
  assert k[5] == k[3]  # Base+BRM has no memory to update
  # Table 3's L1 row, Table 4's ISSF row, Table 5's weighted and Table 6's ours are one run.
  rows = [tables.get_table(t, r).rows[0] for t, r in
          [('3', 'l1'), ('4', 'issf'), ('5', 'weighted'), ('6', 'ours')]]  # fmt: skip
  assert len(set(_keys([r.args for r in rows]))) == 1


RECIPE_SETS = 'recipe=authors;recipe=spec_v1;recipe=authors,memory_class_index=released'


def needs_recipes():
  try:
    synthetic_config.get_config('recipe=spec_v1')
  except ValueError:
    pytest.skip('this checkout has no recipe= config argument')


def test_table4_over_the_recipes_shares_what_is_identical():
  needs_recipes()
  specs = runs.plan_table(tables.get_table('4'), synthetic_config, fake_datasets(1),
                          extra_args=RECIPE_SETS)  # fmt: skip
  key = {s.row_key: s.key for s in specs}
  # Base reads no recipe field; Base+BRM has no memory, so the class index cannot matter.
  assert key['base@0'] == key['base@1'] == key['base@2']
  assert key['base_brm@0'] == key['base_brm@2'] != key['base_brm@1']
  assert len({key['issf@0'], key['issf@1'], key['issf@2']}) == 3
  assert len(runs.unique_runs(specs)) == 6


def test_run_key_follows_seed_data_and_results_fields_only():
  table = tables.get_table('4', 'base')
  specs = runs.plan_table(table, synthetic_config, fake_datasets(3))
  assert [s.seed for s in specs] == [2, 3, 4]  # the config's seed + i
  assert len({s.key for s in specs}) == 3
  other_data = dict(FAKE_MANIFEST, ground_truth={'file': 'g', 'sha256': 'c' * 64})
  assert _keys(['modules=base'], fake_datasets(1, other_data)) != _keys(['modules=base'])
  base = _keys(['modules=base'])
  assert _keys(['modules=base'], overrides={'train.log_every_steps': 7}) == base
  assert _keys(['modules=base'], overrides={'optim.lr': 2e-4}) != base
  assert _keys(['modules=base'], overrides={'train.seed': 3}) != base


def test_scale_epochs_fixed_and_derived_indices():
  config = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict({'num_epochs': 30, 'eval_every_epochs': 10})
  config.train.memory_init_epoch = 16  # fixed: scaled, 16 * 4 // 30 = 2
  config.memory = ml_collections.ConfigDict({'off_epoch': -1})  # off: stays
  # Derived from num_epochs (as the recipes do): follows its own rule, 4 * 85 // 180 = 1.
  config.memory.merge_until_epoch = config.train.get_ref('num_epochs') * 85 // 180
  runs.scale_epochs(config, 4)
  assert config.train.num_epochs == 4 and config.train.memory_init_epoch == 2
  assert config.memory.merge_until_epoch == 1 and config.memory.off_epoch == -1
  assert config.train.eval_every_epochs == 10  # an interval, not an index
  assert sorted(runs.epoch_fields(config)) == [
    'memory.merge_until_epoch', 'memory.off_epoch', 'train.memory_init_epoch',
  ]  # fmt: skip


def test_epochs_override_and_schedule_check():
  table = tables.get_table('4')
  specs = runs.plan_table(table, synthetic_config, fake_datasets(1), epochs=4)
  base, _, issf = (s.config for s in specs)
  assert issf.train.num_epochs == 4 and 0 <= issf.train.memory_init_epoch < 3
  assert base.train.memory_init_epoch == -1  # off stays off
  assert base.model.feature_dim == base.model.embed_dim == 64  # the data's
  late = {'train.memory_init_epoch': 3}  # built after the 4th (last) epoch
  with pytest.raises(ValueError, match='DEM would never train'):
    runs.plan_table(table, synthetic_config, fake_datasets(1), epochs=4, overrides=late)


# ---- Resumability ---------------------------------------------------------------------------


def _write_fake_results(workdir, specs, avg_by_row):
  """A finished-run marker per spec, as `runs.execute` writes it (no training)."""
  for s in specs:
    directory = runs.run_directory(str(workdir), s.key)
    os.makedirs(directory, exist_ok=True)
    value = avg_by_row[s.row_key][s.seed_index]
    metrics = {'average_mAP': value, 'mAP@0.5': value, 'classification_mAP': 0.5}
    runs.write_json_atomic(os.path.join(directory, runs.RESULT_FILE), {
      'key': s.key, 'metrics': {'last': {**metrics, 'step': 8, 'epoch': 4},
                                'best': {**metrics, 'step': 8, 'epoch': 4}},
      'minutes': 0.25, 'resumed_from_step': 0,
    })  # fmt: skip


def test_load_result_needs_the_runs_own_key(tmp_path):
  runs.write_json_atomic(str(tmp_path / runs.RESULT_FILE), {'key': 'abc', 'minutes': 1.0})
  assert runs.load_result(str(tmp_path), 'abc')['minutes'] == 1.0
  assert runs.load_result(str(tmp_path), 'abd') is None
  assert runs.load_result(str(tmp_path / 'missing'), 'abc') is None


def test_harness_skips_finished_runs(tmp_path, tiny_shards, jax_cache_dir):
  """Every run of the table already has its marker: the harness trains nothing and reports
  the markers' numbers."""
  from configs import synthetic

  table = tables.get_table('4', 'base,base_brm')
  manifest = runs.load_manifest(str(tiny_shards))
  data = [runs.Dataset(str(tiny_shards), manifest, -1, None)] * 2
  dims = {'model.feature_dim': SMALL_D, 'model.embed_dim': SMALL_D}  # tiny shards: D = 64
  specs = runs.plan_table(table, synthetic, data, epochs=4, overrides=dims)
  _write_fake_results(tmp_path, specs, {'base': [0.30, 0.34], 'base_brm': [0.50, 0.50]})
  proc = run_python(
    ['-m', 'launch.reproduce', '--table', '4', '--rows', 'base,base_brm', '--seeds', '2',
     '--dataset', 'shards', '--shards_dir', tiny_shards, '--epochs', '4', '--workdir', tmp_path,
     '--name', 'fake', f'--config.model.feature_dim={SMALL_D}',
     f'--config.model.embed_dim={SMALL_D}'], subprocess_env(jax_cache_dir), timeout=120,
  )  # fmt: skip
  assert proc.stdout.count('finished earlier, skipped') == 4
  assert 'training.' not in proc.stdout and 'resuming' not in proc.stdout
  md = (tmp_path / 'fake.md').read_text()
  assert '| Base | `modules=base` | 32.0 ± 2.8 | 32.0 ± 2.8 | 50.0 ± 0.0 |' in md
  assert '| Base+BRM | `modules=base_brm` | 50.0 ± 0.0 |' in md
  out = json.loads((tmp_path / 'fake.json').read_text())
  assert [r['reused'] for r in out['runs']] == [True] * 4
  assert not any(os.path.isdir(os.path.join(r['run_dir'], 'checkpoints')) for r in out['runs'])


def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_shards, jax_cache_dir):
  env = subprocess_env(jax_cache_dir)
  for args, message in [
    (['--table', '7'], 'Unknown table'),
    (['--table', '4', '--dataset', 'shards', '--shards_dir', tmp_path], 'no manifest.json'),
    (['--table', '4', '--config_args', 'modules=base'], "sets 'modules'"),
    (['--table', '4', '--dataset', 'shards', '--shards_dir', tiny_shards], '64-d features'),
  ]:
    proc = run_python(['-m', 'launch.reproduce', *map(str, args), '--workdir', tmp_path], env,
                      check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith('issf-repro: ')
    assert message in proc.stderr and 'Traceback' not in proc.stderr


# ---- End to end -----------------------------------------------------------------------------


def test_tiny_end_to_end(tmp_path, jax_cache_dir):
  """Synthetic data generated by the harness, 2 rows x 1 seed, 2 steps each; then a second
  invocation trains nothing."""
  args = ['-m', 'launch.reproduce', '--table', '4', '--rows', 'base,base_brm', '--seeds', '1',
          '--scale', 'tiny', '--epochs', '1', '--workdir', tmp_path, '--name', 'e2e',
          '--config.train.max_steps=2', '--config.train.batch_size=4',
          '--config.data.bucket_size=96', '--config.data.eval_batch_size=16',
          '--config.data.batching=exact']  # fmt: skip
  env = subprocess_env(jax_cache_dir)
  run_python(args, env, timeout=300)
  md = (tmp_path / 'e2e.md').read_text()
  assert '### Last epoch' in md and '### Best on test' in md and '| Base+BRM |' in md
  assert 'Incomplete' not in md  # rewritten after each run; the last one is complete
  out = json.loads((tmp_path / 'e2e.json').read_text())
  assert [r['row_key'] for r in out['runs']] == ['base', 'base_brm']
  for r in out['runs']:
    assert r['status'] == 'finished' and r['minutes'] > 0 and not r['reused']
    assert r['metrics']['last']['step'] == 2 and 0 <= r['metrics']['last']['average_mAP'] <= 1
    assert os.path.isfile(os.path.join(r['run_dir'], runs.RESULT_FILE))
  assert out['protocol'] == 'rskp' and out['tiou'] == '0.1:0.7'
  assert (tmp_path / 'e2e.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert os.path.isfile(tmp_path / 'data' / 'synthetic_tiny_seed0_shards' / 'manifest.json')
  again = run_python(args, env, timeout=120)
  assert again.stdout.count('finished earlier, skipped') == 2
  assert json.loads((tmp_path / 'e2e.json').read_text())['runs'][0]['reused']


# Argument pairs that must share one run. After a new option lands (e.g. recipe=...), add a
# pair here: the slow test below trains both and checks that they really are the same run.
SAME_RUN_PAIRS = {
  'base': ('modules=base', 'modules=base,brm=add,update=direct,saliency=l2'),
  'base_brm': ('modules=base_brm', 'modules=base_brm,update=momentum'),
  'base_recipes': ('modules=base,recipe=authors', 'modules=base,recipe=spec_v1'),
  'base_brm_class_index': ('modules=base_brm,recipe=authors',
                           'modules=base_brm,recipe=authors,memory_class_index=released'),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize('pair', SAME_RUN_PAIRS.values(), ids=SAME_RUN_PAIRS.keys())
def test_shared_key_means_the_same_training(pair, tmp_path, tiny_shards, jax_cache_dir):
  """The dedup rule against the trainer: two configs with one key train and score the same,
  bitwise (losses, norms, every evaluation), although their unused options differ."""
  from tests.conftest import TINY_TRAIN_OVERRIDES, config_flags

  if 'recipe' in ''.join(pair):
    needs_recipes()

  overrides = {**TINY_TRAIN_OVERRIDES, 'train.max_steps': 6}
  manifest = runs.load_manifest(str(tiny_shards))
  data = [runs.Dataset(str(tiny_shards), manifest, -1, None)]
  table = tables.Table('t', 't', tuple(tables.Row(f'r{i}', f'r{i}', a) for i, a in enumerate(pair)))
  specs = runs.plan_table(table, synthetic_config, data, overrides=overrides)
  assert specs[0].key == specs[1].key
  logs = []
  for i, args in enumerate(pair):
    workdir = tmp_path / f'run{i}'
    run_python(['-m', 'launch.train', '--config', f'{REPO_DIR / "configs" / "synthetic.py"}:{args}',
                '--workdir', workdir, f'--config.data.shards_dir={tiny_shards}',
                *config_flags(overrides)], subprocess_env(jax_cache_dir))  # fmt: skip
    records = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
    # Logged schedule values of unused options (lambda_s, eta, memory fill) may differ.
    unused = ('train/lambda_s', 'train/eta', 'train/memory')
    logs.append([{k: v for k, v in r.items() if not k.startswith(unused)} for r in records])
  assert any('eval/average_mAP' in r for r in logs[0])
  assert logs[0] == logs[1]


def test_report_names_keep_studies_in_one_workdir_apart():
  from issf_jax.repro.report import report_name

  base = report_name('4', 'shards', 'recipe=authors;recipe=spec_v1')
  assert base == 'table4_shards_recipe-authors-recipe-spec_v1'
  names = {
    base,
    report_name('4', 'shards', 'recipe=authors;recipe=spec_v1', rows='issf'),
    report_name('4', 'shards', 'recipe=authors;recipe=spec_v1', epochs=20),
    report_name(
      '4', 'shards', 'recipe=authors;recipe=spec_v1', overrides={'model.attn_logits': 'dot_sqrt_d'}
    ),  # fmt: skip
    report_name(
      '4', 'shards', 'recipe=authors;recipe=spec_v1', overrides={'model.attn_logits': 'cosine5'}
    ),  # fmt: skip
  }
  assert len(names) == 5
  assert 'attn_logits-dot_sqrt_d' in report_name(
    '4', 's', '', overrides={'model.attn_logits': 'dot_sqrt_d'}
  )
  long = {f'model.option_{i}': 'value' * 3 for i in range(8)}
  name = report_name('4', 's', '', overrides=long)
  assert name.startswith('table4_s_overrides-') and len(name) < 60
  assert name != report_name('4', 's', '', overrides={**long, 'model.option_0': 'other'})
  assert report_name('4', 's', 'x=1', rows='issf', name='mine') == 'mine'
