r"""Detects the actions in one video with a trained run. It restores a checkpoint of the run
folder (--workdir; --checkpoint latest, best or a step number), reads the video's [T, D]
snippet features (a .npy file; or, with --video_id alone, the video's record in a shard folder
written by issf-prepare, the run's own by default; or, with --video_id, its row of a released
W-TALC <Name>-I3D-JOINTFeatures.npy), prints the detections (label, score, start and end in
seconds) and writes them as JSON; --plot draws the fused localisation map of the top classes, the
attention, the detections and, with --ground_truth, the annotated segments; --branches adds
what each branch teaches the base branch (base, BRM, DEM and the pseudo-label).

usage:
  issf-predict --workdir runs/thumos14 --features video.npy [--checkpoint latest|best|STEP] \
    [--fps 25 --stride 16] [--output dets.json] [--plot out.png] \
    [--ground_truth GT.json --video_id ID] [--branches]
  issf-predict --workdir runs/thumos14 --video_id video_test_0000004 [--shards_dir DIR]
  issf-predict --workdir runs/thumos14 --video_id video_test_0000004 \
    --features Thumos14reduced-I3D-JOINTFeatures.npy

A video read from a shard folder takes its frame rate and stride from the folder's manifest,
and its ground truth (for --plot) from the folder's ground_truth.json unless --ground_truth is
given. Every input is checked before the model runs, and a file is written whole or not at all.

An ActivityNet-mode run (`data.mode = 'activitynet'`) samples the video to T_s snippets exactly
as its evaluation does.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from issf_common import outputs, paths
from launch import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by issf-train.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_FEATURES = flags.DEFINE_string(
  'features', None, '[T, D] float .npy of one video (or, with --video_id, a W-TALC features file).'
)
_SHARDS_DIR = flags.DEFINE_string(
  'shards_dir', None, "With --video_id and no --features: the shard folder (default: the run's)."
)
_FPS = flags.DEFINE_float('fps', 25.0, 'Frame rate the features were extracted at.')
_STRIDE = flags.DEFINE_integer('stride', 16, 'Frames per snippet.')
_OUTPUT = flags.DEFINE_string(
  'output', None, 'Detections JSON (default: <features>.dets.json, or <video_id>.dets.json).'
)
_PLOT = flags.DEFINE_string('plot', None, 'Timeline image (.png).')
_GROUND_TRUTH = flags.DEFINE_string('ground_truth', None, 'ActivityNet-format GT (optional).')
_VIDEO_ID = flags.DEFINE_string(
  'video_id', None, 'The video: in --ground_truth, in the shard folder, or in a W-TALC file.'
)
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', cli.COMPILATION_CACHE_HELP)
_TOP_K = flags.DEFINE_integer('top_k', 3, 'Classes drawn in the plot.')
_BRANCHES = flags.DEFINE_bool(
  'branches',
  False,
  "With --plot: a panel of each branch's distillation view of the top class (base student, "
  'BRM teacher, DEM read of the memory and the pseudo-label mixed from them; the DEM reads the '
  "rows of the video's ground-truth classes, or of its top predicted class without "
  '--ground_truth).',
)


def class_names_for(config) -> list[str]:
  """The class names of the run's shard folder (its manifest); without it, `class_<i>`, with
  a warning on stderr that says why."""
  shards = config.data.get('shards_dir', '')
  path = paths.join(shards, 'manifest.json') if shards else ''
  if path and paths.exists(path):
    return list(json.loads(paths.read_text(path))['classes'])
  print(
    f"warning: the run's data.shards_dir {shards!r} holds no manifest.json (moved, or relative "
    f'to another folder), so the classes are named class_0..class_{config.model.num_classes - 1}',
    file=sys.stderr,
  )
  return [f'class_{i}' for i in range(config.model.num_classes)]


def model_input(config, features):
  """The [1, T', D] batch and [1, T'] mask the evaluator would build for one video: T_s
  uniformly sampled snippets in ActivityNet mode, else the video padded to its bucket."""
  import numpy as np

  from data_pipelines import sampling

  if config.data.mode == 'activitynet':
    features = features[sampling.uniform_indices(len(features), config.data.t_s)]
    padded = config.data.t_s
  else:
    padded = -(-len(features) // config.data.bucket_size) * config.data.bucket_size
  x = np.zeros((1, padded, features.shape[1]), np.float32)
  x[0, : len(features)] = features
  return x, np.arange(padded)[None] < len(features)


def branch_probs(config, state, features, class_ids) -> dict:
  """Each branch's distillation view of one video: {'base', 'brm', 'dem', 'mix'} ->
  [T', C+1] softmax(logits / T_kd) (present branches only; the DEM reads the memory rows of
  `class_ids`, the video's classes, as in training)."""
  import numpy as np

  from issf_jax import diagnostics

  x, mask = model_input(config, features)
  labels = np.zeros((1, config.model.num_classes), np.float32)
  labels[0, list(class_ids)] = 1
  with_dem = diagnostics.has_dem(config, state.memory) and len(class_ids) > 0
  fn = diagnostics.make_branch_logits_fn(config, with_dem=with_dem)
  logits, _ = fn(state.params, state.memory, x, mask, labels)
  t = int(mask.sum())
  temperature = config.loss.kd_temperature
  return {
    name: np.asarray(diagnostics.teacher_probs(value, temperature))[0, :t]
    for name, value in logits.items()
  }


def available_memory() -> tuple[int | None, str]:
  """(bytes the first device can hold, its name): an accelerator's limit, or the host's RAM."""
  import jax

  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit']), device.device_kind
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), "this machine's memory"
  except (ValueError, OSError, AttributeError):
    return None, ''


