r"""This project's trainer against the ISSF authors' PyTorch loop, on the same data and machine.

  python -m benchmarks.peer_speed --json peer.json \
      [--authors_src ISSF_CHECKOUT --torch_python TORCH_VENV/bin/python] [--epochs 4]

One run, one machine, one after the other:
  1. data: the synthetic THUMOS14-shaped set at the real lengths (the 200 + 212 videos of the
     packaged THUMOS14 annotations, T = floor(duration * 25/16), D = 2048, 65,215 training
     snippets), written once in the W-TALC layout the authors' `VideoDataset` reads and prepared
     into shards for this project (`--data_dir` keeps and reuses it: about 1.1 GB);
  2. this project: `issf-train`'s trainer (`loop.Trainer`) with `configs/thumos14.py` as a user
     gets it (every default, batch 10, the memory built at the end of epoch index 1), `--epochs`
     epochs, evaluation and checkpoints only at the end (not timed), in a subprocess of its own;
     `--jax_runs cold,warm` runs it again on the same persistent compilation cache, to show what
     a rerun pays;
  3. the authors' loop (`benchmarks/authors_loop.py`, run by `--torch_python`): their
     `Train.train` unmodified, one video at a time, on the same videos.
Printed per run: wall seconds of every epoch by phase (warm-up: epochs 0-1; memory phase: 2+),
the memory initialisation, the compile seconds and program count inside each epoch, peak RSS,
and the ratios (authors / ours) of the steady epochs (the last epoch of each phase) and of the
first epochs (compilation included). `--json` writes the same numbers, with the machine (CPU
model, cores, load average before and after each run).

Setting up the authors' side (never committed here):
  git clone https://github.com/MICLAB-BUPT/ISSF && git -C ISSF checkout c24b7cb
  python3 -m venv torchenv && torchenv/bin/pip install torch==2.13.0 numpy scipy pandas
  (torch 2.13.0, CPU build, is what the parity goldens were made with; on this project's
  machines `pip install torch==2.13.0` takes a local file.)
Without `--authors_src`, only this project's side runs.

Expected on the 2-core Intel Xeon (KVM) development machine, idle: see docs/results.md,
"Against the authors' code" (the whole benchmark takes about 15 minutes at 4 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
WTALC_NAME = 'Thumos14reduced'  # what the authors' VideoDataset looks for
COMPILE_EVENTS = (
  '/jax/core/compile/jaxpr_trace_duration',
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
  '/jax/core/compile/backend_compile_duration',
)
BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'
CACHE_HIT = '/jax/compilation_cache/cache_hits'


def load_average() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------- data


def prepare_data(root: pathlib.Path, scale: str) -> tuple[str, str]:
  """(the authors' dataset_dir, this project's shards); generated once under `root`."""
  from data_pipelines import prepare, synthetic

  raw = root / 'raw'
  src = raw / WTALC_NAME
  shards = root / 'shards'
  if not (shards / 'manifest.json').exists():
    real = 'thumos14' if scale == 'full' else None
    synthetic.generate(str(src), scale=scale, seed=0, name=WTALC_NAME, layout='rskp',
                       real_annotations=real)  # fmt: skip
    prepare.convert('wtalc', str(src), str(shards))
    _labels_as_str(src)
  return str(raw), str(shards)


def _labels_as_str(src: pathlib.Path) -> None:
  """labels_all.npy with str labels, as in the real THUMOS14 release (the synthetic writer
  stores bytes, which this project's reader accepts and the authors' `strlist2multihot`,
  comparing with `classlist[i].decode()`, does not)."""
  import numpy as np

  path = src / 'labels_all.npy'
  labels = np.load(path, allow_pickle=True)
  fixed = np.empty(len(labels), object)
  for i, video in enumerate(labels):
    fixed[i] = [x.decode() if isinstance(x, bytes) else x for x in video]
  np.save(path, fixed, allow_pickle=True)


# ------------------------------------------------------------------------------ our trainer


def jax_config(shards: str, epochs: int, scale: str, overrides: list[str]):
  """configs/thumos14.py as a user gets it, for `epochs` epochs, evaluated only at the end."""
  from configs import thumos14

  config = thumos14.get_config()
  config.data.shards_dir = shards
  config.train.num_epochs = epochs
  config.train.memory_init_epoch = 1  # the recipe's: built at the end of epoch index 1
  config.train.eval_every_epochs = config.train.checkpoint_every_epochs = 10**6
  config.train.log_every_steps = 10**9  # the epoch-end log line only
  if scale != 'full':
    config.model.feature_dim = config.model.embed_dim = 64
  for item in overrides:
    key, value = item.split('=', 1)
    section, field = key.removeprefix('config.').split('.')
    old = config[section][field]
    config[section][field] = (value in ('True', 'true', '1')) if isinstance(old, bool) else (
      type(old)(value) if old is not None else value)  # fmt: skip
  return config


def run_jax_worker(args) -> dict:
  """One training run of this project's trainer, timed by epoch (runs in its own process)."""
  import contextlib
  import resource

  import jax

  from issf_jax.train import loop, reporting

  events = []  # (time, name, seconds)
  jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **_: events.append((time.perf_counter(), name, secs))
  )
  jax.monitoring.register_event_listener(
    lambda name, **_: events.append((time.perf_counter(), name, 0.0))
  )
  config = jax_config(args.shards, args.epochs, args.scale, args.override)
  marks = []  # (time, what)

  class EpochReporter(reporting.Reporter):
    def progress(self, progress):
      marks.append((time.perf_counter(), 'epoch_end'))
      super().progress(progress)

  @contextlib.contextmanager
  def timer(phase):
    marks.append((time.perf_counter(), phase + '_start'))
    yield
    marks.append((time.perf_counter(), phase + '_end'))

  workdir = tempfile.mkdtemp(prefix='peer_speed_run_')
  t_build = time.perf_counter()
  trainer = loop.Trainer(config, workdir, reporter=EpochReporter(), timer=timer)
  marks.append((time.perf_counter(), 'start'))
  with jax.default_matmul_precision(loop.matmul_precision(config)):
    trainer.run()
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

  def compiled_between(a, b):
    inside = [(n, s) for t, n, s in events if a <= t <= b]
    return (sum(s for n, s in inside if n in COMPILE_EVENTS),
            sum(n == BACKEND_COMPILE for n, _ in inside),
            sum(n == CACHE_HIT for n, _ in inside))  # fmt: skip

  epochs, init_s, eval_s, t_prev = [], None, [], marks[0][0]
  pending = {}
  for t, what in marks[1:]:
    if what == 'epoch_end':
      compile_s, programs, hits = compiled_between(t_prev, t)
      i = len(epochs)
      epochs.append(dict(epoch=i, phase='warmup' if i <= 1 else 'memory', seconds=t - t_prev,
                         compile_s=compile_s, programs=programs, cache_hits=hits))  # fmt: skip
      t_prev = t
    elif what.endswith('_start'):
      pending[what[:-6]] = t
    elif what.endswith('_end'):
      phase = what[:-4]
      seconds = t - pending.pop(phase)
      if phase == 'memory_init' and init_s is None:
        init_s = seconds
        init_compile = compiled_between(t - seconds, t)
      if phase == 'eval':
        eval_s.append(seconds)
      t_prev = t
  snippets = sum(v['num_snippets'] for v in trainer.manifest['videos']['train'])
  return {
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'batching': trainer.config.data.batching,  # 'auto' resolved by the trainer
    'resident': bool(getattr(trainer, 'resident', False)),  # data.resident, as decided
    'setup_s': marks[0][0] - t_build,
    'epochs': epochs,
    'memory_init_s': init_s,
    'memory_init_compile_s': init_compile[0] if init_s is not None else None,
    'eval_s': eval_s,  # the evaluation after the last epoch, compile included (not in the table)
    'train_snippets': snippets,
    'peak_rss_mb': rss,
  }


