"""Statistics and determinism of the hashed random numbers used for dropout and noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cardioformer_jax.ops import hash_random as hash_random


@pytest.mark.parametrize("impl", hash_random.IMPLEMENTATIONS)
def test_bernoulli_rate_and_determinism(impl):
    key = jax.random.key(3)
    mask = np.asarray(hash_random.bernoulli(key, 0.9, (512, 256), impl))
    assert abs(mask.mean() - 0.9) < 0.005
    np.testing.assert_array_equal(mask, hash_random.bernoulli(key, 0.9, (512, 256), impl))
    other = np.asarray(hash_random.bernoulli(jax.random.key(4), 0.9, (512, 256), impl))
    assert (mask != other).mean() > 0.1


def test_hash_bits_have_no_visible_structure():
    bits = np.asarray(hash_random.random_bits(jax.random.key(0), (256, 256)))
    # Every bit position is set about half of the time ...
    per_bit = np.array([((bits >> b) & 1).mean() for b in range(32)])
    assert np.all(np.abs(per_bit - 0.5) < 0.01)
    # ... and neighbouring elements along either axis are uncorrelated.
    u = (bits >> 8).astype(np.float64)
    for a, b in ((u[:, :-1], u[:, 1:]), (u[:-1], u[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    # Keys split from one parent give unrelated streams.
    k1, k2 = jax.random.split(jax.random.key(0))
    v1 = np.asarray(hash_random.uniform(k1, (4096,)))
    v2 = np.asarray(hash_random.uniform(k2, (4096,)))
    assert abs(np.corrcoef(v1, v2)[0, 1]) < 0.05
    # ... also when one stream is shifted against the other (keys map to different
    # bijections of the index, not to offsets of one sequence).
    for shift in (1, 2, 7, 64):
        assert abs(np.corrcoef(v1[shift:], v2[:-shift])[0, 1]) < 0.05
        assert abs(np.corrcoef(v1[shift:], v1[:-shift])[0, 1]) < 0.05
    # Dropout masks of sibling keys agree only by chance (rate 0.9 -> 0.82 agreement).
    m1 = np.asarray(hash_random.bernoulli(k1, 0.9, (512, 256)))
    m2 = np.asarray(hash_random.bernoulli(k2, 0.9, (512, 256)))
    assert abs((m1 == m2).mean() - 0.82) < 0.005


@pytest.mark.parametrize("impl", hash_random.IMPLEMENTATIONS)
def test_normal_moments(impl):
    z = np.asarray(hash_random.normal(jax.random.key(1), (200_000,), jnp.float32, impl))
    assert np.all(np.isfinite(z))
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    assert abs((np.abs(z) < 1.0).mean() - 0.6827) < 0.005  # the shape, not just two moments


def test_uniform_range():
    u = np.asarray(hash_random.uniform(jax.random.key(2), (100_000,)))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005


def test_normal_is_finite_for_every_bit_pattern_extreme():
    # The extreme bit patterns are hit about once per 8 million draws: test them directly.
    bits = jnp.array([0, 1, 511, 512, 0x7FFFFFFF, 0xFFFFFE00, 0xFFFFFFFF], jnp.uint32)
    z = np.asarray(hash_random.normal_from_bits(bits))
    assert np.all(np.isfinite(z))
    assert z[0] < -5.0 and z[-1] > 5.0  # the tails are reached, symmetric
    np.testing.assert_allclose(z[0], -z[-1], rtol=1e-5)