def check_memory(compiled, num_snippets: int, video: str = 'the video') -> None:
  """Raises InputError when the compiled prediction needs more memory than the device has (the
  model's T x T maps: 16 T^2 bytes, 640 GB at 200,000 snippets), naming the longest T that fits."""
  from issf_common import errors

  analysis = compiled.memory_analysis()
  limit, where = available_memory()
  if analysis is None or limit is None:
    return
  need = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
  need += analysis.output_size_in_bytes
  if need > limit:
    longest = int(num_snippets * (limit / need) ** 0.5 * 0.9)  # the need grows as T^2
    raise errors.InputError(
      f'{video}: {num_snippets} snippets need about {need / 1e9:.0f} GB to predict (the model '
      f'compares every pair of snippets), more than the {limit / 1e9:.0f} GB of {where}; cut the '
      f'video into parts of at most about {longest} snippets'
    )


def predict_video(
  config, params, features, *, fps: float, stride: int, video: str = 'the video'
) -> dict:
  """Detections of one [T, D] video, sampled as the evaluator does.

  Returns {'video_scores', 'cas', 'attention', 'detections' [N, 4] (seconds),
  'seconds_per_index'}. ActivityNet mode (`data.mode`): the T_s snippets of
  `sampling.uniform_indices`, so the map has T_s rows (a video shorter than T_s keeps its T) and
  its proposals are mapped back to seconds through T / T_s.
  """
  import jax
  import numpy as np

  from issf_jax import inference

  length = len(features)
  anet = config.data.mode == 'activitynet'
  x, mask = model_input(config, features)
  key_data = jax.random.key_data(jax.random.key(config.train.seed))
  video_index = np.zeros(1, np.int32)
  predict = inference.make_predict_fn(config).lower(params, x, mask, video_index, key_data)
  predict = predict.compile()
  check_memory(predict, length, video)  # before any of it is allocated
  [pred] = inference.predict_batches(
    predict, params,
    [{'features': x, 'mask': mask, 'video_index': video_index,
      'labels': np.zeros((1, config.model.num_classes), np.float32)}],
    key_data,
  )  # fmt: skip
  proposal_config = config.eval.proposals.copy_and_resolve_references()
  proposal_config.fps, proposal_config.stride = fps, stride
  if anet:
    pred['num_snippets_orig'] = length
  t_s = config.data.t_s if anet else None
  pred['detections'] = inference.video_detections(pred, proposal_config, t_s=t_s)
  pred['seconds_per_index'] = stride / fps * length / len(pred['cas']) if anet else stride / fps
  return pred


