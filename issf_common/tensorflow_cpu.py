"""The one place TensorFlow is imported (the data pipeline, the TensorBoard writer); TF never
sees a GPU.

TF on a GPU machine would otherwise reserve GPU memory that JAX needs. With tensorflow-cpu the call
is a no-op. (TF imports jax itself, so JAX_* / XLA_FLAGS must be set before this module loads.)
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], 'GPU')

__all__ = ['tf']
