"""Evaluation speed: the `official` protocol vs the official ActivityNet evaluator, and `rskp`.

  python -m benchmarks.eval_speed --ground_truth THUMOS14_GT.json --predictions PRED.json \
    [--generate 30000] [--official_dir DIR --official_python PY] [--rskp_dir DIR] \
    [--anet_ground_truth ANET_VAL_GT.json --anet_per_video 100]

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

ActivityNet size (`--anet_ground_truth`, e.g. the 4,728-video v1.3 validation GT): generates
`--anet_per_video` predictions per video (472,800 for 100) and times the whole `issf-eval score`
process (`python -m launch.score`, interpreter start and imports included; wall and user + system
CPU) against the whole official evaluator process, at tIoU 0.5:0.95:0.05, and checks that the two
give the same mAPs. Rows whose inputs are not given are skipped; no path has a default.
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.machine import cpu_name
from configs.common import proposal_config
from issf_jax.evaluation import evaluate_official, evaluate_rskp, prediction_file
from issf_jax.evaluation import ground_truth as gt_lib

REPO = pathlib.Path(__file__).parents[1]
THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOU = '0.5:0.95:0.05'  # 10 thresholds, ActivityNet's.

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


def generate_per_video(gt: dict, subset: str, per_video: int = 100, seed: int = 0) -> dict:
  """Exactly `per_video` predictions per subset video, like a detector's top-100 output.

  Vectorised (the ActivityNet-size set has 472,800 predictions). Per video: half jittered copies
  of its GT instances (90 % with the right label), half random segments with random labels;
  scores uniform in [0, 1), segments clipped to [0, duration] and at least 0.1 s long.
  """
  rng = np.random.default_rng(seed)
  videos = {v: e for v, e in gt['database'].items() if e['subset'].lower() == subset.lower()}
  labels = sorted({a['label'] for e in videos.values() for a in e['annotations']})
  results = {}
  for v, e in videos.items():
    duration = float(e.get('duration') or 200.0)
    anns = e['annotations']
    n_copy = per_video // 2 if anns else 0
    pick = rng.integers(len(anns), size=n_copy) if anns else np.zeros(0, int)
    seg = np.array([anns[i]['segment'] for i in pick], np.float64).reshape(-1, 2)
    length = np.maximum(seg[:, 1] - seg[:, 0], 0.1)[:, None]
    seg = seg + rng.normal(0.0, 0.2, seg.shape) * length
    lab = [anns[i]['label'] for i in pick]
    wrong = rng.random(n_copy) >= 0.9
    n_rand = per_video - n_copy
    start = rng.uniform(0, duration, n_rand)
    rand = np.stack([start, start + rng.exponential(0.2 * duration, n_rand)], axis=1)
    seg = np.concatenate([seg, rand])
    seg[:, 0] = np.clip(seg[:, 0], 0.0, duration - 0.1)
    seg[:, 1] = np.clip(np.maximum(seg[:, 1], seg[:, 0] + 0.1), 0.0, duration)
    lab += [None] * n_rand
    other = rng.integers(len(labels), size=per_video)
    wrong = np.concatenate([wrong, np.ones(n_rand, bool)])
    scores = rng.random(per_video)
    results[v] = [
      {
        'label': labels[other[k]] if wrong[k] else lab[k],
        'score': float(scores[k]),
        'segment': [float(seg[k, 0]), float(seg[k, 1])],
      }
      for k in range(per_video)
    ]
  return {'version': 'eval-speed', 'results': results, 'external_data': {}}


def time_ours(gt_path: pathlib.Path, pred_path: pathlib.Path, subset: str, repeats: int):
  """Load + `evaluate_official` on two files: ({wall_median, wall_min, cpu_median}, result)."""
  wall, cpu, result = [], [], None
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    gt = json.loads(gt_path.read_text())
    parsed = gt_lib.parse_ground_truth(gt, subset)
    known = gt_lib.known_labels(gt, parsed)  # As `issf-eval score` reads (msgspec if installed).
    pred = prediction_file.load_predictions(pred_path, labels=known)
    result = evaluate_official(
      gt, pred, subset=subset, tiou_thresholds=THUMOS_TIOU, parsed_ground_truth=parsed
    )
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  times = {'wall': statistics.median(wall), 'wall_min': min(wall), 'cpu': statistics.median(cpu)}
  return times, result


def time_official(args, gt_path, pred_path, subset, tiou=THUMOS_TIOU):
  """{'seconds', 'cpu', 'mAP'} of one run of the official evaluator, or None if not configured.

  'seconds' is the wall time of constructor + evaluate(); 'process_wall' that of the whole process;
  'cpu' the user + system time of the whole subprocess including its joblib workers (and its
  interpreter start and imports, about 1 s).
  """
  if not (args.official_dir and args.official_python):
    return None
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  out = subprocess.run(
    [
      args.official_python,
      '-c',
      _OFFICIAL_SNIPPET,
      args.official_dir,
      str(gt_path),
      str(pred_path),
      subset,
      json.dumps(tiou),
    ],
    capture_output=True,
    text=True,
    check=True,
  )
  wall = time.perf_counter() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result['process_wall'] = wall
  result['cpu'] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return result


def time_score_process(gt_path, pred_path, subset: str, tiou: str, repeats: int):
  """Whole `python -m launch.score` processes: ({wall, wall_min, cpu} medians, result dict)."""
  wall, cpu = [], []
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / 'result.json'
    for _ in range(repeats):
      before = resource.getrusage(resource.RUSAGE_CHILDREN)
      t0 = time.perf_counter()
      subprocess.run(
        [sys.executable, '-m', 'launch.score', '--predictions', str(pred_path)]
        + ['--ground_truth', str(gt_path), '--subset', subset, '--tiou', tiou]
        + ['--output_json', str(out)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
      )
      wall.append(time.perf_counter() - t0)
      after = resource.getrusage(resource.RUSAGE_CHILDREN)
      cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    result = json.loads(out.read_text())
  times = {'wall': statistics.median(wall), 'wall_min': min(wall), 'cpu': statistics.median(cpu)}
  return times, result


def activitynet_row(args, tmp: pathlib.Path) -> None:
  """Generates the ActivityNet-size set, times both whole processes, checks the mAPs, prints."""
  gt_path = pathlib.Path(args.anet_ground_truth)
  gt = json.loads(gt_path.read_text())
  pred = generate_per_video(gt, args.anet_subset, args.anet_per_video)
  pred_path = tmp / 'activitynet_generated.json'
  pred_path.write_text(json.dumps(pred))
  count = sum(len(v) for v in pred['results'].values())
  size_mb = pred_path.stat().st_size / 1e6
  ours, result = time_score_process(gt_path, pred_path, args.anet_subset, ANET_TIOU, args.repeats)
  official = time_official(args, gt_path, pred_path, args.anet_subset, result['tiou_thresholds'])
  print(
    f'ActivityNet size: {len(pred["results"])} videos, {count} predictions ({size_mb:.1f} MB), '
    f'tIoU {ANET_TIOU}; whole processes, seconds'
  )
  print(
    f'  ours (issf-eval score, {args.repeats} runs): wall median {ours["wall"]:.3f}, '
    f'min {ours["wall_min"]:.3f}; CPU median {ours["cpu"]:.3f}; average mAP '
    f'{result["average_mAP"]:.6f}'
  )
  if official is not None:
    diff = max(abs(a - b) for a, b in zip(official['mAP'], result['mAP'], strict=True))
    identical = official['mAP'] == result['mAP']
    print(
      f'  official: wall {official["process_wall"]:.2f} (constructor + evaluate '
      f'{official["seconds"]:.2f}), CPU {official["cpu"]:.2f}; mAPs '
      f'{"bit-identical" if identical else f"max difference {diff:.2e}"}'
    )
    print(
      f'  speed-up: {official["process_wall"] / ours["wall"]:.0f}x wall (median), '
      f'{official["process_wall"] / ours["wall_min"]:.0f}x wall (min), '
      f'{official["cpu"] / ours["cpu"]:.0f}x CPU'
    )
    assert diff <= 1e-9, f'ActivityNet set: mAPs differ from the official evaluator by {diff}'


def time_rskp(case_dir: pathlib.Path, case: str, repeats: int):
  """(median, min) seconds of `evaluate_rskp` on a golden case (inputs in memory), snippets."""
  ref = json.loads((case_dir / 'thumos14_test_gt.json').read_text())
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
      config=proposal_config('thumos14'),
      video_labels=inputs['labels_all'],
    )
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times), int(off[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--ground_truth', default=None, help='THUMOS14 GT (ActionFormer thumos14.json)')
  p.add_argument('--subset', default='Test')
  p.add_argument('--predictions', default=None, help='a THUMOS14 predictions file to time')
  p.add_argument('--generate', type=int, default=30000, help='size of the generated set (0: none)')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--official_dir', default=None)
  p.add_argument('--official_python', default=None)
  p.add_argument('--rskp_dir', default=None, help='golden/rskp_protocol folder')
  p.add_argument('--rskp_case', default='case1_oracle')
  p.add_argument('--anet_ground_truth', default=None, help='ActivityNet GT for the large row')
  p.add_argument('--anet_subset', default='validation')
  p.add_argument('--anet_per_video', type=int, default=100)
  args = p.parse_args()

  print(f'machine: {cpu_name()} ({os.cpu_count()} cores), python {platform.python_version()}')
  tmp = tempfile.TemporaryDirectory()
  if args.ground_truth:
    thumos_rows(args, pathlib.Path(tmp.name))
  if args.rskp_dir:
    rskp_s, rskp_min, snippets = time_rskp(
      pathlib.Path(args.rskp_dir), args.rskp_case, args.repeats
    )
    print(
      f'rskp protocol, {args.rskp_case} (212 videos, {snippets} snippets): median '
      f'{rskp_s:.3f} s, min {rskp_min:.3f} s'
    )
  if args.anet_ground_truth:
    activitynet_row(args, pathlib.Path(tmp.name))
  tmp.cleanup()


def thumos_rows(args, tmp: pathlib.Path) -> None:
  """THUMOS14-size sets (the given predictions file, a generated set), in-process timing."""
  gt_path = pathlib.Path(args.ground_truth)
  sets = []
  if args.predictions:
    sets.append((pathlib.Path(args.predictions).name, pathlib.Path(args.predictions)))
  if args.generate:
    generated = generate_predictions(json.loads(gt_path.read_text()), args.subset, args.generate)
    path = tmp / 'generated.json'
    path.write_text(json.dumps(generated))
    sets.append(('generated', path))
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


if __name__ == '__main__':
  main()
