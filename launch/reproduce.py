r"""Reproduces one of the paper's ablation tables over seeds: `issf-repro`.

  issf-repro --table 4 --seeds 3                        # synthetic benchmark, scale small
  issf-repro --table 4 --seeds 3 --config_args recipe=spec_v1 --workdir runs/repro
  issf-repro --table 4 --seeds 3 --config_args 'recipe=authors;recipe=spec_v1'  # both, one table
  issf-repro --table 3 --seeds 5 --dataset shards --shards_dir data/thumos14_shards \
    --config configs/thumos14.py
  issf-repro --table 4 --seeds 1 --scale tiny --epochs 4 --rows base,issf   # a smoke test

Tables 3 (saliency), 4 (modules), 5 (BRM variants) and 6 (memory updates) are defined in
`issf_jax/repro/tables.py`. Every (row, seed) is one run of the project's trainer in
`<workdir>/runs/<key>`, keyed by the resolved config and the data: a finished run is never
trained again, an interrupted one resumes from its checkpoint, and rows that resolve to the
same config share one run. Seed i sets `train.seed` to the config's seed + i (initialisation,
dropout and batch order); with --vary_synthetic_draw it also draws the synthetic data afresh.

Writes `<workdir>/<name>.md` (mean ± std over seeds; last-epoch and best-on-test tables apart),
`<name>.json` (every run) and `<name>.png` (bars with error bars), and prints the markdown.
`--config.x=y` overrides apply to every run; --epochs N sets `train.num_epochs` and scales the
epoch indices (memory init, ...) with it.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
import traceback

from absl import flags, logging
from ml_collections import config_flags

import configs
from issf_common import errors, outputs, paths
from issf_jax import config_validation
from launch import cli

_DEFAULT_CONFIG = os.path.join(os.path.dirname(configs.__file__), 'synthetic.py')

_TABLE = flags.DEFINE_string('table', None, "The paper's table: 3, 4, 5 or 6.")
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Seeds per row.')
_ROWS = flags.DEFINE_string('rows', '', 'Comma-separated row keys (default: every row).')
_DATASET = flags.DEFINE_enum('dataset', 'synthetic', ['synthetic', 'shards'], 'Data.')
_SHARDS_DIR = flags.DEFINE_string('shards_dir', None, 'Prepared shards (--dataset shards).')
_SCALE = flags.DEFINE_string('scale', None, "Synthetic scale (default: the config's, or small).")
_DATA_SEED = flags.DEFINE_integer('data_seed', 0, 'Synthetic draw (of seed 0).', lower_bound=0)
_VARY = flags.DEFINE_bool('vary_synthetic_draw', False, 'Seed i uses synthetic draw data_seed+i.')
_CONFIG = config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'Experiment config file.',
                                          lock_config=True)  # fmt: skip
_CONFIG_ARGS = flags.DEFINE_string(
  'config_args', '', "Config arguments added to every row; several sets separated by ';' "
  'repeat the table under each (recipe=authors;recipe=spec_v1).',
)  # fmt: skip
_EPOCHS = flags.DEFINE_integer('epochs', 0, 'Override train.num_epochs, scaling epoch indices.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/repro', 'Data, runs and reports go here.')
_NAME = flags.DEFINE_string(
  'name', '', 'Report file name (default: from table, data, args, rows, epochs, overrides).'
)
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', cli.COMPILATION_CACHE_HELP)
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the plan (runs, keys, status); train none.')


class InputError(errors.InputError):
  """Bad command-line input: one line, exit status 2 (launch/cli.py)."""


def machine() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  if os.path.isfile('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = re.findall(r'^model name\s*:\s*(.+)$', f.read(), re.M)
    cpu = names[0] if names else cpu
  device = jax.devices()[0]
  return f'{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {device.device_kind}'


def datasets(module, extra_args: str, workdir: str):
  """(list of per-seed runs.Dataset, a description, a tag for file names)."""
  from issf_jax.repro import runs

  if _DATASET.value == 'shards':
    if not _SHARDS_DIR.value:
      raise InputError('--dataset shards needs --shards_dir (a folder written by issf-prepare).')
    manifest = runs.load_manifest(_SHARDS_DIR.value)
    data = runs.Dataset(_SHARDS_DIR.value, manifest, -1, None)
    desc = f'prepared shards `{_SHARDS_DIR.value}` ({manifest.get("name", "?")})'
    return [data] * _SEEDS.value, desc, 'shards'
  scale = _SCALE.value
  if not scale:
    first = extra_args.split(';')[0]
    scale = module.get_config(first or None).data.get('synthetic_scale', 'small')
  out = []
  for i in range(_SEEDS.value):
    seed = _DATA_SEED.value + (i if _VARY.value else 0)
    t0, root = time.time(), paths.join(workdir, 'data')
    fresh = not paths.is_file(paths.join(runs.synthetic_shards_dir(root, scale, seed),
                                         'manifest.json'))  # fmt: skip
    shards = runs.synthetic_shards(root, scale, seed)
    if fresh:
      print(f'synthetic benchmark ({scale}, draw {seed}) -> {shards} in {time.time() - t0:.0f} s')
    out.append(runs.Dataset(shards, runs.load_manifest(shards), seed, scale))
  draws = sorted({d.data_seed for d in out})
  desc = f'synthetic benchmark, scale `{scale}`, draw(s) {", ".join(map(str, draws))}'
  return out, desc, f'synthetic-{scale}' + ('-draws' if _VARY.value else '')


def plan(workdir: str):
  from issf_jax.repro import runs, tables

  spec = config_flags.get_config_filename(flags.FLAGS['config'])
  path, _, spec_args = spec.partition(':')
  overrides = dict(config_flags.get_override_values(flags.FLAGS['config']))
  if 'data.shards_dir' in overrides:
    raise InputError('set the data with --dataset/--shards_dir, not --config.data.shards_dir.')
  # `path:args` applies to every ';'-separated set of --config_args.
  sets = _CONFIG_ARGS.value.split(';')
  extra_args = ';'.join(','.join(filter(None, [spec_args, a.strip()])) for a in sets)
  if _SEEDS.value < 1:
    raise InputError(f'--seeds {_SEEDS.value}: need at least 1.')
  try:
    table = tables.get_table(_TABLE.value, _ROWS.value)
    module = runs.load_config_module(path)
    data, desc, tag = datasets(module, extra_args, workdir)
    specs = runs.plan_table(table, module, data, extra_args=extra_args, epochs=_EPOCHS.value,
                            overrides=overrides)  # fmt: skip
    for spec in specs:  # --epochs and the rows' arguments too, before any run trains
      config_validation.validate(spec.config)
    table = tables.expand(table, extra_args)  # the rows as reported
  except ValueError as e:
    raise InputError(str(e)) from None
  return dict(table=table, specs=specs, path=path, extra_args=extra_args, overrides=overrides,
              data_desc=desc, data_tag=tag)  # fmt: skip


def execute_all(p, workdir: str, after_each) -> dict[str, dict]:
  """Trains every unfinished unique run, seed by seed (a complete 1-seed table comes first);
  calls `after_each(outcomes)` after each; returns key -> result (or {'error': ...})."""
  from issf_jax.repro import runs

  unique = sorted(runs.unique_runs(p['specs']).values(), key=lambda s: s.seed_index)
  outcomes = {}
  for n, spec in enumerate(unique, 1):
    key, directory = spec.key, runs.run_directory(workdir, spec.key)
    done = runs.load_result(directory, key)
    where = f'[{n}/{len(unique)}] {spec.row_label}, seed {spec.seed} -> {directory}'
    if done is not None:
      print(f'{where}: finished earlier, skipped.', flush=True)
      outcomes[key] = {**done, 'reused': True}
      continue
    step = runs.latest_checkpoint_step(directory)
    print(f'\n{where}: ' + (f'resuming from step {step}.' if step else 'training.'), flush=True)
    try:
      outcomes[key] = {**runs.execute(spec, directory), 'reused': False}
      print(f'{where}: done in {outcomes[key]["minutes"]:.1f} min.', flush=True)
    except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
      traceback.print_exc()
      outcomes[key] = {'error': f'{type(e).__name__}: {e}'}
    after_each(outcomes)
  return outcomes


def records(p, outcomes: dict, workdir: str) -> list[dict]:
  from issf_jax.repro import runs

  out = []
  for s in p['specs']:
    result = outcomes.get(s.key, {})
    shared = sorted({o.row_label for o in p['specs'] if o.key == s.key} - {s.row_label})
    record = {
      'row_key': s.row_key, 'row_label': s.row_label, 'args': s.args, 'seed_index': s.seed_index,
      'seed': s.seed, 'data_seed': s.data_seed, 'shards_dir': s.shards_dir, 'key': s.key,
      'run_dir': runs.run_directory(workdir, s.key), 'shared_with_rows': shared,
      'status': 'failed' if 'error' in result else 'finished' if result else 'pending',
    }  # fmt: skip
    for field in ('metrics', 'minutes', 'resumed_from_step', 'reused', 'num_epochs',
                  'steps_per_epoch', 'git_revision', 'error'):  # fmt: skip
      if field in result:
        record[field] = result[field]
    out.append(record)
  return out


def print_plan(specs, workdir: str) -> None:
  """One line per (row, seed): its run directory and whether it is finished, begun or new."""
  from issf_jax.repro import runs

  width = max(len(s.row_label) for s in specs)
  for s in specs:
    d = runs.run_directory(workdir, s.key)
    if runs.load_result(d, s.key):
      state = 'finished'
    elif paths.is_dir(d):
      state = f'checkpoint at step {runs.latest_checkpoint_step(d)}'
    else:
      state = 'new'
    print(f'{s.row_label:<{width}}  seed {s.seed:<3} data {s.data_seed:<3} {d}  {state}  '
          f'`{s.args}`')  # fmt: skip
  print(f'{len(runs.unique_runs(specs))} distinct runs for {len(specs)} (row, seed) pairs.')


def write_report(p, outcomes: dict, workdir: str, t0: float) -> tuple[str, str, list[dict]]:
  """Writes `<name>.md`, `.json` and `.png` from the outcomes so far; (name, markdown, records)."""
  from issf_jax.repro import report, runs

  table, specs = p['table'], p['specs']
  recs = records(p, outcomes, workdir)
  summaries = report.aggregate(table, recs)
  config = specs[0].config
  tiou = report.tiou_label(config.eval.tiou_thresholds)
  seeds = sorted({s.seed for s in specs})
  shared = sorted({', '.join(sorted({o.row_label for o in specs if o.key == s.key}))
                   for s in specs if sum(o.key == s.key for o in specs) > 1})  # fmt: skip
  overrides = ' '.join(f'--config.{k}={v}' for k, v in p['overrides'].items())
  header = [
    f'Data: {p["data_desc"]}. Config: `{os.path.relpath(p["path"])}`'
    + (f', harness-wide args `{p["extra_args"]}`' if p['extra_args'] else '')
    + (f', overrides `{overrides}`' if overrides else '')
    + f'; {config.train.num_epochs} epochs.',
    f'Protocol `{config.eval.protocol}` on the `{config.data.eval_subset}` split, average mAP '
    f'over tIoU {tiou}; mAP in %, mean ± sample std (ddof 1) over {len(seeds)} seed(s) '
    f'(train.seed {", ".join(map(str, seeds))}: initialisation, dropout, batch order).',
    f'Machine: {machine()}. min/run: wall minutes of the invocation that finished the run.',
  ]
  if shared:
    header.append('Rows sharing one run (identical resolved configs): ' + '; '.join(shared) + '.')
  if config.get('dataset') == 'activitynet13':
    # The per-row paper numbers are THUMOS14's (0.1:0.7); none exists at 0.5:0.95 to set beside.
    for summary in summaries:
      summary['paper_avg'] = summary['paper_map50'] = None
    header.append("The paper's ablation numbers are THUMOS14's; on ActivityNet v1.3 it reports "
                  'only the full model (Table 2: average mAP 25.8, mAP@0.5 39.4).')  # fmt: skip
  pending = sum(r['status'] == 'pending' for r in recs)
  if pending:
    header.append(f'**Incomplete**: {pending} of {len(recs)} (row, seed) results still pending.')
  title = f'Table {table.name}: {table.title}'
  name = report.report_name(
    table.name,
    p['data_tag'],
    p['extra_args'],
    rows=_ROWS.value,
    epochs=_EPOCHS.value,
    overrides=p['overrides'],
    name=_NAME.value,
  )
  md = report.markdown(title, header, summaries, tiou)
  outputs.write_text(paths.join(workdir, f'{name}.md'), md)
  payload = {
    'table': table.name, 'title': title, 'command': sys.argv, 'config': p['path'],
    'config_args': p['extra_args'], 'overrides': p['overrides'], 'data': p['data_desc'],
    'protocol': config.eval.protocol, 'tiou': tiou, 'machine': machine(),
    'wall_minutes': (time.time() - t0) / 60, 'summary': summaries, 'runs': recs,
  }  # fmt: skip
  runs.write_json_atomic(paths.join(workdir, f'{name}.json'), payload)
  report.plot(paths.join(workdir, f'{name}.png'), title, summaries, tiou)
  return name, md, recs


def main(argv):
  del argv  # launch/cli.py refuses positional arguments
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value
  outputs.check_writable(workdir, '--workdir')  # before the synthetic data is written there
  p = plan(workdir)  # an InputError: one line, exit status 2 (launch/cli.py), nothing written
  paths.makedirs(workdir)
  if _DRY_RUN.value:
    print_plan(p['specs'], workdir)
    return
  from issf_jax import compile_cache

  # Seeds and rows share programs: the persistent cache compiles each once.
  compile_cache.configure(_COMPILATION_CACHE.value)
  t0 = time.time()
  # The report is rewritten after every run, so an interrupted study still has one.
  outcomes = execute_all(p, workdir, lambda o: write_report(p, o, workdir, t0))
  name, md, recs = write_report(p, outcomes, workdir, t0)
  print('\n' + md)
  print(f'Wrote {workdir}/{name}.md, .json and .png.')
  failed = [r for r in recs if r['status'] == 'failed']
  if failed:
    print(f'{len(failed)} run(s) failed; see the JSON.', file=sys.stderr)
    sys.exit(1)


def run():
  flags.mark_flags_as_required(['table'])
  cli.run_absl(main, sys.modules[__name__], 'issf-repro')


if __name__ == '__main__':
  run()
