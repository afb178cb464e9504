"""The MLPs of the BRM's two channel units (Eq. 4), each applied to its own set of snippets.

theta_a acts on the salient rows F^a and theta_b on the non-salient rows F^b. Under static
shapes the sets' sizes are unknown at compile time, so the plain form runs both MLPs on every
row and keeps each row's own (`paired_logits`: one MLP of twice the width, the other unit's
hidden half zeroed): twice the FLOPs the equations need. For one video (a micro-batch of one,
the trainer's mode on a CPU), `own_unit_logits` instead sorts the rows, salient first, and
runs theta_a on a leading window and theta_b on a trailing window of the sorted rows. The
window sizes are static, one pair per branch of a `lax.switch` on the salient count S: with
K = `WINDOWS` branches, branch k covers S in (kT/K, (k+1)T/K] with theta_a on the first
ceil((k+1)T/K) rows and theta_b on the rows from floor(kT/K) on, i.e. T (1 + 1/K) rows in
all instead of 2T. Its gradient is written out (`jax.custom_vjp`) so that the backward pass
runs the same windows (a differentiated `lax.switch` would keep the residuals of every
branch) and only each row's own unit receives the row's gradient. The values are those of
`paired_logits` up to the summation order of the matmuls (float round-off).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from issf_jax.model import precision

WINDOWS = 4  # K: theta_a and theta_b together run on T (1 + 1/K) rows


def _dense(x, kernel, bias, dtype='float32'):
  y = precision.einsum('...i,io->...o', x, kernel, dtype)
  return y if bias is None else y + bias


def paired_logits(feats, salient, unit_a, unit_b, dtype: str = 'float32'):
  """[B, T, D] MLP_a(F) on the salient rows, MLP_b(F) on the others, both run on every row.

  The two first layers run as one [D, 2 D/r] matmul; zeroing, row by row, the hidden half of
  the unit that does not apply makes one [2 D/r, D] second layer give each row its own unit's
  output (the zeros add nothing). salient: [B, T] bool (padding rows take theta_b). dtype:
  the products' `precision.einsum`.
  """
  (k1a, b1a), (k2a, b2a) = unit_a
  (k1b, b1b), (k2b, b2b) = unit_b
  hidden = k1a.shape[1]
  bias1 = None if b1a is None else jnp.concatenate([b1a, b1b])
  h = jax.nn.relu(_dense(feats, jnp.concatenate([k1a, k1b], 1), bias1, dtype))
  own_half = jnp.concatenate(
    [jnp.broadcast_to(salient[..., None], salient.shape + (hidden,)),
     jnp.broadcast_to(~salient[..., None], salient.shape + (hidden,))], -1)  # fmt: skip
  h = jnp.where(own_half, h, 0.0)
  bias2 = None if b2a is None else jnp.where(salient[..., None], b2a, b2b)
  return _dense(h, jnp.concatenate([k2a, k2b], 0), bias2, dtype)


def own_unit_logits(feats, salient, unit_a, unit_b, windows: int = WINDOWS, dtype='float32'):
  """[B, T, D] the same values as `paired_logits`, with about half its FLOPs when B = 1.

  Args:
    feats: [B, T, D] F; salient: [B, T] bool.
    unit_a, unit_b: ((fc1 kernel [D, H], bias [H] or None), (fc2 kernel [H, D], bias or None)).
    windows: K (module docstring); below 2, or with several videos, `paired_logits`.
    dtype: the products' precision (`precision.matmul`), forward and backward.
  """
  if feats.shape[0] != 1 or windows < 2 or feats.shape[1] < windows:
    return paired_logits(feats, salient, unit_a, unit_b, dtype)
  # Under shard_map (one video per device), the parameters are device-invariant and the rows
  # device-varying; the written-out gradient is per device, so the parameters enter it as
  # varying values and their cast's transpose sums the gradient over the devices.
  unit_a, unit_b = precision.varying_like(feats, (unit_a, unit_b))
  return _windowed(feats[0], salient[0], unit_a, unit_b, windows, dtype)[None]


def _bounds(length: int, windows: int) -> list[tuple[int, int]]:
  """Per branch k: (rows [0, a) run theta_a, rows [b, T) run theta_b), in sorted order."""
  return [(-(-length * (k + 1) // windows), length * k // windows) for k in range(windows)]


def _sort(feats, salient, windows):
  length = feats.shape[0]
  perm = jnp.argsort(~salient, stable=True)  # salient rows first, each set in index order
  count = salient.sum(dtype=jnp.int32)
  branch = jnp.clip((count * windows + length - 1) // length - 1, 0, windows - 1)
  inverse = jnp.zeros_like(perm).at[perm].set(jnp.arange(length, dtype=perm.dtype))
  return perm, inverse, count, branch


# Rows [0, end) and [start, T) as `lax.slice`s: with a symbolic T (`micro.py` traces one
# program for every length bucket) NumPy-style indexing would lower to gathers.
def _head(x, end):
  return jax.lax.slice_in_dim(x, 0, end)


def _tail(x, start):
  return jax.lax.slice_in_dim(x, start, x.shape[0])


def _pad_rows(x, start: int, length: int):
  return jnp.pad(x, ((start, length - start - x.shape[0]), (0, 0)))


def _linear(x, kernel, bias, dtype):
  y = _dense(x, kernel, None) if dtype == 'float32' else precision.matmul(x, kernel, dtype)
  return y if bias is None else y + bias


def _forward(feats, salient, unit_a, unit_b, windows, dtype):
  length = feats.shape[0]
  perm, inverse, count, branch = _sort(feats, salient, windows)
  rows = feats[perm]
  own_a = (jnp.arange(length) < count)[:, None]
  (k1a, b1a), (k2a, b2a) = unit_a
  (k1b, b1b), (k2b, b2b) = unit_b

  def run(a_end, b_start, rows):
    h_a = jax.nn.relu(_linear(_head(rows, a_end), k1a, b1a, dtype))
    h_b = jax.nn.relu(_linear(_tail(rows, b_start), k1b, b1b, dtype))
    h = jnp.where(own_a, _pad_rows(h_a, 0, length), _pad_rows(h_b, b_start, length))
    z_a, z_b = _linear(h_a, k2a, b2a, dtype), _linear(h_b, k2b, b2b, dtype)
    z = jnp.where(own_a, _pad_rows(z_a, 0, length), _pad_rows(z_b, b_start, length))
    return z, h

  branches = [functools.partial(run, a, b) for a, b in _bounds(length, windows)]
  z, hidden = jax.lax.switch(branch, branches, rows)
  return z[inverse], (rows, hidden, perm, inverse, count, branch)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _windowed(feats, salient, unit_a, unit_b, windows, dtype):
  """[T, D] logits; feats [T, D], salient [T] bool (module docstring)."""
  return _forward(feats, salient, unit_a, unit_b, windows, dtype)[0]


def _windowed_fwd(feats, salient, unit_a, unit_b, windows, dtype):
  z, residuals = _forward(feats, salient, unit_a, unit_b, windows, dtype)
  return z, (residuals, unit_a, unit_b)


def _unit_grads(rows, hidden, dz, own, kernels, biases, dtype):
  """One unit's gradients over its window; rows of the other set have dz = 0 (`own`)."""
  (k1, k2), (b1, b2) = kernels, biases
  mm = functools.partial(precision.matmul, dtype=dtype)
  dz = jnp.where(own, dz, 0.0)
  dh = jnp.where(hidden > 0, mm(dz, k2.T), 0.0)
  grads = (
    (mm(rows.T, dh), None if b1 is None else dh.sum(0)),
    (mm(hidden.T, dz), None if b2 is None else dz.sum(0)),
  )
  return grads, mm(dh, k1.T)


def _windowed_bwd(windows, dtype, saved, dz):
  (rows, hidden, perm, inverse, count, branch), unit_a, unit_b = saved
  length = rows.shape[0]
  own_a = (jnp.arange(length) < count)[:, None]
  dz = dz[perm]
  (k1a, b1a), (k2a, b2a) = unit_a
  (k1b, b1b), (k2b, b2b) = unit_b

  def run(a_end, b_start, dz):
    grads_a, dx_a = _unit_grads(*(_head(x, a_end) for x in (rows, hidden, dz, own_a)),
                                (k1a, k2a), (b1a, b2a), dtype)  # fmt: skip
    grads_b, dx_b = _unit_grads(*(_tail(x, b_start) for x in (rows, hidden, dz, ~own_a)),
                                (k1b, k2b), (b1b, b2b), dtype)  # fmt: skip
    return _pad_rows(dx_a, 0, length) + _pad_rows(dx_b, b_start, length), grads_a, grads_b

  branches = [functools.partial(run, a, b) for a, b in _bounds(length, windows)]
  dx, grads_a, grads_b = jax.lax.switch(branch, branches, dz)
  return dx[inverse], None, grads_a, grads_b


_windowed.defvjp(_windowed_fwd, _windowed_bwd)
