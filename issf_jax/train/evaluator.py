"""The one evaluator of the trainer and of `issf-eval`: predict, detect, score, write.

`Evaluator(config, workdir)(params, step)` scores parameters on `config.data.eval_subset` with
`config.eval.protocol`, and with each protocol of `config.eval.extra_protocols` (a THUMOS run can
report `rskp` and `official` side by side), then writes, on process 0:
  <workdir>/predictions/step_N.json   ActivityNet-format detections of every eval video
  <workdir>/eval/step_N.json          the result (strict JSON: a NaN is written as null)
Both the periodic evaluation of `issf-train` and `issf-eval` go through it, so the two write
the same files the same way. Every process scores the whole eval split on its own devices (the
model is small; this keeps the evaluators single-process and exact).
"""

from __future__ import annotations

import functools
import warnings

import jax
import numpy as np

from issf_common import errors, outputs, paths
from issf_jax import evaluation, inference, proposals, sharding


def protocols(config) -> list[str]:
  """The primary protocol, then the extra ones (without repeats)."""
  names = [config.eval.protocol, *config.eval.get('extra_protocols', ())]
  unknown = [p for p in names if p not in evaluation.PROTOCOLS]
  if unknown:
    raise errors.ConfigError(
      f'eval.protocol / eval.extra_protocols {unknown}: choose from {list(evaluation.PROTOCOLS)}'
    )
  return list(dict.fromkeys(names))


class Evaluator:
  """Evaluates parameters on the eval split and writes predictions/ and eval/ (process 0)."""

  def __init__(self, config, workdir: str | None, shards_dir: str | None = None):
    from data_pipelines import pipelines  # the data layer stays out of the model's import graph

    self.config, self.workdir = config, workdir
    self.shards_dir = shards_dir or config.data.shards_dir
    self.protocols = protocols(config)
    self._input_pipeline = pipelines.select()  # tf.data, or numpy where TF is not installed
    self._predict = inference.make_predict_fn(config)  # compiled once, reused every evaluation

  @functools.cached_property
  def _ground_truth(self) -> dict:
    """The shard folder's ground truth, read once (every evaluation, every sweep scale)."""
    return self._input_pipeline.load_ground_truth(self.shards_dir)

  def predict(self, params, key_data) -> dict:
    """{'predictions': ActivityNet-format detections, 'per_video': raw predictions, ...}."""
    return self.detect(self.predict_maps(params, key_data))

  def predict_maps(self, params, key_data) -> dict:
    """{'per_video': raw predictions (maps, scores), 'video_ids', 'class_names'}, no
    detections yet: `detect` builds them (the threshold sweep builds several from one set)."""
    config, pipeline = self.config, self._input_pipeline
    subset = config.data.eval_subset
    manifest = pipeline.load_manifest(self.shards_dir)
    options = pipeline.EvalOptions.from_data_config(config.data, config.data.eval_batch_size)
    # Host index 0 of 1: every host reads every video. Shortest first: a batch pads its
    # videos to about their own length (the THUMOS14-shaped test split: 1.34x the true
    # snippets and 12 programs, against 3.1x and 21 in manifest order); the predictions are
    # put back in manifest order.
    batches = pipeline.create_eval_iterator(
      self.shards_dir, options, subset=subset, host=pipeline.Host(), order='length'
    )
    local_params = sharding.host_value(params)
    preds = inference.predict_batches(self._predict, local_params, batches, key_data)
    preds.sort(key=lambda p: p['video_index'])
    table = manifest['videos'][subset]
    return {
      'per_video': preds,
      'video_ids': [table[p['video_index']]['video_id'] for p in preds],
      'class_names': list(manifest['classes']),
    }

  def detect(self, predicted: dict, proposal_config=None) -> dict:
    """`predicted` with its 'predictions' (detections JSON) built from the maps with
    `proposal_config` (default: config.eval.proposals); the maps are not recomputed."""
    config = self.config
    proposal_config = proposal_config or config.eval.proposals
    t_s = config.data.t_s if config.data.mode == 'activitynet' else None
    detections = {
      vid: inference.video_detections(p, proposal_config, t_s=t_s)
      for vid, p in zip(predicted['video_ids'], predicted['per_video'], strict=True)
    }
    out = dict(predicted)
    out['predictions'] = proposals.detections_json(detections, predicted['class_names'])
    return out

  def score(self, predicted: dict, proposal_config=None, *, extra: bool = True) -> dict:
    """The primary protocol's result, with `result['extra'][name]` for each extra protocol
    (unless `extra` is False). `proposal_config` must be the one `predicted` was detected with
    (the rskp protocol builds its own proposals from the maps with it)."""
    names = self.protocols if extra else self.protocols[:1]
    results = {name: self._score(name, predicted, proposal_config) for name in names}
    result = results.pop(self.protocols[0])
    if results:
      result['extra'] = results
    return result

  def _score(self, protocol: str, predicted: dict, proposal_config=None) -> dict:
    config, subset = self.config, self.config.data.eval_subset
    proposal_config = proposal_config or config.eval.proposals
    ground_truth = self._ground_truth
    preds, class_names = predicted['per_video'], predicted['class_names']
    labels = np.stack([p['labels'] for p in preds])
    scores = np.stack([p['video_scores'][: len(class_names)] for p in preds])
    if protocol == 'rskp':
      with warnings.catch_warnings():
        # The result carries the classes without proposals, and the table prints them.
        warnings.filterwarnings('ignore', message=r'rskp: classes .* have no proposal')
        # And the classification mAP of a split where a class has no positive video (nan).
        warnings.filterwarnings('ignore', message=r'classification mAP: classes .* no positive')
        result = evaluation.evaluate_rskp(
          [p['video_scores'] for p in preds], [p['cas'] for p in preds], predicted['video_ids'],
          ground_truth, class_names, subset=subset, config=proposal_config,
          video_labels=labels, iou_thresholds=tuple(config.eval.tiou_thresholds),
        )  # fmt: skip
    else:
      result = evaluation.evaluate_official(
        ground_truth, predicted['predictions'], subset=subset,
        tiou_thresholds=config.eval.tiou_thresholds,
      )  # fmt: skip
      if protocol == self.protocols[0]:  # (rskp computes it too: once per evaluation)
        # Over the classes with a positive video, as the official protocol scores only the
        # classes of the subset's ground truth (a class subset, e.g. the tiny ActivityNet,
        # would give nan).
        present = labels.sum(0) > 0
        result['classification_mAP'] = (
          evaluation.classification_map(scores[:, present], labels[:, present]) / 100.0
        )
    result['num_videos'] = result.get('num_videos', len(preds))
    return result

  def __call__(self, params, step: int, key_data, *, checkpoint: dict | None = None,
               tag: str | None = None, record: dict | None = None) -> dict:  # fmt: skip
    """Predicts, scores and (process 0, with a workdir) writes the files of `step`.

    `tag` names files written beside the trainer's (`step_N.<tag>.json`, e.g. by a config
    other than the run's), and `record` is added to the result (the config that made it).

    Returns:
      The result dict (see `score`), plus `checkpoint` and `record` when given.
    """
    predicted = self.predict(params, key_data)
    result = self.score(predicted)
    if checkpoint is not None:
      result['checkpoint'] = dict(checkpoint)
    result.update(record or {})
    if self.workdir and jax.process_index() == 0:
      for folder, payload, indent in (('predictions', predicted['predictions'], None),
                                      ('eval', result, 2)):  # fmt: skip
        write_json(step_file(self.workdir, folder, step, tag), payload, indent=indent)
    return result


