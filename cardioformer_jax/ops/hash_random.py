"""Counter-hash random numbers of the CPU kernels (``impl="jax"``: ``jax.random``), which XLA
fuses into their consumers (docs/model.md, "Execution settings")."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
IMPLEMENTATIONS = ("hash", "jax")


def _lowbias32(h: Array) -> Array:
    # Integer finaliser with a low avalanche bias (C. Wellons, "hash prospector").
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def random_bits(key: Array, shape: tuple[int, ...]) -> Array:
    """uint32 bits of ``shape``: lowbias32 of each flat index ``i * m + a`` (``m`` odd and
    ``a`` drawn from ``key``: a bijection of the 32-bit integers per key)."""
    seed = jax.random.bits(key, (2,), jnp.uint32)
    multiplier = seed[1] | jnp.uint32(1)
    index = jnp.broadcast_to(seed[0], shape)
    stride = 1
    for axis in reversed(range(len(shape))):
        axis_step = multiplier * jnp.uint32(stride % (1 << 32))
        # A 1-D term broadcast here: a full-size iota would be loop-invariant inside a
        # scan, and JAX's scan autodiff hoists loop-invariant values out of the loop, so
        # every draw would read ndim materialised index arrays from memory.
        term = jax.lax.iota(jnp.uint32, shape[axis]) * axis_step
        index = index + jax.lax.broadcast_in_dim(term, shape, (axis,))
        stride *= shape[axis]
    return _lowbias32(index)


def uniform(key: Array, shape: tuple[int, ...], impl: str = "hash") -> Array:
    """float32 uniform on [0, 1)."""
    if impl == "jax":
        return jax.random.uniform(key, shape)
    # The top 24 bits fill a float32 mantissa exactly.
    return (random_bits(key, shape) >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def bernoulli(key: Array, p: float, shape: tuple[int, ...], impl: str = "hash") -> Array:
    """Boolean array, True with probability ``p``."""
    if impl == "jax":
        return jax.random.bernoulli(key, p, shape)
    threshold = min(int(round(p * 2.0**32)), 2**32 - 1)
    return random_bits(key, shape) < jnp.uint32(threshold)


def normal(key: Array, shape: tuple[int, ...], dtype=jnp.float32, impl: str = "hash") -> Array:
    """Standard normal samples (inverse-CDF of a hashed uniform)."""
    if impl == "jax":
        return jax.random.normal(key, shape, dtype)
    return normal_from_bits(random_bits(key, shape)).astype(dtype)


def normal_from_bits(bits: Array) -> Array:
    """Standard normal float32 from uint32 bits by the inverse CDF."""
    # A centred 23-bit grid: every value k + 0.5 < 2^23 is exact in float32, so u stays
    # strictly inside (-1, 1) and erfinv finite. (With 24 bits the top value rounds to 1.)
    u = ((bits >> 9).astype(jnp.float32) + 0.5) * (2.0 / (1 << 23)) - 1.0
    return jnp.sqrt(2.0) * jax.scipy.special.erfinv(u)
