"""Building blocks of the Cardioformer encoder (docs/model.md) and shared helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cardioformer_jax.ops.attention import attention
from cardioformer_jax.ops.dropout import dropout
from cardioformer_jax.ops.layer_norm import LayerNorm

Array = jax.Array


def split_key(key: Array | None, names: Sequence[str]) -> dict[str, Array | None]:
    """One independent key per named use (all None in eval mode)."""
    if key is None:
        return dict.fromkeys(names)
    return dict(zip(names, jax.random.split(key, len(names)), strict=True))


def torch_linear_init(fan_in: int) -> nnx.Initializer:
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def gelu(x: Array) -> Array:
    """Exact GELU ``x/2 (1 + erf(x/sqrt 2))`` as PyTorch; ``jax.nn.gelu``'s tanh form is an
    approximation and its exact form's ``erfc`` costs about 3x on CPU."""
    half = jnp.asarray(0.5, x.dtype)
    return half * x * (1 + jax.lax.erf(x * jnp.asarray(math.sqrt(0.5), x.dtype)))


def sinusoidal_position_encoding(num_positions: int, d_model: int) -> np.ndarray:
    """The reference's fixed table: ``pe[pos, 2k] = sin(pos / 10000^(2k/D))``, cos at 2k+1."""
    position = np.arange(num_positions, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * -(math.log(10000.0) / d_model))
    pe = np.zeros((num_positions, d_model), np.float32)
    pe[:, 0::2] = np.sin(position * div_term)
    pe[:, 1::2] = np.cos(position * div_term)
    return pe


class GroupedAttention(nnx.Module):
    """``G`` independent multi-head self-attentions with ``(G, D, D)`` kernels (``x @ kernel
    + bias``: PyTorch's weight transposed)."""

    def __init__(self, num_groups: int, d_model: int, n_heads: int, dropout_rate: float, *,
                 dtype: jnp.dtype, kernels: str, rngs: nnx.Rngs):
        init = torch_linear_init(d_model)
        shape = (num_groups, d_model, d_model)
        for name in ("query", "key", "value", "out"):
            setattr(self, f"{name}_kernel", nnx.Param(init(rngs.params(), shape)))
            setattr(self, f"{name}_bias", nnx.Param(init(rngs.params(), (num_groups, d_model))))
        self.n_heads = n_heads
        self.dropout_rate = dropout_rate
        self.dtype = dtype
        self.kernels = kernels

    def __call__(self, x: Array, key: Array | None) -> Array:
        """``(G, N, B, D)`` -> same. Einsums, not an ``(N*B, D)`` reshape: a batch-sharded
        input keeps its sharding (a merged axis would make GSPMD gather the batch)."""
        groups, tokens, batch, d_model = x.shape
        head_dim = d_model // self.n_heads
        # One fused projection for Q, K and V.
        qkv_kernel = jnp.concatenate(
            [self.query_kernel[...], self.key_kernel[...], self.value_kernel[...]], axis=-1)
        qkv_bias = jnp.concatenate(
            [self.query_bias[...], self.key_bias[...], self.value_bias[...]], axis=-1)
        qkv = jnp.einsum("gnbd,gde->gnbe", x, qkv_kernel.astype(self.dtype))
        qkv = qkv + qkv_bias[:, None, None, :].astype(self.dtype)
        qkv = qkv.reshape(groups, tokens, batch, 3, self.n_heads, head_dim)
        # (G, N, B, 3, H, d) -> three (G, B, H, N, d) arrays, heads as a batch dimension.
        q, k, v = jnp.transpose(qkv, (3, 0, 2, 4, 1, 5))
        out = attention(q, k, v, key, self.dropout_rate, self.kernels)
        out = jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(groups, tokens, batch, d_model)
        out = jnp.einsum("gnbd,gde->gnbe", out, self.out_kernel[...].astype(self.dtype))
        return out + self.out_bias[:, None, None, :].astype(self.dtype)


class ResidualBlock(nnx.Module):
    """``LayerNorm(z + Dropout(W2 Dropout(GELU(W1 z))))`` (1x1 convolutions in the reference)."""

    def __init__(self, d_model: int, d_ff: int, dropout_rate: float, *, dtype: jnp.dtype,
                 kernels: str, rngs: nnx.Rngs):
        self.conv1 = nnx.Linear(d_model, d_ff, kernel_init=torch_linear_init(d_model),
                                bias_init=torch_linear_init(d_model), dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Linear(d_ff, d_model, kernel_init=torch_linear_init(d_ff),
                                bias_init=torch_linear_init(d_ff), dtype=dtype, rngs=rngs)
        self.norm = LayerNorm(d_model, kernels=kernels, dtype=dtype, rngs=rngs)
        self.dropout_rate = dropout_rate
        self.kernels = kernels

    def __call__(self, z: Array, key: Array | None) -> Array:
        keys = split_key(key, ("hidden", "output"))
        y = dropout(gelu(self.conv1(z)), self.dropout_rate, keys["hidden"], self.kernels)
        y = dropout(self.conv2(y), self.dropout_rate, keys["output"], self.kernels)
        return self.norm(z + y)
