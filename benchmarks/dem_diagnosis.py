r"""What the DEM branch does to the pseudo-labels of a trained ISSF run, snippet by snippet.

  python -m benchmarks.dem_diagnosis --workdir RUN [--checkpoint latest] [--subset train]
      [--attn_logits dot|dot_sqrt_d|cosine5] [--json OUT]

For every video of the subset (its ground-truth labels are needed: the DEM reads the memory rows
of the video's classes, as in training), with the run's parameters and memory, it compares three
teachers of the base branch's distillation (softmax(. / T), T = 0.2):
  BRM     T~, the teacher before the memory exists;
  DEM     T^ alone;
  mix     T^p = w_brm T~ + w_dem T^ (the run's recipe: 0.8 / 0.2 authors, 1 / 1 spec_v1);
against the ground-truth segments (snippet t covers [t, t+1) * stride / fps seconds). Reported,
over background snippets (outside every segment) and action snippets separately:
  * the share whose teacher arg-max is an action class (background: false foreground);
  * the teacher's mean probability of the background class (index C);
  * the base branch's own numbers, for reference, and its mean foreground attention;
and for the DEM read, the effective number of memory slots attended per snippet (exp of the
attention entropy; 1 = a hard arg-max) and the share of snippets whose DEM logits put a
ground-truth class first. The read follows the run's `model.dem_read` (the variants beyond the
paper: docs/fidelity.md). `--attn_logits` recomputes the DEM read with another logit scaling
(same parameters and memory), to see what `model.attn_logits` would change. A run without the
DEM (modules=base or base_brm) gives its base (and BRM) rows only: the reference for what the
memory phase changed in the base branch, the one that localises at test time.

This is a measurement, not a test. It prints a table and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _snippet_is_action(snippets, segments, fps, stride):
  """[t] bool: the centre of each snippet (indices into the video's snippets) lies inside a
  ground-truth segment (seconds)."""
  centres = (np.asarray(snippets) + 0.5) * stride / fps
  inside = np.zeros(len(centres), bool)
  for start, end in segments:
    inside |= (centres >= start) & (centres <= end)
  return inside


def diagnose(workdir, checkpoint='latest', subset='train', attn_logits=None, max_videos=0):
  from data_pipelines import input_pipeline, sampling
  from issf_jax import diagnostics, sharding
  from issf_jax.train import restore, run_dir

  config = run_dir.load_config(workdir)
  state, step = restore.restore_state(config, os.path.join(workdir, 'checkpoints'), checkpoint)
  state = sharding.host_value(state)
  # A run without the DEM (Base, Base+BRM) reports its branches only: the reference that tells
  # what the memory phase changed in the base branch it distils into.
  with_dem = diagnostics.has_dem(config, state.memory)
  shards = config.data.shards_dir
  with open(os.path.join(shards, 'manifest.json')) as f:
    manifest = json.load(f)
  with open(os.path.join(shards, 'ground_truth.json')) as f:
    database = json.load(f)['database']
  videos = manifest['videos'][subset]
  num_classes = config.model.num_classes

  forward = diagnostics.make_branch_logits_fn(config, with_dem=with_dem, attn_logits=attn_logits)

  options = input_pipeline.EvalOptions.from_data_config(config.data, batch_size=1)
  iterator = input_pipeline.create_eval_iterator(shards, options, subset=subset)
  temperature = config.loss.kd_temperature
  sums = {}

  def add(key, values):
    total, count = sums.get(key, (0.0, 0))
    sums[key] = (total + float(np.sum(values)), count + int(np.size(values)))

  for n, batch in enumerate(iterator):
    if max_videos and n >= max_videos:
      break
    if not bool(batch['valid'][0]):
      continue
    entry = videos[int(batch['video_index'][0])]
    t = int(np.asarray(batch['mask'][0]).sum())
    segments = [a['segment'] for a in database[entry['video_id']]['annotations']]
    # ActivityNet mode evaluates T_s uniformly sampled snippets: place each at its own time.
    if config.data.mode == 'activitynet':
      snippets = sampling.uniform_indices(entry['num_snippets'], config.data.t_s)[:t]
    else:
      snippets = np.arange(t)
    action = _snippet_is_action(snippets, segments, entry['fps'], entry['stride'])
    add('snippets/action_share', action)
    teachers, aux = forward(state.params, state.memory, batch['features'], batch['mask'],
                            batch['labels'])  # fmt: skip
    gt_classes = np.flatnonzero(np.asarray(batch['labels'][0]) > 0)
    for name, logits in teachers.items():
      logits = np.asarray(logits[0, :t])
      probs = np.asarray(diagnostics.teacher_probs(logits, temperature))
      top = probs.argmax(-1)
      for part, where in (('background', ~action), ('action', action)):
        if where.any():
          add(f'{name}/{part}/argmax_action', top[where] < num_classes)
          add(f'{name}/{part}/p_background', probs[where, num_classes])
          add(f'{name}/{part}/argmax_gt_class', np.isin(top[where], gt_classes))
    # The base branch's foreground attention: what localises at test time (the fused CAS is
    # the class activations times this attention).
    attention = np.asarray(aux['attention'][0, :t])
    for part, where in (('background', ~action), ('action', action)):
      if where.any():
        add(f'base/{part}/attention', attention[where])
    if with_dem:
      add('dem/slots_read', np.asarray(aux['slots_read'][0, :t]))
  iterator.close() if hasattr(iterator, 'close') else None
  summary = {k: total / max(count, 1) for k, (total, count) in sums.items()}
  summary.update(step=int(step), attn_logits=config.model.attn_logits, subset=subset,
                 modules=config.get('ablation', {}).get('modules'),
                 recipe=config.get('ablation', {}).get('recipe'), workdir=workdir,
                 dem_read=config.model.get('dem_read', 'paper'))  # fmt: skip
  return summary


def table(summary: dict) -> str:
  lines = [
    f'step {summary["step"]}, subset {summary["subset"]}, modules {summary.get("modules")}, '
    f'recipe {summary["recipe"]}, DEM read {summary.get("dem_read", "paper")}, '
    f'DEM attention logits {summary["attn_logits"]}; '
    f'effective slots read per snippet {summary.get("dem/slots_read", float("nan")):.2f}',
    f'{"teacher":<8}{"bg: argmax action":>19}{"bg: p(bg)":>11}{"act: argmax GT":>16}'
    f'{"act: p(bg)":>12}',
  ]
  for name in ('base', 'brm', 'dem', 'mix'):
    if f'{name}/background/argmax_action' not in summary:
      continue

    def g(key, name=name):
      return 100 * summary.get(f'{name}/{key}', float('nan'))

    lines.append(
      f'{name:<8}{g("background/argmax_action"):18.1f}%{g("background/p_background"):10.1f}%'
      f'{g("action/argmax_gt_class"):15.1f}%{g("action/p_background"):11.1f}%'
    )
  lines.append(
    f'base attention: background {summary.get("base/background/attention", float("nan")):.3f}, '
    f'action {summary.get("base/action/attention", float("nan")):.3f}; action snippets '
    f'{100 * summary.get("snippets/action_share", float("nan")):.1f}%'
  )
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='an ISSF run folder (issf-train)')
  parser.add_argument('--checkpoint', default='latest', help='latest | best | a step')
  parser.add_argument('--subset', default='train')
  parser.add_argument('--attn_logits', default=None, help='dot | dot_sqrt_d | cosine5')
  parser.add_argument('--max_videos', type=int, default=0)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  which = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
  summary = diagnose(args.workdir, which, args.subset, args.attn_logits, args.max_videos)
  print(table(summary))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(summary, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
