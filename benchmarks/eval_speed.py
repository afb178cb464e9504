"""Evaluation speed: the `official` protocol vs the official ActivityNet evaluator, and `rskp`.

  python -m benchmarks.eval_speed [--generate 30000] [--official_dir DIR --official_python PY]

Scores prediction sets the size of THUMOS14 test inference (the golden `pred_random.json`, 5300
predictions, and a generated set of `--generate` predictions over the 212 test videos: jittered
copies of the GT plus random segments) with `evaluate_official`, and times `evaluate_rskp` on a
golden RSKP protocol case. Our times are the median and minimum wall time and the median CPU time
of `--repeats` runs, JSON parsing included. On a shared machine the CPU times are the steadier
comparison: the official evaluator runs 20 joblib worker processes, which take a larger share of
contended cores than our single thread.

The official evaluator is not part of this repository. To time it, point `--official_dir` at a
folder holding `eval_detection.py` and `utils.py` from activitynet/ActivityNet (ported to Python 3)
and `--official_python` at an interpreter with pandas and joblib; it is run once per set in a
subprocess (constructor + `evaluate()`, `check_status=False`) and its mAPs are checked against ours.
"""

import argparse
import gzip
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import tempfile
import time

import numpy as np

from issf_jax.evaluation import evaluate_official, evaluate_rskp

REPO = pathlib.Path(__file__).parents[1]
TESTDATA = (
  REPO / 'tests' / 'testdata'
)  # The goldens, large JSON gzipped (tests/testdata/README.md).
THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]

# Run inside the official evaluator's interpreter: build ANETdetection on the two files, evaluate.
_OFFICIAL_SNIPPET = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from eval_detection import ANETdetection
t0 = time.perf_counter()
ev = ANETdetection(sys.argv[2], sys.argv[3], ground_truth_fields=['database'],
                   prediction_fields=['results'], tiou_thresholds=np.array(json.loads(sys.argv[5])),
                   subset=sys.argv[4], verbose=False, check_status=False)
