"""Inference: the fused localisation map of many videos, and their detections in seconds.

`make_predict_fn(config)` gives a jitted, batched
  predict(params, features [B, T, D], mask [B, T], video_index [B], key_data)
    -> {'video_scores' [B, C+1], 'cas' [B, T, C+1], 'attention' [B, T]}
with the fusion of docs/design.md §2.6 (eval mode: no dropout; DEM is training-only).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import numpy as np

from issf_jax import proposals as proposals_lib
from issf_jax.model import ISSF, build_model, fuse_predictions


def make_predict_fn(config):
  """A jitted predict function for the `model` section of `config` (one trace per shape)."""
  model = build_model(config.model)

  @jax.jit
  def predict(params, features, mask, video_index, key_data):
    # Keys only matter for the random-saliency ablation; derived from the video, not the slot.
    base = jax.random.wrap_key_data(key_data)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(video_index)
    out = model.apply({'params': params}, features, mask, train=False, video_keys=keys,
                      method=ISSF.encode)  # fmt: skip
    video_scores, cas = fuse_predictions(out, mask, config.model)
    return {'video_scores': video_scores, 'cas': cas, 'attention': out['base']['attention']}

  return predict


def predict_batches(predict, params, batches: Iterable[dict], key_data) -> list[dict]:
  """Runs `predict` over eval batches; one dict per real video, cut to its true length.

  Each dict: video_index, video_scores [C+1], cas [T_i, C+1], attention [T_i], labels [C], and
  num_snippets_orig (the length before T_s sampling, ActivityNet) when the batch has it.
  """
  results = []
  for batch in batches:
    out = jax.device_get(
      predict(params, batch['features'], batch['mask'], batch['video_index'], key_data)
    )
    valid = np.asarray(batch.get('valid', np.ones(len(batch['features']), bool)), bool)
    lengths = np.asarray(batch['mask']).sum(-1)
    for i in np.nonzero(valid)[0]:
      t = int(lengths[i])
      item = {
        'video_index': int(batch['video_index'][i]),
        'video_scores': np.asarray(out['video_scores'][i]),
        'cas': np.asarray(out['cas'][i, :t]),
        'attention': np.asarray(out['attention'][i, :t]),
        'labels': np.asarray(batch['labels'][i], np.float32),
      }
      if 'num_snippets_orig' in batch:
        item['num_snippets_orig'] = int(batch['num_snippets_orig'][i])
      results.append(item)
  return results


def video_detections(pred: dict, proposal_config, *, t_s: int | None = None) -> np.ndarray:
  """[N, 4] rows [class, start_s, end_s, score] of one predicted video.

  THUMOS: snippet i covers [i, i+1) x stride / fps. ActivityNet (`t_s` given): each sampled
  index stands for num_snippets_orig / t_s snippets.
  """
  props = proposals_lib.video_proposals(pred['video_scores'], pred['cas'], proposal_config)
  kwargs = {}
  if t_s is not None and 'num_snippets_orig' in pred:
    # A video shorter than T_s is kept whole: its indices are original snippets.
    length = pred['cas'].shape[0]
    kwargs = dict(num_snippets_orig=pred['num_snippets_orig'], t_s=length)
  rows = proposals_lib.proposals_to_seconds(
    props, fps=proposal_config.fps, stride=proposal_config.stride,
    upsample=proposal_config.get('upsample', 1), **kwargs,
  )  # fmt: skip
  # RSKP's proposal end is one snippet past the run, so a run that reaches the last snippet
  # would end after the video; seconds are clipped to the video's end.
  length = pred['cas'].shape[0]
  end = proposals_lib.proposals_to_seconds(
    np.array([[0, 0, length, 0]], np.float64), fps=proposal_config.fps,
    stride=proposal_config.stride, **kwargs,
  )[0, 2]  # fmt: skip
  rows[:, 1:3] = np.minimum(rows[:, 1:3], end)
  return rows
