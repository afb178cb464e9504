"""Times the ISSF authors' own training loop (MICLAB-BUPT/ISSF), epoch by epoch, on the CPU.

Run by `benchmarks/peer_speed.py` with a Python that has torch; it imports nothing of this
repository, only the standard library, numpy, torch and the authors' checkout:

  TORCH_PYTHON benchmarks/authors_loop.py --authors_src DIR --dataset_dir DATA --epochs 4 \
      --json out.json

`--authors_src` is a checkout of https://github.com/MICLAB-BUPT/ISSF (c24b7cb, the commit the
parity goldens came from). Nothing of it is copied or edited: its extension-less modules
(`core/train`, `eval/evaluate`, ...) are loaded as they are by an import hook, and three things
it needs but a CPU-only machine lacks are supplied at run time:
  * `.cuda()` on tensors and modules returns the object itself (the code calls it
    unconditionally in two constructors);
  * `tensorboard_logger.Logger` and `thop.profile`, imported but unused by the training loop,
    are stand-ins when the packages are missing.
Its `Train.train` then runs unmodified: one video at a time at full length, Adam every
`batch_size` videos, the memory built by `ft_eval` at the end of epoch index 1 and read from
epoch index 2. Evaluation and checkpoints are off (`save_every` beyond the last epoch).

Timed: each epoch (from the first batch request to the loader's end), the memory
initialisation (`ft_eval` + `_init_queue`), the process's peak RSS. `--dataset_dir` holds
`Thumos14reduced/` in the W-TALC layout the authors' `VideoDataset` reads (features
`Thumos14reduced-I3D-JOINTFeatures.npy` beside `labels_all.npy`, `classlist.npy`,
`subset.npy`); `peer_speed.py` writes it.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import resource
import sys
import time
import types

# The authors' top-level packages (folders without __init__.py, modules without extension).
_PACKAGES = ('arch', 'core', 'data', 'eval', 'utils')


class _ExtensionlessFinder(importlib.abc.MetaPathFinder):
  """Imports `pkg.mod` from `<src>/pkg/mod` or `<src>/pkg/mod.py` for the authors' packages."""

  def __init__(self, src: str):
    self.src = src

  def find_spec(self, fullname, path=None, target=None):
    parts = fullname.split('.')
    if parts[0] not in _PACKAGES:
      return None
    base = os.path.join(self.src, *parts)
    if len(parts) == 1 and os.path.isdir(base):
      spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
      spec.submodule_search_locations = [base]
      return spec
    for file in (base, base + '.py'):
      if os.path.isfile(file):
        return importlib.util.spec_from_loader(
          fullname, importlib.machinery.SourceFileLoader(fullname, file)
        )
    return None


def _stand_ins(torch) -> None:
  """What the authors' code needs on a machine without CUDA, tensorboard_logger or thop."""
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  for name, attr, value in (
    ('tensorboard_logger', 'Logger', type('Logger', (), {
      '__init__': lambda self, *a, **k: None, 'log_value': lambda self, *a, **k: None})),
    ('thop', 'profile', lambda *a, **k: (0, 0)),
  ):  # fmt: skip
    try:
      importlib.import_module(name)
    except ImportError:
      module = types.ModuleType(name)
      setattr(module, attr, value)
      sys.modules[name] = module


def authors_args(dataset_dir: str, epochs: int, seed: int, dim: int = 2048) -> argparse.Namespace:
  """The authors' `core/main` defaults (THUMOS14), with evaluation and checkpoints off."""
  return argparse.Namespace(
    batch_size=10, epoch=epochs, resume_training=False, lr=5e-5, save_every=10**9,
    log_dir='peer_speed', gpus=[], gpu_ids=[], decay_type=0, changeLR_list=[80, 1000],
    run_type='train', weight_decay=5e-4, dropout=0.6, seed=seed, feature_type='I3D',
    input_feat=dim, output_feat=dim, class_num=20, pretrained=False, load_epoch=None,
    dataset_dir=dataset_dir.rstrip('/') + '/', dataset_name='Thumos14reduced', video_num=200,
    scale_factor=20.0, reduce=4, lamb=0.12, T=0.2, w=0.5, we=8, sa_nu=9, w_a=0.1, w_b=0.2,
    w_s=1.0, class_threshold=0.1, start_threshold=0.001, end_threshold=0.04,
    threshold_interval=0.002,
  )  # fmt: skip


class _TimedLoader:
  """Wraps the training DataLoader: one record per pass (epoch), wall seconds."""

  def __init__(self, loader, records: list):
    self.loader, self.records = loader, records

  def __len__(self):
    return len(self.loader)

  def __iter__(self):
    t0 = time.perf_counter()
    videos = snippets = 0
    for sample in self.loader:
      videos += 1
      snippets += int(sample['data'].shape[1])
      yield sample
    self.records.append({'seconds': time.perf_counter() - t0, 'videos': videos,
                         'snippets': snippets})  # fmt: skip


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--authors_src', required=True)
  parser.add_argument('--dataset_dir', required=True)
  parser.add_argument('--epochs', type=int, default=4)
  parser.add_argument('--threads', type=int, default=0, help='torch threads (0: every core)')
  parser.add_argument('--seed', type=int, default=2)
  parser.add_argument('--feature_dim', type=int, default=2048)
  parser.add_argument('--workdir', default=None, help='where their ./ckpt and ./logs go')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)

  import numpy as np
  import torch

  src = os.path.abspath(args.authors_src)
  if not os.path.isfile(os.path.join(src, 'core', 'train')):
    raise SystemExit(f'{src}: not a MICLAB-BUPT/ISSF checkout (no core/train)')
  sys.meta_path.insert(0, _ExtensionlessFinder(src))
  _stand_ins(torch)
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)  # noqa: NPY002 (the global state their code draws from)
  workdir = args.workdir or os.path.join(args.dataset_dir, 'authors_run')
  os.makedirs(workdir, exist_ok=True)
  os.chdir(workdir)  # their Logger and checkpoints use ./logs and ./ckpt

  train_module = importlib.import_module('core.train')
  epochs, inits = [], []
  ft_eval = train_module.ft_eval

  def timed_ft_eval(*a, **k):
    t0 = time.perf_counter()
    out = ft_eval(*a, **k)
    inits.append(time.perf_counter() - t0)
    return out

  train_module.ft_eval = timed_ft_eval
  t_setup = time.perf_counter()
  trainer = train_module.Train(
    authors_args(args.dataset_dir, args.epochs, args.seed, args.feature_dim)
  )
  trainer.train_data_loader = _TimedLoader(trainer.train_data_loader, epochs)
  init_queue = trainer.saliency_memory._init_queue

  def timed_init_queue(*a, **k):
    t0 = time.perf_counter()
    out = init_queue(*a, **k)
    inits[-1] += time.perf_counter() - t0
    return out

  trainer.saliency_memory._init_queue = timed_init_queue
  setup_s = time.perf_counter() - t_setup
  t0 = time.perf_counter()
  trainer.train()
  total = time.perf_counter() - t0
  result = {
    'torch': torch.__version__,
    'threads': torch.get_num_threads(),
    'setup_s': setup_s,
    'wall_s': total,
    'epochs': [
      dict(rec, epoch=i, phase='warmup' if i <= 1 else 'memory') for i, rec in enumerate(epochs)
    ],
    'memory_init_s': inits[0] if inits else None,
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
  }
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