# ------------------------------------------------------------------------------------ driver


def _run(cmd, env=None) -> dict:
  out = tempfile.mktemp(suffix='.json')
  load = load_average()
  t0 = time.perf_counter()
  proc = subprocess.run([*cmd, '--json', out], env=env, cwd=REPO, text=True,
                        capture_output=True)  # fmt: skip
  if proc.returncode != 0:
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    raise SystemExit(f'{cmd[0]} ... exited with {proc.returncode}')
  with open(out) as f:
    result = json.load(f)
  result.update(load_before=load, load_after=load_average(), process_s=time.perf_counter() - t0)
  return result


def steady(run: dict, phase: str) -> float | None:
  """The last epoch of `phase` (the first one pays the compilation in this project's runs)."""
  rows = [e['seconds'] for e in run['epochs'] if e['phase'] == phase]
  return rows[-1] if rows else None


def first(run: dict, phase: str) -> float | None:
  rows = [e['seconds'] for e in run['epochs'] if e['phase'] == phase]
  return rows[0] if rows else None


def print_report(report: dict) -> None:
  runs = report['runs']
  names = list(runs)
  m = report['machine']
  print(f'\nMachine: {m["cpu"]}, {m["cores"]} cores; data: {report["data"]}')
  header = f'{"":34s}' + ''.join(f'{n:>16s}' for n in names)
  print(header)
  epochs = max(len(r['epochs']) for r in runs.values())
  for i in range(epochs):
    cells = []
    for r in runs.values():
      e = r['epochs'][i] if i < len(r['epochs']) else None
      if e is None:
        cells.append('')
      elif e.get('compile_s'):
        cells.append(f'{e["seconds"]:.1f} ({e["compile_s"]:.0f}c/{e["programs"]}p)')
      else:
        cells.append(f'{e["seconds"]:.1f}')
    phase = 'warm-up' if i <= 1 else 'memory phase'
    print(f'{"epoch " + str(i) + " (" + phase + "), s":34s}' + ''.join(f'{c:>16s}' for c in cells))
  for label, key in (('memory initialisation, s', 'memory_init_s'), ('peak RSS, MB', 'peak_rss_mb'),
                     ('load average before', 'load_before')):  # fmt: skip
    print(f'{label:34s}' + ''.join(f'{str(_round(r.get(key))):>16s}' for r in runs.values()))
  print('(c: compile seconds inside the epoch, p: programs compiled)')
  for name, ratio in report['ratios'].items():
    print(f'{name}: ' + ', '.join(f'{k} {v:.2f}x' for k, v in ratio.items() if v is not None))


