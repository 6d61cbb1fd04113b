"""Tests for cardioformer_jax.training.swa."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax.training.swa import swa_update


def _random_tree(seed):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
        "scale": [jnp.asarray(rng.normal(), jnp.float32)],
        "bf16": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
        "count": jnp.asarray(seed, jnp.int32),
    }


@pytest.mark.parametrize("jit", [False, True])
def test_running_average_equals_arithmetic_mean(jit):
    k = 7
    trees = [_random_tree(s) for s in range(k)]
    update = jax.jit(swa_update) if jit else swa_update
    avg = jax.tree.map(jnp.zeros_like, trees[0])  # n=0 ignores the initial contents
    for n, tree in enumerate(trees):
        # A traced n under jit must work too, so no recompilation per epoch.
        avg = update(avg, tree, jnp.asarray(n) if jit else n)
    for path_leaf, *leaves in zip(
        jax.tree_util.tree_leaves_with_path(avg), *[jax.tree.leaves(t) for t in trees],
        strict=True,
    ):
        path, leaf = path_leaf
        stacked = np.stack([np.asarray(x, np.float64) for x in leaves])
        if "count" in jax.tree_util.keystr(path):
            assert int(leaf) == k - 1  # non-float leaves follow the newest tree
            continue
        tol = 1e-2 if leaf.dtype == jnp.bfloat16 else 1e-6
        np.testing.assert_allclose(np.asarray(leaf, np.float64), stacked.mean(0),
                                   rtol=tol, atol=tol)


def test_dtypes_and_structure_kept():
    a, b = _random_tree(0), _random_tree(1)
    out = swa_update(a, b, 3)
    assert jax.tree.structure(out) == jax.tree.structure(a)
    assert [x.dtype for x in jax.tree.leaves(out)] == [x.dtype for x in jax.tree.leaves(a)]


def test_first_update_copies_new_params_exactly():
    a = {"w": jnp.full((3,), jnp.nan)}  # even garbage in the initial average is ignored
    b = {"w": jnp.asarray([1.1, -2.3, 1e-8])}
    np.testing.assert_array_equal(swa_update(a, b, 0)["w"], b["w"])


def test_second_update_is_midpoint():
    out = swa_update({"w": jnp.asarray([1.0, 2.0])}, {"w": jnp.asarray([3.0, -2.0])}, 1)
    np.testing.assert_allclose(out["w"], [2.0, 0.0])


def test_works_on_nnx_state():
    models = [nnx.Linear(4, 2, rngs=nnx.Rngs(s)) for s in range(3)]
    states = [nnx.state(m, nnx.Param) for m in models]
    avg = states[0]
    for n, st in enumerate(states[1:], start=1):
        avg = jax.jit(swa_update)(avg, st, n)
    assert isinstance(avg, nnx.State)
    expected = np.mean([np.asarray(m.kernel[...]) for m in models], axis=0)
    np.testing.assert_allclose(np.asarray(avg["kernel"][...]), expected, rtol=1e-6, atol=1e-7)
    target = nnx.Linear(4, 2, rngs=nnx.Rngs(9))
    nnx.update(target, avg)  # the averaged state loads back into a model
    np.testing.assert_allclose(np.asarray(target.kernel[...]), expected, rtol=1e-6, atol=1e-7)