ev.evaluate()
print(json.dumps({'seconds': time.perf_counter() - t0, 'mAP': [float(x) for x in ev.mAP]}))
"""


def cpu_name() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def generate_predictions(gt: dict, subset: str, count: int, seed: int = 0) -> dict:
  """~count predictions: 70 % jittered GT copies (detector-like), 30 % random segments."""
  rng = np.random.default_rng(seed)
  videos = {v: e for v, e in gt['database'].items() if e['subset'].lower() == subset.lower()}
  instances = [(v, a) for v, e in videos.items() for a in e['annotations']]
  labels = sorted({a['label'] for _, a in instances})
  results = {v: [] for v in videos}
  n_copies = max(1, round(0.7 * count / len(instances)))
  for v, a in instances:
    s, e = a['segment']
    length = max(e - s, 0.1)
    for _ in range(n_copies):
      ds, de = rng.normal(0.0, 0.3 * length, 2)
      results[v].append(
        {
          'label': a['label'] if rng.random() < 0.9 else labels[rng.integers(len(labels))],
          'score': float(rng.random()),
          'segment': [float(max(0.0, s + ds)), float(max(s + ds + 0.1, e + de))],
        }
      )
  names = list(videos)
  for _ in range(count - n_copies * len(instances)):
    v = names[rng.integers(len(names))]
    duration = float(videos[v].get('duration', 200.0))
    start = float(rng.uniform(0, duration))
    results[v].append(
      {
        'label': labels[rng.integers(len(labels))],
        'score': float(rng.random()),
        'segment': [start, min(duration, start + float(rng.exponential(5.0)) + 0.1)],
      }
    )
  return {'version': 'eval-speed', 'results': results, 'external_data': {}}


def plain_json(path: pathlib.Path, folder: str) -> pathlib.Path:
  """`path`, or its decompressed copy in `folder` when gzipped (what is timed is plain JSON)."""
  if path.suffix != '.gz':
    return path
  out = pathlib.Path(folder) / path.name.removesuffix('.gz')
  out.write_bytes(gzip.decompress(path.read_bytes()))
  return out


def time_ours(gt_path: pathlib.Path, pred_path: pathlib.Path, subset: str, repeats: int):
  """Load + `evaluate_official` on two files: ({wall_median, wall_min, cpu_median}, result)."""
  wall, cpu, result = [], [], None
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    gt = json.loads(gt_path.read_text())
    pred = json.loads(pred_path.read_text())
    result = evaluate_official(gt, pred, subset=subset, tiou_thresholds=THUMOS_TIOU)
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  times = {'wall': statistics.median(wall), 'wall_min': min(wall), 'cpu': statistics.median(cpu)}
  return times, result


def time_official(args, gt_path, pred_path, subset):
  """{'seconds', 'cpu', 'mAP'} of one run of the official evaluator, or None if not configured.

  'seconds' is the wall time of constructor + evaluate(); 'cpu' the user + system time of the whole
  subprocess including its joblib workers (and its interpreter start and imports, about 1 s).
  """
  if not (args.official_dir and args.official_python):
    return None
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  out = subprocess.run(
    [
      args.official_python,
      '-c',
      _OFFICIAL_SNIPPET,
      args.official_dir,
      str(gt_path),
      str(pred_path),
      subset,
      json.dumps(THUMOS_TIOU),
    ],
    capture_output=True,
    text=True,
    check=True,
  )
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result['cpu'] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return result


def time_rskp(case_dir: pathlib.Path, case: str, repeats: int):
  """(median, min) seconds of `evaluate_rskp` on a golden case (inputs in memory), snippets."""
  gt_path = case_dir / 'thumos14_test_gt.json'
  if not gt_path.is_file():
    gt_path = case_dir / 'thumos14_test_gt.json.gz'
  ref = json.loads(
    gzip.decompress(gt_path.read_bytes()) if gt_path.suffix == '.gz' else gt_path.read_text()
  )
  names = ref['class_names']
  database = {
    v['name']: {
      'subset': 'test',
      'annotations': [{'segment': s[1:3], 'label': names[s[0]]} for s in v['segments']],
    }
    for v in ref['videos']
  }
  inputs = np.load(case_dir / f'{case}_inputs.npz')
  off = inputs['offsets']
  maps = [inputs['frm_pred_flat'][off[i] : off[i + 1]] for i in range(len(off) - 1)]
  videos = [v['name'] for v in ref['videos']]
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    evaluate_rskp(
      inputs['vid_pred'],
      maps,
      videos,
      {'database': database},
      names,
      video_labels=inputs['labels_all'],
    )
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times), int(off[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--ground_truth', default=str(TESTDATA / 'official_eval/thumos14.json.gz'))
  p.add_argument('--subset', default='Test')
  p.add_argument('--predictions', default=str(TESTDATA / 'official_eval/pred_random.json.gz'))
  p.add_argument('--generate', type=int, default=30000, help='size of the generated set (0: none)')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--official_dir', default=None)
  p.add_argument('--official_python', default=None)
  p.add_argument('--rskp_dir', default=str(TESTDATA / 'rskp_protocol'))
  p.add_argument('--rskp_case', default='case1_oracle')
  args = p.parse_args()

  tmp = tempfile.TemporaryDirectory()
  gt_path = plain_json(pathlib.Path(args.ground_truth), tmp.name)
  predictions = plain_json(pathlib.Path(args.predictions), tmp.name)
  sets = [(predictions.name, predictions)]
  if args.generate:
    generated = generate_predictions(json.loads(gt_path.read_text()), args.subset, args.generate)
    path = pathlib.Path(tmp.name) / 'generated.json'
    path.write_text(json.dumps(generated))
    sets.append(('generated', path))

  print(f'machine: {cpu_name()} ({os.cpu_count()} cores), python {platform.python_version()}')
  rows = []
  for name, path in sets:
    ours, result = time_ours(gt_path, path, args.subset, args.repeats)
    official = time_official(args, gt_path, path, args.subset)
    if official is not None:
      diff = max(abs(a - b) for a, b in zip(official['mAP'], result['mAP'], strict=True))
      assert diff <= 1e-9, f'{name}: mAPs differ from the official evaluator by {diff}'
    rows.append((name, result['num_predictions'], ours, official))
  print('official protocol on THUMOS14 test, seconds (ours: median and min wall, median CPU)')
  cols = ('preds', 'ours wall', 'ours min', 'ours CPU', 'off. wall', 'off. CPU', 'x wall', 'x CPU')
  print(f'{"":30s}' + ''.join(f'{c:>10s}' for c in cols))
  for name, n, ours, off in rows:
    line = f'{name:30s}{n:10d}{ours["wall"]:10.3f}{ours["wall_min"]:10.3f}{ours["cpu"]:10.3f}'
    if off:  # Speed-ups against our median wall time and median CPU time.
      line += f'{off["seconds"]:10.2f}{off["cpu"]:10.2f}'
      line += f'{off["seconds"] / ours["wall"]:9.0f}x{off["cpu"] / ours["cpu"]:9.0f}x'
    print(line)
  rskp_s, rskp_min, snippets = time_rskp(pathlib.Path(args.rskp_dir), args.rskp_case, args.repeats)
  print(
    f'rskp protocol, {args.rskp_case} (212 videos, {snippets} snippets): median {rskp_s:.3f} s, '
    f'min {rskp_min:.3f} s'
  )
  tmp.cleanup()


if __name__ == '__main__':
  main()
