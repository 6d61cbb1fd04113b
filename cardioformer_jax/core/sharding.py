"""Device mesh ``("data", "fsdp")``, parameter partitioning, batch placement (docs/scaling.md)."""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

logger = logging.getLogger(__name__)

AXIS_NAMES: tuple[str, str] = ("data", "fsdp")
# Mesh axes the batch dimension is split over (those present in a given mesh).
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")

Rules = Sequence[tuple[str, P]]

# (regex, spec), first match wins; `re.search` on the "/"-joined path, so a rule anchored
# with `$` also matches in an optimizer state. Undividable dimensions are replicated (`_fit`).
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    # (D * sum N_i, classes): 48768 x 5 for PTB-XL, 56 % of all parameters.
    (r"(^|/)projection/kernel$", P("fsdp", None)),
    # Stacked over layers: (L, D, d_ff) and (L, d_ff, D); shard d_ff, never the scanned L.
    (r"(^|/)resblock\d+/conv1/kernel$", P(None, None, "fsdp")),
    (r"(^|/)resblock\d+/conv2/kernel$", P(None, "fsdp", None)),
    # Attention projections (L, G, D, D): shard the output features.
    (r"(^|/)(query|key|value|out)_kernel$", P(None, None, None, "fsdp")),
    # Patch embeddings (count, p, C, D).
    (r"(^|/)patch_kernels/\d+$", P(None, None, None, "fsdp")),
    # Biases, norms, embeddings, step counters: small, replicated.
    (r".*", P()),
)


def resolve_mesh_shape(
    mesh_shape: Sequence[int] | None, num_axes: int, device_count: int
) -> tuple[int, ...]:
    """The concrete mesh shape: None = all devices on the first axis; one -1 = the rest."""
    if mesh_shape is None:
        return (device_count,) + (1,) * (num_axes - 1)
    shape = tuple(int(s) for s in mesh_shape)
    if len(shape) != num_axes:
        raise ValueError(f"mesh shape {shape} has {len(shape)} axes, expected {num_axes}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape {shape}: sizes must be positive (or -1 for the rest)")
    known = math.prod(s for s in shape if s != -1)
    if device_count % known:
        raise ValueError(
            f"mesh shape {shape} does not divide the {device_count} devices "
            f"(jax.device_count()); the product of the sizes must divide it"
        )
    if -1 in shape:
        shape = tuple(device_count // known if s == -1 else s for s in shape)
    elif known != device_count:
        raise ValueError(
            f"mesh shape {shape} uses {known} of the {device_count} devices; use all "
            f"(e.g. put -1 on one axis)"
        )
    return shape


def create_mesh(
    mesh_shape: Sequence[int] | None = None,
    axis_names: Sequence[str] = AXIS_NAMES,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh over all devices (of all hosts) with the given shape, e.g. ``(-1, 1)``; axes
    `AxisType.Auto` (JAX's default Explicit would need annotations on every intermediate)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_shape, len(axis_names), len(devices))
    axis_types = (AxisType.Auto,) * len(shape)
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    if slices > 1:
        # Multi-slice (TPU slices joined by the data-centre network): the first axis spans
        # the slices, so only the batch's gradient all-reduce crosses the slow network.
        if shape[0] % slices:
            raise ValueError(f"mesh shape {shape}: the first axis must be a multiple of the "
                             f"{slices} slices the devices come from")
        from jax.experimental import mesh_utils

        ici = (shape[0] // slices, *shape[1:])
        dcn = (slices,) + (1,) * (len(shape) - 1)
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
        return Mesh(grid, tuple(axis_names), axis_types=axis_types)
    return jax.make_mesh(shape, tuple(axis_names), axis_types=axis_types, devices=devices)


def mesh_from_config(config: Any, devices: Sequence[Any] | None = None) -> Mesh:
    """`create_mesh` of ``config.mesh`` (`devices`: e.g. an `aot` topology's)."""
    return create_mesh(config.mesh.shape, tuple(config.mesh.axis_names), devices=devices)


def in_mesh(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """`fn` traced inside `mesh`'s abstract mesh, for `models.partitioning`'s constraints."""

    @functools.wraps(fn)
    def traced_in_mesh(*args: Any, **kwargs: Any) -> Any:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return traced_in_mesh


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_divisor(mesh: Mesh) -> int:
    """How many ways a global batch is split (it must be a multiple of this)."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over ``data`` and ``fsdp`` (all devices), the rest whole."""
    axes = batch_axes(mesh)
    return NamedSharding(mesh, P(axes if axes else None))


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's consecutive rows of a batch -> global `jax.Array`s with
    `data_sharding(mesh)` (the processes' rows concatenated in device order)."""
    sharding = data_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in batch.items()
    }


def host_local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, as NumPy: the inverse of
    `global_batch` (row ``i`` is row ``i`` of the batch this process fed)."""
    if array.is_fully_addressable and jax.process_count() == 1:
        return np.asarray(array)
    pieces: dict[int, np.ndarray] = {}
    for shard in array.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, np.asarray(shard.data))  # replicas hold the same rows
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)


def path_name(path: Iterable[Any]) -> str:
    """A pytree key path as ``"layers/resblock1/conv1/kernel"``, without NNX `Variable`s'
    ``.value`` (the same name from an `nnx.State`, a pure dict and an optimizer state)."""
    keys = [k for k in path if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value")]
    return jax.tree_util.keystr(tuple(keys), simple=True, separator="/")


def _axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int | None:
    """Devices along `axes`, or None when the mesh lacks one of them."""
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    if any(a not in mesh.shape for a in names):
        return None
    return math.prod(mesh.shape[a] for a in names)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh, name: str) -> P:
    """`spec` with every entry the dimension cannot take (not divisible, axis absent from
    the mesh, rank mismatch) replaced by None, so a rule never makes sharding fail."""
    if len(spec) > len(shape):
        logger.warning("partition rule %s has rank %d > %s of %s: replicated",
                       spec, len(spec), shape, name)
        return P()
    entries = []
    for dim, axes in zip(shape, spec, strict=False):
        size = _axis_size(mesh, axes)
        if size is None or dim % size:
            if axes is not None:
                logger.info("%s %s: dimension %d not divisible over %s; replicated on it",
                            name, shape, dim, axes)
            entries.append(None)
        else:
            entries.append(axes if size > 1 else None)
    while entries and entries[-1] is None:  # P(None, None) and P() are the same layout
        entries.pop()
    return P(*entries)


def partition_spec(name: str, shape: Sequence[int], mesh: Mesh, rules: Rules = DEFAULT_RULES
                   ) -> P:
    """The `PartitionSpec` of one array named `name` (first matching rule, then fitted)."""
    for pattern, spec in rules:
        if re.search(pattern, name):
            return _fit(spec, tuple(shape), mesh, name)
    return P()


def tree_partition_specs(tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """`tree` (any pytree; leaves need only a ``shape``) with a `PartitionSpec` per leaf."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: partition_spec(path_name(path), np.shape(leaf), mesh, rules), tree
    )


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Like `tree_partition_specs`, with `NamedSharding`s (for ``jit(out_shardings=)``)."""
    specs = tree_partition_specs(tree, mesh, rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, P))

