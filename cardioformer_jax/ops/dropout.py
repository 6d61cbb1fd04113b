"""Inverted dropout whose mask can be drawn once and applied twice (forward and backward)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cardioformer_jax.ops import hash_random, random_impl

Array = jax.Array


def keep_mask(key: Array | None, rate: float, shape: tuple[int, ...],
              kernels: str) -> Array | None:
    """Boolean keep mask (None: keep everything, as in eval mode or at rate 0)."""
    if key is None or rate == 0.0:
        return None
    return hash_random.bernoulli(key, 1.0 - rate, shape, random_impl(kernels))


def apply_mask(x: Array, keep: Array | None, rate: float) -> Array:
    """Kept elements scaled by ``1 / (1 - rate)``, the others zero."""
    if keep is None:
        return x
    # A product with the mask rather than a select against zeros: the zeros would be a
    # full-size loop-invariant array, which scan autodiff hoists out of the layer loop. The
    # scale stays float32: rounded to bfloat16, 1/0.9 would become 1.109375, a 0.16% shrink.
    scale = keep.astype(jnp.float32) * jnp.float32(1.0 / (1.0 - rate))
    return (x * scale).astype(x.dtype)


def dropout(x: Array, rate: float, key: Array | None, kernels: str = "xla") -> Array:
    """Inverted dropout; identity when ``key`` is None (eval mode) or the rate is 0."""
    return apply_mask(x, keep_mask(key, rate, x.shape, kernels), rate)