def _round(x):
  if isinstance(x, float):
    return round(x, 1)
  if isinstance(x, list):
    return [_round(v) for v in x]
  return x


def ratios(runs: dict) -> dict:
  """authors / ours for each of our runs (above 1: ours is faster)."""
  if 'authors' not in runs:
    return {}
  a = runs['authors']
  out = {}
  for name, r in runs.items():
    if name == 'authors':
      continue
    div = lambda x, y: x / y if x and y else None
    out[f'authors / {name}'] = {
      'steady warm-up epoch': div(steady(a, 'warmup'), steady(r, 'warmup')),
      'steady memory-phase epoch': div(steady(a, 'memory'), steady(r, 'memory')),
      'first warm-up epoch': div(first(a, 'warmup'), first(r, 'warmup')),
      'first memory-phase epoch': div(first(a, 'memory'), first(r, 'memory')),
      'memory initialisation': div(a.get('memory_init_s'), r.get('memory_init_s')),
    }
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=4, help='>= 3: the memory phase runs')
  parser.add_argument('--scale', default='full', choices=('full', 'tiny'),
                      help='full: THUMOS14 sizes, D 2048; tiny: a smoke run (D 64)')  # fmt: skip
  parser.add_argument('--data_dir', default=None, help='keep the generated data here (reused)')
  parser.add_argument('--authors_src', default=None, help='a MICLAB-BUPT/ISSF checkout')
  parser.add_argument('--torch_python', default=None, help='a Python with torch')
  parser.add_argument('--threads', type=int, default=0, help='torch threads (0: all cores)')
  parser.add_argument('--jax_runs', default='cold', help="'cold' or 'cold,warm' (same cache)")
  parser.add_argument('--cache_dir', default=None, help='the JAX cache (default: a new one)')
  parser.add_argument(
    '--override',
    action='append',
    default=[],
    help='section.field=value on our config, e.g. data.batching=exact',
  )
  parser.add_argument('--json', default=None)
  # Internal: the worker process of one run of this project's trainer.
  parser.add_argument('--_jax_worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--shards', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._jax_worker:
    result = run_jax_worker(args)
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
    return result
  if args.epochs < 3:
    parser.error('--epochs must be at least 3 (epochs 0-1 warm up, the memory phase from 2)')
  if bool(args.authors_src) != bool(args.torch_python):
    parser.error('--authors_src and --torch_python go together')

  from benchmarks.machine import cpu_name

  root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix='peer_speed_'))
  t0 = time.perf_counter()
  dataset_dir, shards = prepare_data(root, args.scale)
  data_s = time.perf_counter() - t0
  cache = args.cache_dir or tempfile.mkdtemp(prefix='peer_speed_cache_')
  env = dict(
    os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0'
  )
  runs = {}
  for kind in args.jax_runs.split(','):
    cmd = [sys.executable, '-m', 'benchmarks.peer_speed', '--_jax_worker', '--shards', shards,
           '--epochs', str(args.epochs), '--scale', args.scale]  # fmt: skip
    for item in args.override:
      cmd += ['--override', item]
    runs[f'ours ({kind} cache)'] = _run(cmd, env)
    print(f'ours ({kind} cache): done', flush=True)
  if args.authors_src:
    cmd = [args.torch_python, str(REPO / 'benchmarks' / 'authors_loop.py'), '--authors_src',
           args.authors_src, '--dataset_dir', dataset_dir, '--epochs', str(args.epochs),
           '--threads', str(args.threads), '--workdir', str(root / 'authors_run'),
           '--feature_dim', '2048' if args.scale == 'full' else '64']  # fmt: skip
    runs['authors'] = _run(cmd)
    print('authors: done', flush=True)
  report = {
    'machine': {'cpu': cpu_name(), 'cores': os.cpu_count()},
    'data': f'{args.scale} THUMOS14-shaped ({shards}), prepared in {data_s:.0f} s',
    'overrides': args.override,
    'runs': runs,
    'ratios': ratios(runs),
  }
  print_report(report)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == '__main__':
  main()
