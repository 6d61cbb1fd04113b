"""Kernels: the model's plain JAX path and optional CPU kernels, chosen by one switch.

``model.kernels`` (docs/model.md):

* ``"xla"``: the plain path, for GPU and TPU. Attention is `jax.nn.dot_product_attention`
  (cuDNN flash attention on a GPU) when no attention dropout is active, LayerNorm is
  `nnx.LayerNorm`, and dropout and augmentation noise come from `jax.random`.
* ``"cpu"``: hand-written backward passes for attention and LayerNorm that suit XLA:CPU's
  dot kernels (`attention.attention_cpu`, `layer_norm.layer_norm`), and counter-hash random
  numbers (`hash_random`), which XLA:CPU generates far faster than threefry.
* ``"auto"`` (default): ``"cpu"`` on a CPU backend, ``"xla"`` elsewhere.

Both paths compute the same function (tests compare values and gradients); only the random
numbers, hence the dropout masks of a training step, differ. docs/benchmarks.md has what
the CPU kernels gain.
"""

from __future__ import annotations

import jax

KERNELS = ("auto", "xla", "cpu")


def resolve_kernels(kernels: str, platform: str | None = None) -> str:
    """``"xla"`` or ``"cpu"`` for a ``model.kernels`` value: ``"auto"`` looks at `platform`
    (the platform the program is compiled for; default: this process's backend)."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} must be one of {KERNELS}")
    if kernels == "auto":
        return "cpu" if (platform or jax.default_backend()) == "cpu" else "xla"
    return kernels


def random_impl(kernels: str) -> str:
    """The `hash_random` implementation of resolved kernels."""
    return "hash" if kernels == "cpu" else "jax"
