"""Scores parameters on the eval split: predict, detections, and the configured protocol.

Used by the trainer's periodic evaluation and by the offline eval binary. Every process
scores the whole eval split on its own devices (the model is small; this keeps the
evaluators single-process and exact); only process 0 writes files.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from issf_jax import evaluation, inference


def _video_table(manifest: dict, subset: str) -> list[dict]:
  return manifest['videos'][subset]


def evaluate_params(config, params, shards_dir: str, key_data, *, predict_fn=None) -> dict:
  """Evaluates `params` on `config.data.eval_subset` of `shards_dir`.

  Returns:
    {'result': the protocol's result dict (plus 'classification_mAP'), 'predictions':
     ActivityNet-format detections, 'per_video': the raw per-video predictions}.
  """
  from data_pipelines import input_pipeline  # TF stays out of the model's import graph

  subset = config.data.eval_subset
  manifest = input_pipeline.load_manifest(shards_dir)
  ground_truth = input_pipeline.load_ground_truth(shards_dir)
  class_names = list(manifest['classes'])
  table = _video_table(manifest, subset)
  batches = input_pipeline.create_eval_iterator(
    shards_dir, subset=subset, batch_size=config.data.eval_batch_size, mode=config.data.mode,
    bucket_size=config.data.bucket_size, t_s=config.data.t_s, process_index=0, process_count=1,
  )  # fmt: skip
  predict = predict_fn or inference.make_predict_fn(config)
  local_params = jax.tree.map(_local_copy, params)
  preds = inference.predict_batches(predict, local_params, batches, key_data)
  video_ids = [table[p['video_index']]['video_id'] for p in preds]
  t_s = config.data.t_s if config.data.mode == 'activitynet' else None
  detections = {
    vid: inference.video_detections(p, config.eval.proposals, t_s=t_s)
    for vid, p in zip(video_ids, preds, strict=True)
  }
  predictions = _detections_json(detections, class_names)
  labels = np.stack([p['labels'] for p in preds])
  scores = np.stack([p['video_scores'][: len(class_names)] for p in preds])
  if config.eval.protocol == 'rskp':
    result = evaluation.evaluate_rskp(
      [p['video_scores'] for p in preds], [p['cas'] for p in preds], video_ids, ground_truth,
      class_names, subset=subset, config=config.eval.proposals, video_labels=labels,
      iou_thresholds=tuple(config.eval.tiou_thresholds),
    )  # fmt: skip
  elif config.eval.protocol == 'official':
    result = evaluation.evaluate_official(
      ground_truth, predictions, subset=subset, tiou_thresholds=config.eval.tiou_thresholds
    )
    # Over the classes with a positive video, as the official protocol scores only the classes
    # of the subset's ground truth (a class subset, e.g. the tiny ActivityNet, would give nan).
    present = labels.sum(0) > 0
    result['classification_mAP'] = (
      evaluation.classification_map(scores[:, present], labels[:, present]) / 100.0
    )
  else:
    raise ValueError(f"Unknown eval.protocol {config.eval.protocol!r}; 'rskp' or 'official'.")
  result['num_videos'] = result.get('num_videos', len(preds))
  return {'result': result, 'predictions': predictions, 'per_video': preds}


def _local_copy(x):
  """A host copy of a (possibly multi-process, replicated) array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_shards[0].data)
  return np.asarray(x)


def _detections_json(detections: dict, class_names) -> dict:
  from issf_jax import proposals

  return proposals.detections_json(detections, class_names)


def summary_metrics(result: dict) -> dict:
  """Flat scalar metrics of a result (for logs and best-checkpoint selection)."""
  out = {'average_mAP': float(result['average_mAP'])}
  for thr, value in zip(result['tiou_thresholds'], result['mAP'], strict=True):
    out[f'mAP@{thr:g}'] = float(value)
  for name, value in evaluation.range_averages(result).items():
    out[name] = float(value)
  if 'classification_mAP' in result:
    out['classification_mAP'] = float(result['classification_mAP'])
  return out


def write_predictions(workdir: str, step: int, predictions: dict) -> str:
  path = os.path.join(workdir, 'predictions', f'step_{step}.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(predictions, f)
  os.replace(tmp, path)
  return path
