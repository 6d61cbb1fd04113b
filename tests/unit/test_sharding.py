"""Mesh creation and partition rules, in this process (one device, abstract meshes).

Eight emulated CPU devices and two real processes: tests/integration/test_sharding_devices.py.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from cardioformer_jax.core import sharding
from cardioformer_jax.models.cardioformer import Cardioformer
from configs import ptbxl

MESH_4x2 = AbstractMesh((4, 2), ("data", "fsdp"))


@pytest.mark.parametrize(
    ("shape", "count", "want"),
    [(None, 8, (8, 1)), ((-1, 1), 8, (8, 1)), ((4, -1), 8, (4, 2)), ((2, 4), 8, (2, 4)),
     ((-1, 2), 2, (1, 2))],
)
def test_resolve_mesh_shape(shape, count, want):
    assert sharding.resolve_mesh_shape(shape, 2, count) == want


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, -1), "does not divide the 8 devices"), ((2, 2), "uses 4 of the 8 devices"),
     ((-1, -1), "at most one axis"), ((8,), "expected 2"), ((0, 8), "positive")],
)
def test_resolve_mesh_shape_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        sharding.resolve_mesh_shape(shape, 2, 8)


def test_create_mesh_single_device():
    mesh = sharding.create_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
    assert sharding.data_sharding(mesh).spec == P(("data", "fsdp"))


def _specs_by_name(tree, mesh):
    specs = sharding.tree_partition_specs(tree, mesh)
    flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    return {sharding.path_name(path): spec for path, spec in flat}


def test_default_rules_on_model_and_adam_state():
    def create():
        model = Cardioformer(ptbxl.get_config().model, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)

    model, optimizer = nnx.eval_shape(create)
    params = _specs_by_name(nnx.state(model, nnx.Param), MESH_4x2)
    assert params["projection/kernel"] == P("fsdp")  # (48768, 5)
    assert params["layers/resblock2/conv1/kernel"] == P(None, None, "fsdp")  # (6, 128, 256)
    assert params["layers/resblock2/conv2/kernel"] == P(None, "fsdp")  # (6, 256, 128)
    assert params["layers/intra_attentions/0/query_kernel"] == P(None, None, None, "fsdp")
    assert params["patch_kernels/4"] == P(None, None, None, "fsdp")
    for name in ("projection/bias", "norm/scale", "granularity_embeddings",
                 "layers/resblock1/norm/bias", "layers/inter_attention/key_bias"):
        assert params[name] == P(), name
    opt = _specs_by_name(nnx.state(optimizer), MESH_4x2)
    for name, spec in params.items():  # Adam's mu and nu follow their parameter
        assert opt[f"opt_state/0/mu/{name}"] == spec
        assert opt[f"opt_state/0/nu/{name}"] == spec
    assert opt["opt_state/0/count"] == P() and opt["step"] == P()


def test_rules_fall_back_to_replicated():
    tree = {
        "projection": {"kernel": np.zeros((7, 5))},  # 7 rows: not divisible by fsdp=2
        "resblock1": {"conv1": {"kernel": np.zeros((2, 3))}},  # rank below the rule's
        "other": np.zeros((4, 4)),
    }
    assert set(_specs_by_name(tree, MESH_4x2).values()) == {P()}
    no_fsdp = AbstractMesh((8,), ("data",))
    assert sharding.partition_spec("projection/kernel", (48768, 5), no_fsdp) == P()


def test_path_names():
    tree = {"a": [{"b": 1}], "c": optax.ScaleByAdamState(count=0, mu={"k": 1}, nu={"k": 2})}
    names = [sharding.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert names == ["a/0/b", "c/count", "c/mu/k", "c/nu/k"]
