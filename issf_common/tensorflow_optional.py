"""TensorFlow where it is installed, None where it is not.

Where it is installed, TensorFlow stays the default input path (tf.data); where it is not (the
GPU machines' fixed image), the shards are read and written without it and the trainer takes its
batches from the numpy path (docs/design.md §6). Importing this module imports nothing.
"""

from __future__ import annotations

import functools


@functools.cache
def tensorflow():
  """`issf_common.tensorflow_cpu.tf` (every GPU hidden from it), or None if it cannot import."""
  try:
    from issf_common.tensorflow_cpu import tf
  except ImportError:
    return None
  return tf


def available() -> bool:
  return tensorflow() is not None
