"""Stochastic weight averaging: equal-weight running mean of pytrees (docs/training.md)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def swa_update(avg_params: Any, new_params: Any, n_averaged: int | jax.Array) -> Any:
    """Adds ``new_params`` to a running average of ``n_averaged`` pytrees (exactly
    ``new_params`` for 0). Floating leaves are averaged in at least float32 (bf16 means drift)
    and cast back; others (counters, RNG keys) are taken from ``new_params``."""
    n = jnp.asarray(n_averaged, dtype=jnp.float32)

    def update(avg: jax.Array, new: jax.Array) -> jax.Array:
        avg, new = jnp.asarray(avg), jnp.asarray(new)
        if not jnp.issubdtype(avg.dtype, jnp.inexact):
            return new
        compute = jnp.promote_types(avg.dtype, jnp.float32)
        a, p = avg.astype(compute), new.astype(compute)
        out = jnp.where(n == 0, p, a + (p - a) / (n + 1).astype(compute))
        return out.astype(avg.dtype)

    return jax.tree.map(update, avg_params, new_params)