def plot_formats() -> list[str]:
  import matplotlib

  matplotlib.use('Agg')
  from matplotlib.figure import Figure

  return sorted(Figure().canvas.get_supported_filetypes())


def _folder_of(path: str) -> str:
  """The folder an output file goes into (local: made absolute; a URL as it is)."""
  return os.fspath(paths.path(paths.absolute(path)).parent)


def check_flags() -> None:
  """Raises InputError on a flag value that cannot work, before anything is read or written."""
  import math

  from issf_common import errors

  if os.path.sep in _CHECKPOINT.value or os.path.isdir(_CHECKPOINT.value):
    raise errors.InputError(
      f'--checkpoint {_CHECKPOINT.value}: expected latest, best or a step number; the run '
      'folder is --workdir'
    )
  if not _FEATURES.value and not _VIDEO_ID.value:
    raise errors.InputError('--features or --video_id is required (see --help)')
  if _SHARDS_DIR.value and _FEATURES.value:
    raise errors.InputError('--shards_dir goes with --video_id alone (not with --features)')
  # `not >`: NaN fails too. A zero or negative time base gives empty or reversed segments.
  if not (_FPS.value > 0 and math.isfinite(_FPS.value)):
    raise errors.InputError(f'--fps {_FPS.value}: must be > 0 and finite (frames per second)')
  if not _STRIDE.value >= 1:
    raise errors.InputError(f'--stride {_STRIDE.value}: must be >= 1 (frames per snippet)')
  if not _TOP_K.value >= 1:
    raise errors.InputError(f'--top_k {_TOP_K.value}: must be >= 1')
  if _BRANCHES.value and not _PLOT.value:
    raise errors.InputError('--branches draws a panel of the plot: it needs --plot FILE.png')
  for flag in (_OUTPUT, _PLOT):
    if not flag.value:
      continue
    if paths.is_dir(flag.value):
      raise errors.InputError(f'--{flag.name} {flag.value}: is a folder; name a file')
    folder = _folder_of(flag.value)
    if not paths.is_url(folder) and not paths.is_dir(folder):  # an object store has no folders
      raise errors.MissingFileError(f'--{flag.name} {flag.value}: no such folder {folder}')
  if _PLOT.value:
    extension = paths.path(_PLOT.value).suffix.lstrip('.').lower()
    formats = plot_formats()
    if extension not in formats:
      raise errors.InputError(
        f'--plot {_PLOT.value}: the extension names the image format; one of {", ".join(formats)}'
      )
  if _GROUND_TRUTH.value and not _VIDEO_ID.value and not _FEATURES.value:
    raise errors.InputError('--ground_truth needs the video: --video_id')


def output_path() -> str:
  """--output, else `<features>.dets.json` (a one-video .npy), else `<video_id>.dets.json`."""
  if _OUTPUT.value:
    return _OUTPUT.value
  if _FEATURES.value and not _VIDEO_ID.value:
    return os.path.splitext(_FEATURES.value)[0] + '.dets.json'  # a string: a URL stays one
  return f'{_VIDEO_ID.value}.dets.json'


def read_video(config):
  """(video id, [T, D] features, fps, stride, ground-truth file or None) as the flags say."""
  from data_pipelines import one_video

  video_id, fps, stride = _VIDEO_ID.value, _FPS.value, _STRIDE.value
  explicit = flags.FLAGS['fps'].present or flags.FLAGS['stride'].present
  dim = config.model.feature_dim
  if _FEATURES.value and not (video_id and one_video.is_wtalc_features(_FEATURES.value)):
    features = one_video.load_features(_FEATURES.value, dim)
    video_id = video_id or paths.path(_FEATURES.value).stem
    return video_id, features, fps, stride, _GROUND_TRUTH.value
  if _FEATURES.value:  # a W-TALC release: every video of it, by --video_id
    video = one_video.from_wtalc(_FEATURES.value, video_id)
    where = f'{_FEATURES.value} video {video_id}'
    features = one_video.check_features(video.features, where, dim)
    return video_id, features, fps, stride, _GROUND_TRUTH.value
  shards = _SHARDS_DIR.value or config.data.shards_dir
  video = one_video.from_shards(shards, video_id)
  features = one_video.check_features(video.features, f'{shards} video {video_id}', dim)
  if not explicit and video.fps and video.stride:
    fps, stride = video.fps, video.stride
  gt = _GROUND_TRUTH.value or paths.join(shards, 'ground_truth.json')
  return video_id, features, fps, stride, gt


