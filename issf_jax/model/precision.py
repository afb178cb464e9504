"""The matmul precision of the model's large products (`model.matmul_dtype`).

'float32' (the default) leaves every product as it is. 'bfloat16' runs the large products (the
embedding, the BRM channel MLPs, the BRM temporal attention) with bfloat16 operands and float32
accumulation and outputs, forward and backward: the mixed precision of accelerators, which on a
CPU with AMX-BF16 (Intel Sapphire Rapids and later) multiplies the matmul rate about four times
(benchmarks/train_step.py). Everything else (the heads, the losses, the memory, the optimizer,
the parameters and their gradients) stays float32. It changes the numbers: an option measured
for accuracy (docs/results.md), never the default.

`einsum(equation, a, b, dtype)` is the one entry point: for 'bfloat16' a custom VJP, so that the
backward products also take bfloat16 operands (autodiff of a cast would run them on a float32
cotangent, at the float32 rate). Its residuals are the bfloat16 operands (half the memory).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from issf_jax.recipes import MATMUL_DTYPES


def einsum(equation: str, a: jax.Array, b: jax.Array, dtype: str = 'float32') -> jax.Array:
  """`jnp.einsum(equation, a, b)`, float32 out; with dtype 'bfloat16', bfloat16 operands.

  equation: two operands, every index of an operand in the other operand or in the output
  (true of the model's products: '...i,io->...o', 'bqd,bkd->bqk', 'bqk,bkd->bqd').
  """
  if dtype == 'float32':
    return jnp.einsum(equation, a, b)
  if dtype != 'bfloat16':
    raise ValueError(f'Unknown model.matmul_dtype {dtype!r}; choose from {MATMUL_DTYPES}.')
  b = varying_like(a, b)
  return _bf16_einsum(equation, a, b)


def matmul(a: jax.Array, b: jax.Array, dtype: str = 'float32') -> jax.Array:
  """`a @ b`, float32 out; with dtype 'bfloat16' on bfloat16 operands (inside a written-out
  gradient, where the caller runs the backward products itself)."""
  if dtype == 'float32':
    return a @ b
  return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)  # fmt: skip


class DenseWeights(nn.Module):
  """The parameters of an `nn.Dense(features)`, same names, shapes and initialisers, returned
  rather than applied (so that a product can run in another precision, or two units' as one)."""

  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    """-> (kernel [in_features, features], bias [features] or None)."""
    kernel = self.param(
      'kernel', nn.initializers.xavier_uniform(), (in_features, self.features), jnp.float32
    )
    if not self.use_bias:
      return kernel, None
    return kernel, self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)


def _gradient_equations(equation: str) -> tuple[str, str]:
  inputs, out = equation.replace(' ', '').split('->')
  lhs, rhs = inputs.split(',')
  return f'{out},{rhs}->{lhs}', f'{lhs},{out}->{rhs}'


def _product(equation, a, b):
  return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_einsum(equation, a, b):
  return _product(equation, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))


def _bf16_einsum_fwd(equation, a, b):
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  return _product(equation, a16, b16), (a16, b16)


def _bf16_einsum_bwd(equation, residuals, cotangent):
  a16, b16 = residuals
  c16 = cotangent.astype(jnp.bfloat16)
  for_a, for_b = _gradient_equations(equation)
  return _product(for_a, c16, b16), _product(for_b, a16, c16)


_bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)


def varying_like(ref, tree):
  """`tree` cast to vary over the manual mesh axes `ref` varies over (inside shard_map; the
  identity outside). A written-out gradient (a custom VJP) is computed per device, so a
  device-invariant parameter enters it as a varying value, and the cast's transpose sums its
  gradient over the devices, as autodiff does for a plain product."""
  axes = _varying_axes(ref)

  def cast(leaf):
    missing = tuple(sorted(axes - _varying_axes(leaf)))
    return jax.lax.pcast(leaf, missing, to='varying') if missing else leaf

  return jax.tree.map(cast, tree) if axes else tree


def _varying_axes(x) -> frozenset:
  """The manual mesh axes over which `x` varies inside shard_map (empty outside)."""
  aval = jax.typeof(x)
  mat = getattr(aval, 'mat', None)  # jax 0.10
  return frozenset(getattr(mat, 'varying', None) or getattr(aval, 'vma', None) or ())
