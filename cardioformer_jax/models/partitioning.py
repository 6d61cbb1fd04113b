"""How the model's activations are laid out on a device mesh (docs/scaling.md).

`constrain_batch` pins the batch axis inside a mesh, so an ``fsdp`` mesh stays data-parallel.
"""

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
    """`tree` (weights) whole on every device where it is used, when the mesh has an
    ``fsdp`` axis of more than one device; `tree` itself otherwise.

    This is what makes an ``fsdp`` mesh FSDP: each weight is all-gathered where it is used
    (a layer's inside the layer loop, so one layer's at a time) while the activations stay
    split by batch. Left to itself, GSPMD may instead keep the weights split and move the
    activations (tensor parallelism over the whole batch).
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.shape.get("fsdp", 1) == 1:
        return tree
    return jax.tree.map(lambda w: jax.lax.with_sharding_constraint(w, P()), tree)
