"""The plain JAX path or CPU kernels, by ``model.kernels`` (docs/model.md, "Execution settings")."""

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
