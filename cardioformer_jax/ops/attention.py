"""Scaled dot-product attention with dropout on the (float32) probabilities (docs/model.md)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cardioformer_jax.ops.dropout import apply_mask, keep_mask

Array = jax.Array


def attention(q: Array, k: Array, v: Array, key: Array | None, rate: float,
              kernels: str) -> Array:
    """Attention by the resolved ``kernels`` (``"xla"`` or ``"cpu"``, see `ops`)."""
    if kernels == "cpu":
        return attention_cpu(q, k, v, key, rate)
    return attention_xla(q, k, v, key, rate)


def attention_xla(q: Array, k: Array, v: Array, key: Array | None, rate: float) -> Array:
    """`jax.nn.dot_product_attention` without dropout, else the formula (docs/model.md)."""
    if key is None or rate == 0.0:
        # The library takes (B, N, H, d). Leading axes beyond one are vmapped, not merged
        # into B: a merge would bury a sharded batch axis in the minor part of B.
        def library(q, k, v):  # (B, H, N, d) each
            out = jax.nn.dot_product_attention(*(jnp.swapaxes(a, 1, 2) for a in (q, k, v)))
            return jnp.swapaxes(out, 1, 2)

        if q.ndim == 3:
            return library(q[None], k[None], v[None])[0]
        for _ in range(q.ndim - 4):
            library = jax.vmap(library)
        return library(q, k, v)
    probs = _probabilities(q, k)
    probs = apply_mask(probs, keep_mask(key, rate, probs.shape, "xla"), rate)
    return jnp.einsum("...qk,...kd->...qd", probs.astype(v.dtype), v)


def _probabilities(q: Array, k: Array) -> Array:
    scores = jnp.einsum("...qd,...kd->...qk", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(scores / math.sqrt(q.shape[-1]), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention_cpu(q: Array, k: Array, v: Array, key: Array | None, rate: float) -> Array:
    """The plain formula's values with hash-random dropout and a backward pass that reuses
    the saved probabilities and never transposes an ``(N, N)`` array (XLA:CPU copies one)."""
    return _attention_cpu_fwd(q, k, v, key, rate)[0]


def _attention_cpu_fwd(q, k, v, key, rate):
    probs = _probabilities(q, k)
    keep = keep_mask(key, rate, probs.shape, "cpu")
    dropped = apply_mask(probs, keep, rate).astype(v.dtype)
    out = jnp.einsum("...qk,...kd->...qd", dropped, v)
    return out, (q, k, v, key, probs, out)


def _attention_cpu_bwd(rate, residuals, d_out):
    q, k, v, key, probs, out = residuals
    keep = keep_mask(key, rate, probs.shape, "cpu")
    d_dropped = jnp.einsum("...qd,...kd->...qk", d_out, v, preferred_element_type=jnp.float32)
    d_probs = apply_mask(d_dropped, keep, rate)
    # Softmax backward; the 1/sqrt(d) of the scores is applied to the smaller (N, d) results.
    # Its row sums sum_k d_probs * probs equal sum_d d_out * out (expand d_probs and out), a
    # reduction over (N, d) instead of over the (N, N) probabilities.
    row_sums = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1,
                       keepdims=True)
    d_scores = (probs * (d_probs - row_sums)).astype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    d_q = jnp.einsum("...qk,...kd->...qd", d_scores, k) * scale
    # Gradients contracting over queries are computed transposed ((d, N) = (d, N_q) @ (N_q,
    # N)): the (N, N) operand then enters its dot as-is.
    d_k = jnp.swapaxes(jnp.einsum("...qd,...qk->...dk", q, d_scores), -1, -2) * scale
    dropped = apply_mask(probs, keep, rate).astype(v.dtype)
    d_v = jnp.swapaxes(jnp.einsum("...qd,...qk->...dk", d_out, dropped), -1, -2)
    d_key = None if key is None else np.zeros(key.shape, jax.dtypes.float0)
    return d_q, d_k, d_v, d_key


attention_cpu.defvjp(_attention_cpu_fwd, _attention_cpu_bwd)