def step_file(workdir: str, folder: str, step: int, tag: str | None = None) -> str:
  """`<workdir>/<folder>/step_N.json`, or `step_N.<tag>.json`."""
  return paths.join(workdir, folder, f'step_{step}' + (f'.{tag}' if tag else '') + '.json')


def summary_metrics(result: dict) -> dict:
  """Flat scalar metrics of a result (logs, best-checkpoint selection); extra protocols are
  prefixed with their name ('official/average_mAP')."""
  out = {'average_mAP': float(result['average_mAP'])}
  for thr, value in zip(result['tiou_thresholds'], result['mAP'], strict=True):
    out[f'mAP@{thr:g}'] = float(value)
  for name, value in evaluation.range_averages(result).items():
    out[name] = float(value)
  if 'classification_mAP' in result:
    out['classification_mAP'] = float(result['classification_mAP'])
  if 'natural_average_mAP' in result:  # rskp: differs from average_mAP only by the early return.
    out['natural_average_mAP'] = float(result['natural_average_mAP'])
  for name, extra in result.get('extra', {}).items():
    out.update({f'{name}/{k}': v for k, v in summary_metrics(extra).items()})
  return out


def format_result(result: dict) -> str:
  """The results table of each protocol of `result`."""
  tables = [evaluation.format_results_table(result)]
  tables += [evaluation.format_results_table(r) for r in result.get('extra', {}).values()]
  return '\n'.join(tables)


strict_json = outputs.strict_json


def write_json(path: str, payload, indent: int | None = 2) -> str:
  """Writes `payload` as strict JSON, atomically (a reader sees the old file or the new one)."""
  return outputs.write_json(path, payload, indent=indent)
