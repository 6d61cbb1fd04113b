"""LayerNorm: `nnx.LayerNorm`, or with ``kernels="cpu"`` a hand-written backward pass."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array


class LayerNorm(nnx.LayerNorm):
    """`nnx.LayerNorm` with two-pass variance as PyTorch (``kernels="cpu"``: `layer_norm`)."""

    def __init__(self, num_features: int, *, kernels: str, dtype: jnp.dtype,
                 rngs: nnx.Rngs, epsilon: float = 1e-5):
        super().__init__(num_features, epsilon=epsilon, dtype=dtype, use_fast_variance=False,
                         rngs=rngs)
        self.kernels = kernels

    def __call__(self, x: Array) -> Array:
        if self.kernels != "cpu":
            return super().__call__(x)
        dtype = self.dtype or x.dtype
        return layer_norm(x.astype(dtype), self.scale[...], self.bias[...], self.epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    """`nnx.LayerNorm`'s values in ``x``'s dtype; the backward is the two-reduction form over
    the statistics saved as ``layer_norm_stats`` (autodiff makes XLA:CPU pass more often)."""
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    stats = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = stats.mean(-1, keepdims=True)
    centered = stats - mean
    rstd = jax.lax.rsqrt(jax.lax.square(centered).mean(-1, keepdims=True) + epsilon)
    mean, rstd = (checkpoint_name(a, "layer_norm_stats") for a in (mean, rstd))
    y = ((x - mean) * (rstd * scale) + bias).astype(x.dtype)
    return y, (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, d_y):
    del epsilon
    x, mean, rstd, scale = residuals
    normalized = (x - mean) * rstd
    d_y = d_y.astype(normalized.dtype)
    leading = tuple(range(x.ndim - 1))
    d_scale = jnp.sum(d_y * normalized, axis=leading)
    d_bias = jnp.sum(d_y, axis=leading)
    g = d_y * scale
    d_x = rstd * (g - g.mean(-1, keepdims=True)
                  - normalized * (g * normalized).mean(-1, keepdims=True))
    return d_x.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