def ground_truth_of(path: str | None, video: str) -> list:
  """[(label, start, end)] of `video` in the ActivityNet-format file `path` (none: [])."""
  from issf_common import errors
  from launch import score

  if not path:
    return []
  data = score.load_json(path, 'ground truth')
  if not isinstance(data, dict) or not isinstance(data.get('database'), dict):
    raise errors.InputError(f'ground truth file {path}: no "database" object (ActivityNet format)')
  entry = data['database'].get(video)
  if entry is None:
    print(f'warning: {video} is not in {path}; no ground truth drawn.', file=sys.stderr)
    return []
  return [(a['label'], *a['segment']) for a in entry.get('annotations', [])]


def main(argv):
  del argv
  import numpy as np

  from issf_jax.train import run_dir

  check_flags()
  workdir = _WORKDIR.value.rstrip('/')
  if paths.path(workdir).name == 'checkpoints':
    workdir = os.fspath(paths.path(workdir).parent)
  config = run_dir.load_config(workdir)
  video, features, fps, stride, gt_path = read_video(config)
  output = output_path()
  for path, what in ((output, '--output'), (_PLOT.value, '--plot')):
    if path:  # before the model runs
      outputs.check_writable(_folder_of(path), what)
  gt = ground_truth_of(gt_path, video) if _PLOT.value or _GROUND_TRUTH.value else []
  from issf_jax import compile_cache  # JAX, imported once the inputs above are checked
  from issf_jax.train import restore

  compile_cache.configure(_COMPILATION_CACHE.value, announce=False)
  checkpoints = paths.join(workdir, 'checkpoints')
  state, step = restore.restore_state(config, checkpoints, _CHECKPOINT.value)
  pred = predict_video(config, state.params, features, fps=fps, stride=stride, video=video)
  names = class_names_for(config)
  dets = [
    {'label': names[int(c)], 'score': float(s), 'segment': [float(a), float(b)]}
    for c, a, b, s in sorted(pred['detections'].tolist(), key=lambda r: -r[3])
  ]
  print(f'{video}: {len(features)} snippets, checkpoint step {step}, {len(dets)} detections')
  print(f'{"label":<22}{"score":>8}{"start (s)":>11}{"end (s)":>10}')
  for d in dets:
    print(f'{d["label"]:<22}{d["score"]:8.4f}{d["segment"][0]:11.2f}{d["segment"][1]:10.2f}')
  top = np.argsort(-pred['video_scores'][: len(names)])[:5]
  payload = {
    'version': 'issf-jax', 'video': video, 'checkpoint_step': int(step),
    'video_scores': {names[c]: float(pred['video_scores'][c]) for c in top},
    'detections': dets,
  }  # fmt: skip
  outputs.write_json(output, payload)
  print(f'wrote {output}')
  if _PLOT.value:
    from issf_jax import viz

    branches = None
    if _BRANCHES.value:
      classes = sorted({names.index(g[0]) for g in gt if g[0] in names})
      if not classes:
        classes = [int(np.argmax(pred['video_scores'][: len(names)]))]
      branches = branch_probs(config, state, features, classes)
    viz.plot_timeline(
      _PLOT.value, cas=pred['cas'], attention=pred['attention'],
      video_scores=pred['video_scores'], detections=pred['detections'], class_names=names,
      seconds_per_snippet=pred['seconds_per_index'], ground_truth=gt, top_k=_TOP_K.value,
      title=f'{video} (step {step})', branches=branches,
    )  # fmt: skip
    print(f'wrote {_PLOT.value}')


def run():
  flags.mark_flags_as_required(['workdir'])
  cli.run_absl(main, sys.modules[__name__], 'issf-predict')


if __name__ == '__main__':
  run()
