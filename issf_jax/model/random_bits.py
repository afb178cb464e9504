"""Dropout masks from the Threefry-2x32 counter hash, unrolled (the same bits as jax.random).

`jax.random.bernoulli` on a threefry key hashes a counter per element with Threefry-2x32
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011). On a CPU, JAX lowers
that hash as a rolled loop of five steps, and XLA:CPU runs each step as passes over the whole
[T, D] array: about 4 % of a training step at T = 1024 (docs/results.md, "Against the authors'
code"). `keep_mask` computes the same 20 rounds written out, which XLA fuses into one pass
with the comparison, and gives exactly the bits of `jax.random.bernoulli(key, p, shape)` with
JAX's default (partitionable) threefry: the same masks as before, so a resumed run and a run
of an older version draw the same dropout.
"""

from __future__ import annotations

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
_MANTISSA_BITS = 23  # float32: the uniform's bits are the hash's top 23 bits


def _rotate_left(x, r: int):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k1, k2, x0, x1):
  """Threefry-2x32 with 20 rounds: the two output words for counter words (x0, x1) under key
  (k1, k2); uint32 arrays that broadcast together."""
  keys = (k1, k2, k1 ^ k2 ^ _KEY_PARITY)
  x0, x1 = x0 + keys[0], x1 + keys[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = _rotate_left(x1, r) ^ x0
    x0 = x0 + keys[(i + 1) % 3]
    x1 = x1 + keys[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def supported(keys) -> bool:
  """Whether `keep_mask` reproduces jax.random for these keys (threefry keys, partitionable)."""
  return jax.config.jax_threefry_partitionable and str(jax.random.key_impl(keys)) in (
    'threefry2x32',
    'PRNGImpl(threefry2x32)',
  )


def keep_mask(keys, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
  """[B, *shape] bool: video b's `jax.random.bernoulli(keys[b], keep_prob, shape)`.

  keys: [B] typed threefry PRNG keys (`supported`). The uniform of an element is its 32-bit
  hash's top 23 bits m over 2^23, and u < float32(p) exactly when m < ceil(float32(p) 2^23).
  """
  size = math.prod(shape)
  if size >= 2**32:
    raise ValueError(f'dropout over {size} elements: the counter needs more than 32 bits')
  data = jax.random.key_data(keys)  # [B, 2] uint32
  k1 = data[:, 0].reshape((-1,) + (1,) * len(shape))
  k2 = data[:, 1].reshape((-1,) + (1,) * len(shape))
  counter = jax.lax.broadcasted_iota(jnp.uint32, (size,), 0).reshape(shape)
  bits0, bits1 = threefry2x32(k1, k2, jnp.zeros_like(counter), counter)
  mantissa = (bits0 ^ bits1) >> np.uint32(32 - _MANTISSA_BITS)
  threshold = math.ceil(fractions.Fraction(float(np.float32(keep_prob))) * 2**_MANTISSA_BITS)
  return mantissa < np.uint32(threshold)
