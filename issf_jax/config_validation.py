"""The ranges and choices of an experiment config, checked once, when the config loads.

A value out of its range either crashes far from its cause (`train.batch_size=0`: a
ZeroDivisionError in the loop; a negative one: a TensorFlow traceback) or, worse, trains to a
result that means nothing (`optim.lr=-1`, `model.dropout=1.5`). `problems(config)` lists every
such value; the commands report the first as one line naming the key (`launch/cli.py`), and
`validate(config)` raises it for library callers (issf-repro's runs).

Only keys present in the config are checked, so a section an older run folder lacks passes.
The checks are written `not value >= low` rather than `value < low` so that NaN fails them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from issf_common import errors
from issf_jax import evaluation, recipes


def _at_least(low) -> tuple[Callable, str]:
  return (lambda v: v >= low), f'must be >= {low}'


def _above(low) -> tuple[Callable, str]:
  return (lambda v: v > low), f'must be > {low}'


def _closed(low, high) -> tuple[Callable, str]:
  return (lambda v: low <= v <= high), f'must lie in [{low}, {high}]'


def _half_open(low, high) -> tuple[Callable, str]:
  return (lambda v: low <= v < high), f'must lie in [{low}, {high})'


def _left_open(low, high) -> tuple[Callable, str]:
  return (lambda v: low < v <= high), f'must lie in ({low}, {high}]'


# Dotted key -> (check of one value, what the value must be). Lists are checked element-wise.
RULES: dict[str, tuple[Callable, str]] = {
  # Data and batches.
  'data.bucket_size': _at_least(1),
  'data.max_len': _at_least(0),  # 0: full length
  'data.t_s': _at_least(1),
  'data.eval_batch_size': _at_least(1),
  'data.micro_batch_size': _at_least(0),  # 0: the device count
  'data.bucket_growth': _above(1),
  'data.micro_buckets': _at_least(0),
  'train.batch_size': _at_least(1),
  'train.num_epochs': _at_least(1),
  'train.memory_init_epoch': _at_least(-1),  # -1: no memory
  'train.num_devices': _at_least(0),  # 0: every device
  'train.log_every_steps': _at_least(1),
  'train.eval_every_epochs': _at_least(1),
  'train.checkpoint_every_epochs': _at_least(1),
  'train.keep_last': _at_least(1),
  'train.max_steps': _at_least(0),  # 0: no cap
  # The seed goes to numpy and TensorFlow too, which take a non-negative one.
  'train.seed': _closed(0, 2**31 - 1),
  # Model.
  'model.num_classes': _at_least(1),
  'model.feature_dim': _at_least(1),
  'model.embed_dim': _at_least(1),
  'model.scale': _above(0),
  'model.dropout': _half_open(0, 1),
  'model.saliency_ratio': _closed(0, 1),
  'model.saliency_min_selected': _at_least(0),
  'model.brm_reduction': _at_least(1),
  'model.sigma': _closed(0, 1),
  'model.pseudo_label_brm_weight': _at_least(0),
  'model.pseudo_label_dem_weight': _at_least(0),
  'model.fusion_base_weight': _closed(0, 1),
  # Memory.
  'memory.slots': _at_least(1),
  'memory.eta0': _at_least(0),
  'memory.momentum_scale': _at_least(0),
  'memory.max_labels_per_video': _at_least(0),  # 0: C
  'memory.merge_until_epoch': _at_least(-1),
  # Loss.
  'loss.theta': _at_least(0),
  'loss.lambda_att': _at_least(0),
  'loss.att_divisor': _above(0),
  'loss.kd_temperature': _above(0),
  'loss.lambda_s_before': _at_least(0),
  'loss.lambda_s_after': _at_least(0),
  'loss.brm_cls_weight': _at_least(0),
  'loss.dem_cls_weight': _at_least(0),
  # Optimizer.
  'optim.lr': _above(0),
  'optim.weight_decay': _at_least(0),
  'optim.b1': _half_open(0, 1),
  'optim.b2': _half_open(0, 1),
  'optim.eps': _above(0),
  # Evaluation and proposals.
  'eval.tiou_thresholds': _left_open(0, 1),
  'eval.proposals.thresholds_step': _above(0),
  'eval.proposals.min_length': _at_least(0),
  'eval.proposals.class_threshold': _closed(0, 1),
  'eval.proposals.nms_threshold': _closed(0, 1),
  'eval.proposals.upsample': _at_least(1),
  'eval.proposals.fps': _above(0),
  'eval.proposals.stride': _at_least(1),
}


# Dotted key -> the values a string field may take. A typo would otherwise surface as a
# traceback from inside the first jitted step, or (an unread mode) not at all.
CHOICES: dict[str, tuple[str, ...]] = {
  # input_pipeline.BATCHING (it imports TensorFlow), and 'auto' (issf_jax/train/loop.py).
  'data.batching': ('auto', 'exact', 'micro'),
  'model.saliency_mode': ('official', 'paper'),
  'model.saliency_distance': ('l1', 'l2', 'cosine'),
  'model.saliency_strategy': ('distance', 'random', 'classification'),
  'model.saliency_input': ('embedded', 'raw'),
  'model.saliency_tie_order': ('index', 'torch'),
  'model.brm_variant': recipes.BRM_VARIANTS,
  'model.brm_empty_set': recipes.EMPTY_SET_RULES,
  'model.attn_logits': recipes.ATTN_LOGITS,
  'model.matmul_dtype': recipes.MATMUL_DTYPES,
  'model.dem_read': recipes.DEM_READS,
  'memory.update_mode': recipes.UPDATE_MODES,
  'memory.merge_tie_order': ('index', 'torch'),
  'memory.class_index': recipes.MEMORY_CLASS_INDEX,
  'memory.mode': ('sequential', 'batched'),
  'optim.grad_reduction': ('sum', 'mean'),
  'data.mode': ('thumos', 'activitynet'),  # input_pipeline.MODES (it imports TensorFlow)
  'eval.protocol': evaluation.PROTOCOLS,
  # A tuple: each element. On the command line the strings need quotes, --config.x="('official',)";
  # without them `(official,)` is one string, refused here rather than at the first evaluation.
  'eval.extra_protocols': evaluation.PROTOCOLS,
}


def _lookup(config, key: str):
  """The value at dotted `key`, or a sentinel when a section or the field is absent."""
  node = config
  for name in key.split('.'):
    try:
      if name not in node:
        return _ABSENT
      node = node[name]
    except TypeError:  # a leaf where a section was expected
      return _ABSENT
  return node


_ABSENT = object()


def _fails(check: Callable, value) -> bool:
  if isinstance(value, bool) or not isinstance(value, int | float):
    return True  # a number was expected (ml_collections keeps the default's type otherwise)
  try:
    return not check(value)
  except TypeError:
    return True


# Integers are counts, indices and seeds; the step counter and the data position are int32 and
# int64 on the devices and in TensorFlow, so a value beyond int32 is a typo, not a request.
_INT_LIMIT = 2**31


def _unrepresentable(value, rule: str) -> str | None:
  """What is wrong with a number no field can take (inf, NaN, beyond int32), or None."""
  if isinstance(value, float) and not math.isfinite(value):
    return f'{rule} and finite'
  if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
    return f'{rule} and below 2**31 = {_INT_LIMIT}'
  return None


def problems(config) -> Iterator[tuple[str, object, str]]:
  """Yields (dotted key, value, what it must be) for every value out of its range."""
  for key, (check, rule) in RULES.items():
    value = _lookup(config, key)
    if value is _ABSENT or value is None:
      continue
    values = list(value) if isinstance(value, list | tuple) else [value]
    wrong = [w for w in (_unrepresentable(v, rule) for v in values) if w]
    if wrong:
      yield key, value, wrong[0]
      continue
    if isinstance(value, list | tuple) and not values:
      yield key, value, 'must not be empty'
    elif any(_fails(check, v) for v in values):
      yield key, value, rule
  for key, choices in CHOICES.items():
    value = _lookup(config, key)
    if value is _ABSENT:
      continue
    if isinstance(value, list | tuple):
      if any(v not in choices for v in value):
        yield key, value, 'must hold only ' + ', '.join(choices) + ' (quoted: "(\'official\',)")'
    elif value not in choices:
      yield key, value, 'must be one of ' + ', '.join(choices)
  proposals = _lookup(config, 'eval.proposals')
  if proposals is not _ABSENT:
    start = _lookup(config, 'eval.proposals.thresholds_start')
    stop = _lookup(config, 'eval.proposals.thresholds_stop')
    if _ABSENT not in (start, stop) and not (math.isfinite(start) and stop > start):
      yield (
        'eval.proposals.thresholds_stop', stop,
        f'must be > eval.proposals.thresholds_start ({start}): the CAS threshold range is empty',
      )  # fmt: skip
  yield from _best_metric_problem(config)


def best_metric_choices(config) -> list[str] | None:
  """The summary metrics an evaluation with `config` reports (`evaluator.summary_metrics`),
  which `train.best_metric` may name; None when the config lacks the eval section."""
  protocol = _lookup(config, 'eval.protocol')
  thresholds = _lookup(config, 'eval.tiou_thresholds')
  if _ABSENT in (protocol, thresholds):
    return None
  extra = _lookup(config, 'eval.extra_protocols')
  extra = () if extra in (_ABSENT, None) else tuple(extra)
  ranges = evaluation.range_averages({'tiou_thresholds': list(thresholds),
                                      'mAP': [0.0] * len(thresholds)})  # fmt: skip
  names = []
  for name in dict.fromkeys((protocol, *extra)):
    prefix = '' if name == protocol else f'{name}/'
    own = ['average_mAP', *(f'mAP@{t:g}' for t in thresholds), *ranges]
    if name == protocol or name == 'rskp':  # the official protocol's only as the primary one
      own.append('classification_mAP')
    if name == 'rskp':
      own.append('natural_average_mAP')
    names += [prefix + n for n in own]
  return names


def _best_metric_problem(config) -> Iterator[tuple[str, object, str]]:
  value = _lookup(config, 'train.best_metric')
  if value is _ABSENT or value in (None, ''):  # '' or None: no best checkpoint is kept
    return
  try:
    choices = best_metric_choices(config)
  except (TypeError, ValueError):  # a threshold out of range, reported by its own rule
    return
  if choices is not None and value not in choices:
    yield 'train.best_metric', value, 'must be one of the evaluation metrics ' + ', '.join(choices)


def describe(key: str, value, rule: str) -> str:
  """'train.batch_size=0: must be >= 1'."""
  return f'{key}={value}: {rule}'


def validate(config) -> None:
  """Raises errors.ConfigError naming the first value out of its range (module docstring)."""
  for key, value, rule in problems(config):
    raise errors.ConfigError(f'config {describe(key, value, rule)}')
