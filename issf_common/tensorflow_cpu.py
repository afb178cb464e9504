"""The one place TensorFlow is imported (the data pipeline, the TensorBoard writer); TF never
sees a GPU, and prints nothing at import.

TF on a GPU machine would otherwise reserve GPU memory that JAX needs. With tensorflow-cpu the call
is a no-op. (TF imports jax itself, so JAX_* / XLA_FLAGS must be set before this module loads.)

A quiet console: TF 2.21 prints 4 lines at import (`WARNING: All log messages before
absl::InitializeLog()...` and the `oneDNN custom operations are on` line, twice) whatever
`TF_CPP_MIN_LOG_LEVEL` says; only `TF_ENABLE_ONEDNN_OPTS=0` removes them. It switches TF's own CPU
kernels to Eigen; the input pipeline here only parses, decodes and pads (no matmul or
convolution), and JAX's XLA kernels are untouched. A user who sets either variable keeps theirs.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], 'GPU')

__all__ = ['tf']
