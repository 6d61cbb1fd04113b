"""How the model's activations and weights are laid out on a device mesh (docs/scaling.md)."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import PartitionSpec as P

from cardioformer_jax.core.sharding import BATCH_AXES


def constrain_batch(x: jax.Array, axis: int) -> jax.Array:
    """``x`` with its axis ``axis`` split over the current mesh's batch axes, the other
    axes whole; ``x`` itself when no mesh is set or it has none of the batch axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if not axes:
        return x
    spec = [None] * x.ndim
    spec[axis] = axes
    return jax.lax.with_sharding_constraint(x, P(*spec))


def gather_weights(tree: Any) -> Any:
    """`tree` (weights) whole where used on a mesh with ``fsdp`` > 1: FSDP's all-gather, one
    layer at a time, activations split by batch (GSPMD might move the activations instead)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.shape.get("fsdp", 1) == 1:
        return tree
    return jax.tree.map(lambda w: jax.lax.with_sharding_constraint(w, P()), tree)
