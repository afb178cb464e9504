"""Which host input path feeds the trainer and the evaluator.

'tf': the tf.data pipeline (`input_pipeline`), the default wherever TensorFlow is installed.
'numpy': the same batches made in numpy (`numpy_pipeline`), where it is not: the GPU machines'
fixed image has no TensorFlow (docs/design.md §6). 'auto' picks the first that can run. Both are
modules with the same interface (create_train_iterator, create_eval_iterator, EvalOptions,
load_manifest, load_ground_truth, Host); the resident training path (`resident.py`) needs
neither.
"""

from __future__ import annotations

import types

from issf_common import tensorflow_optional

SETTINGS = ('auto', 'tf', 'numpy')


def select(setting: str = 'auto') -> types.ModuleType:
  """The input pipeline module for `setting` (module docstring)."""
  if setting not in SETTINGS:
    raise ValueError(f'input pipeline must be one of {SETTINGS}, got {setting!r}')
  if setting == 'auto':
    setting = 'tf' if tensorflow_optional.available() else 'numpy'
  if setting == 'tf':
    if not tensorflow_optional.available():
      raise ImportError('the tf.data input pipeline needs TensorFlow, which is not installed')
    from data_pipelines import input_pipeline

    return input_pipeline
  from data_pipelines import numpy_pipeline

  return numpy_pipeline
