"""Shape, randomness, ablation and gradient contracts of the NNX Cardioformer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax import config_lib
from cardioformer_jax.models import count_params
from cardioformer_jax.models.cardioformer import (
    Cardioformer,
    CardioformerConfig,
    TokenLayout,
    parse_augmentations,
)
from cardioformer_jax.models.layers import gelu
from cardioformer_jax.ops import resolve_kernels
from cardioformer_jax.ops.attention import attention_cpu, attention_xla
from cardioformer_jax.ops.dropout import dropout
from cardioformer_jax.ops.layer_norm import LayerNorm
from tests.helpers.tiny_models import SMALL

# Each test runs the programs of its own small models once or twice: compiling is the cost.


def small_model(seed: int = 0, **overrides) -> Cardioformer:
    return Cardioformer(CardioformerConfig(**{**SMALL, **overrides}), rngs=nnx.Rngs(seed))


def ecg(batch: int, steps: int = 250, leads: int = 12, seed: int = 0) -> jax.Array:
    return jnp.asarray(
        np.random.default_rng(seed).standard_normal((batch, steps, leads)), jnp.float32
    )


def test_paper_configs_have_the_published_parameter_count():
    # Abstract evaluation: counts shapes without materialising 8.7 M parameters.
    model = nnx.eval_shape(lambda: Cardioformer(config_lib.model_section(), rngs=nnx.Rngs(0)))
    assert count_params(model) == 8_702_597
    assert model.config.head_features == 48_768


def test_token_counts_per_patch_length():
    config = CardioformerConfig(**SMALL)
    layout = TokenLayout.from_config(config)
    counts = {p: n for p, n in zip(layout.group_patch_lens, layout.group_num_patches, strict=True)}
    assert counts == {2: 126, 4: 63, 8: 32, 16: 16, 32: 8}
    assert layout.num_tokens == 381
    sizes = [
        layout.granularity_slice(i).stop - layout.granularity_slice(i).start
        for i in range(config.num_granularities)
    ]
    assert sizes == [126, 63, 32, 32] + [16] * 4 + [8] * 8
    # Every flat token belongs to exactly one granularity.
    covered = np.sort(layout.config_order)
    np.testing.assert_array_equal(covered, np.arange(381))


@pytest.mark.parametrize(
    "overrides, steps, leads",
    [
        ({}, 250, 12),
        ({"patch_lens": (8, 2, 8, 4), "num_classes": 3}, 250, 12),
        (
            {
                "patch_lens": config_lib.PATCH_LENS_12,
                "num_classes": 2,
            },
            300,
            15,
        ),
        ({"patch_lens": (8,)}, 250, 12),
        ({"single_channel": True, "patch_lens": (16, 32)}, 250, 12),
        ({"no_inter_attn": True, "patch_lens": (4, 16)}, 250, 12),
    ],
)
def test_stage_shapes(overrides, steps, leads):
    config = CardioformerConfig(**{**SMALL, **overrides, "seq_len": steps, "num_channels": leads})
    # Shapes only: abstract evaluation, no parameters materialised and nothing compiled.
    model = nnx.eval_shape(lambda: Cardioformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)

    def stages(state, x):
        m = nnx.merge(graphdef, state)
        tokens = m.embed(x)
        encoded = m.encode(tokens)
        return tokens, encoded, m.head(encoded)

    batch = 3
    x = jax.ShapeDtypeStruct((batch, steps, leads), jnp.float32)
    tokens, encoded, logits = jax.eval_shape(stages, state, x)
    rows = batch * leads if config.single_channel else batch
    chex.assert_shape(tokens, (rows, model.layout.num_tokens, config.d_model))
    chex.assert_shape(encoded, tokens.shape)
    chex.assert_shape(logits, (batch, config.num_classes))
    chex.assert_type(logits, jnp.float32)
    expected_features = config.d_model * model.layout.num_tokens * (
        leads if config.single_channel else 1)
    chex.assert_shape(model.projection.kernel, (expected_features, config.num_classes))


@pytest.mark.slow
def test_forward_is_finite_in_both_modes():
    model = small_model(patch_lens=(4, 16, 16), single_channel=True)
    forward = nnx.jit(lambda m, v: m(v))
    x = ecg(2)
    chex.assert_tree_all_finite(forward(model, x))
    model.eval()
    chex.assert_tree_all_finite(forward(model, x))


@pytest.mark.slow
def test_eval_mode_is_deterministic_and_train_mode_is_random():
    x = ecg(2)
    config = CardioformerConfig(**SMALL, patch_lens=(8, 16))
    # One jitted forward (NNX caches it per graph: one compilation per mode).
    forward = nnx.jit(lambda m, v: m(v))
    model = Cardioformer(config, rngs=nnx.Rngs(params=0, dropout=5))
    model.eval()
    chex.assert_trees_all_equal(forward(model, x), forward(model, x))
    eval_logits = forward(model, x)

    def train_logits(dropout_seed):
        return forward(Cardioformer(config, rngs=nnx.Rngs(params=0, dropout=dropout_seed)), x)

    first, again, other = train_logits(1), train_logits(1), train_logits(2)
    chex.assert_trees_all_equal(first, again)  # same rngs, same output
    assert not np.allclose(first, other)  # different rngs, different output
    # Successive calls draw fresh randomness from the stream.
    model.train()
    assert not np.allclose(forward(model, x), forward(model, x))
    # Dropout/augmentation really act in train mode only (same params as `first`).
    assert not np.allclose(eval_logits, first)


def _router_outputs(model: Cardioformer, tokens: jax.Array) -> np.ndarray:
    layout = model.layout
    routers = [layout.granularity_slice(i).stop - 1 for i in range(len(model.config.patch_lens))]
    return np.asarray(model.encode(tokens)[:, routers])


@pytest.mark.parametrize("no_inter_attn", [True, False])
def test_inter_attention_is_the_only_cross_granularity_path(no_inter_attn):
    model = small_model(patch_lens=(4, 8, 8, 32), no_inter_attn=no_inter_attn)
    model.eval()
    tokens = model.embed(ecg(2))
    changed = model.layout.granularity_slice(0)
    perturbed = tokens.at[:, changed].add(1.0)
    before, after = _router_outputs(model, tokens), _router_outputs(model, perturbed)
    assert not np.allclose(before[:, 0], after[:, 0])  # the perturbed granularity changes
    others_equal = np.allclose(before[:, 1:], after[:, 1:], atol=1e-6)
    assert others_equal == no_inter_attn


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_logits_agree_across_variants(self):
        model = small_model(patch_lens=(8, 16, 16))
        model.eval()
        graphdef, state = nnx.split(model)
        x = ecg(2)
        reference = nnx.merge(graphdef, state)(x)
        logits = self.variant(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
        chex.assert_shape(logits, (2, model.config.num_classes))
        chex.assert_tree_all_finite(logits)
        chex.assert_trees_all_close(logits, reference, rtol=2e-5, atol=2e-5)


@pytest.mark.slow
def test_gradients_are_finite_and_reach_every_parameter():
    model = small_model(patch_lens=(2, 8, 8, 32))
    # 16 samples: a head feature dropped (p=0.1) in every sample is then a 1e-16 event.
    x, labels = ecg(16), jnp.arange(16) % 5

    def loss_fn(m):
        logits = m(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    grads = nnx.jit(nnx.grad(loss_fn))(model)
    # A gradient for every parameter, of its shape and dtype, and all finite.
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, nnx.state(model, nnx.Param))
    chex.assert_tree_all_finite(grads)
    for path, value in nnx.to_flat_state(grads):
        array = np.asarray(value[...])
        # Per layer / per granularity slice, every tensor must receive some gradient.
        per_slice = (
            np.abs(array).reshape(array.shape[0], -1).max(axis=1)
            if array.ndim > 1
            else np.abs(array)
        )
        assert np.all(per_slice > 0), f"no gradient reaches {'.'.join(map(str, path))}"


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = dict(patch_lens=(8, 16))
    model32 = small_model(**config)
    model16 = small_model(**config, dtype="bfloat16")
    model32.eval()
    model16.eval()
    chex.assert_type(jax.tree.leaves(nnx.state(model16, nnx.Param)), jnp.float32)
    x = ecg(2)
    logits16 = model16(x)
    chex.assert_type(logits16, jnp.float32)
    chex.assert_trees_all_close(logits16, model32(x), atol=0.15, rtol=0.1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"patch_lens": (8, 300)}, "longer than the signal"),
        ({"d_model": 30, "n_heads": 4}, "not divisible by n_heads"),
        ({"augmentations": "jitter0.2,warp0.1"}, "unknown augmentation"),
        ({"augmentations": "flip"}, "not implemented here"),
        ({"dropout": 1.0}, "dropout"),
        ({"dtype": "float16"}, "dtype"),
        ({"patch_lens": ()}, "patch_lens is empty"),
        ({"kernels": "gpu"}, "kernels"),
        ({"eval_chunk_size": -1}, "eval_chunk_size"),
    ],
)
def test_bad_config_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        CardioformerConfig(**{**SMALL, **overrides})


def test_unknown_model_config_key_is_refused():
    values = dict(config_lib.model_section())
    values["d_modle"] = 64
    with pytest.raises(ValueError, match="unknown model config keys.*d_modle"):
        CardioformerConfig.from_config(values)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((250, 12), "batch, time, leads"),
        ((2, 250, 15), r"\(batch, 250, 12\)"),
        ((2, 200, 12), r"\(batch, 250, 12\)"),
    ],
)
def test_bad_inputs_are_refused(shape, message):
    model = small_model(patch_lens=(8,))
    with pytest.raises((ValueError, AssertionError), match=message):
        model(jnp.zeros(shape))


def test_augmentation_parsing():
    assert parse_augmentations("jitter0.2,scale0.2,drop0.5") == (
        ("jitter", 0.2),
        ("scale", 0.2),
        ("drop", 0.5),
    )
    assert parse_augmentations("none,drop") == (("none", 0.0), ("drop", 0.1))


def test_augmentations_are_drawn_per_granularity():
    model = small_model(patch_lens=(8,) * 6, augmentations="none,drop0.5")
    x = ecg(2)
    clean = model.embed(x)  # no key: eval mode, no augmentation
    tokens = np.asarray(clean - model.embed(jnp.zeros_like(x)))  # before the embeddings
    kinds = set()
    for seed in range(4):
        delta = np.asarray(model.embed(x, jax.random.key(seed)) - clean)
        for g in range(6):
            part = model.layout.granularity_slice(g)
            dropped = np.isclose(delta[:, part], -tokens[:, part], atol=1e-5).mean()
            if np.allclose(delta[:, part], 0.0):
                kinds.add("none")
            else:  # dropout at rate 0.5 zeroes about half of the token values
                assert 0.35 < dropped < 0.65
                kinds.add("drop")
    assert kinds == {"none", "drop"}
    none_model = small_model(patch_lens=(8, 8), augmentations="none")
    np.testing.assert_array_equal(none_model.embed(x), none_model.embed(x, jax.random.key(0)))


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
@pytest.mark.parametrize("rate", [0.0, 0.4])
def test_attention_matches_the_plain_formula_and_its_autodiff(rate, kernels):
    """Both attention kernels equal autodiff of the plain formula, with the same mask."""
    rng = np.random.default_rng(3)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal((2, 3, 4, 7, 8)), jnp.float32)
                          for _ in range(4))
    key = jax.random.key(5) if rate else None

    def plain(q, k, v):
        scores = jnp.einsum("...qd,...kd->...qk", q, k) / np.sqrt(q.shape[-1])
        probs = dropout(jax.nn.softmax(scores, axis=-1), rate, key, kernels)
        return jnp.einsum("...qk,...kd->...qd", probs, v)

    kernel = {"cpu": attention_cpu, "xla": attention_xla}[kernels]
    expected, expected_vjp = jax.vjp(plain, q, k, v)
    got, got_vjp = jax.vjp(lambda q, k, v: kernel(q, k, v, key, rate), q, k, v)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-5)
    if rate:  # dropout really acted (and with the same mask in both)
        assert not np.allclose(got, kernel(q, k, v, None, 0.0))
    # (dq, dk, dv)
    chex.assert_trees_all_close(got_vjp(cotangent), expected_vjp(cotangent), rtol=1e-5,
                                atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_kernels_agree_in_values_and_gradients(dtype):
    rng = np.random.default_rng(6)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal((2, 4, 9, 8)), dtype)
                          for _ in range(4))
    results = []
    for kernel in (attention_cpu, attention_xla):
        out, vjp = jax.vjp(lambda q, k, v, f=kernel: f(q, k, v, None, 0.0), q, k, v)
        results.append((out, vjp(cotangent)))
    cpu, xla = results  # (output, (dq, dk, dv)) of each
    chex.assert_type([cpu[0], xla[0]], dtype)
    tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
    chex.assert_trees_all_close(*(jax.tree.map(lambda a: a.astype(jnp.float32), r)
                                  for r in (cpu, xla)), rtol=tolerance, atol=tolerance)


def test_kernels_auto_picks_the_cpu_kernels_on_cpu_and_both_give_the_same_logits():
    assert resolve_kernels("auto") == ("cpu" if jax.default_backend() == "cpu" else "xla")
    x = ecg(3)
    logits = {}
    for kernels in ("cpu", "xla"):
        model = small_model(patch_lens=(4, 8, 8, 32), kernels=kernels)
        assert model.kernels == kernels
        model.eval()
        logits[kernels] = np.asarray(model(x))
    np.testing.assert_allclose(logits["cpu"], logits["xla"], rtol=1e-5, atol=1e-5)


def test_eval_mode_in_chunks_gives_each_row_its_own_logits():
    x = ecg(6)
    whole = small_model(eval_chunk_size=6)
    whole.eval()
    expected = np.asarray(whole(x))
    for chunk, rows in ((1, 1), (4, 6), (2, 2), (0, 6)):
        model = small_model(eval_chunk_size=chunk)
        model.eval()
        assert model.eval_chunk_rows(6) == rows
        # Same weights (same seed); rows computed in other groupings round differently.
        np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, v: m(v))(model, x)), expected,
                                   rtol=2e-5, atol=2e-5)
    auto = small_model()
    assert auto.eval_chunk_rows(256) == (8 if auto.kernels == "cpu" else 256)
    assert auto.eval_chunk_rows(20) == (10 if auto.kernels == "cpu" else 20)
    assert small_model(eval_chunk_size=5).eval_chunk_rows(12) == 6


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_nnx_layer_norm_and_its_autodiff(dtype):
    """The model's LayerNorm has nnx.LayerNorm's values, and its backward is autodiff's."""
    rng = np.random.default_rng(4)
    x, cotangent = (jnp.asarray(3 * rng.standard_normal((3, 5, 16)) + 1, jnp.float32)
                    for _ in range(2))
    ours = LayerNorm(16, kernels="cpu", dtype=dtype, rngs=nnx.Rngs(0))
    reference = nnx.LayerNorm(16, epsilon=1e-5, dtype=dtype, use_fast_variance=False,
                              rngs=nnx.Rngs(0))
    for norm in (ours, reference):  # non-trivial affine parameters, the same in both
        norm.scale[...] = jnp.asarray(rng.standard_normal(16) if norm is ours else ours.scale[...])
        norm.bias[...] = jnp.asarray(rng.standard_normal(16) if norm is ours else ours.bias[...])

    results = []
    for norm in (ours, reference):
        graphdef, params = nnx.split(norm)
        y, vjp = jax.vjp(lambda p, x, g=graphdef: nnx.merge(g, p)(x), params, x)
        results.append((y, vjp(cotangent.astype(y.dtype))))
    (y, grads), (y_ref, grads_ref) = results
    chex.assert_type([y, y_ref], dtype)
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2

    def as_float32(tree):
        return jax.tree.map(lambda a: a.astype(jnp.float32), tree)

    chex.assert_trees_all_close(as_float32(y), as_float32(y_ref), rtol=tolerance, atol=tolerance)
    # (d_params, d_x): ours of nnx.LayerNorm's dtypes and values.
    chex.assert_trees_all_equal_dtypes(grads, grads_ref)
    chex.assert_trees_all_close(as_float32(grads), as_float32(grads_ref),
                                rtol=10 * tolerance, atol=10 * tolerance)


def test_gelu_is_the_exact_erf_form_with_its_derivative():
    """``gelu`` = x Phi(x) (PyTorch's default) in value and gradient, also far in the tails."""
    from scipy.special import erf

    x = np.linspace(-12.0, 12.0, 4001)
    phi = 0.5 * (1.0 + erf(x / np.sqrt(2.0)))
    density = np.exp(-0.5 * x**2) / np.sqrt(2.0 * np.pi)
    got, grad = jax.vmap(jax.value_and_grad(gelu))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, x * phi, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(grad, phi + x * density, rtol=1e-6, atol=2e-6)
    assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_dropout_keeps_values_scaled_and_drops_the_rest(kernels):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 256)) + 3.0, jnp.float32)
    y = np.asarray(dropout(x, 0.25, jax.random.key(1), kernels))
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(dropout(x, 0.25, None, kernels), x)


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_bfloat16_dropout_scale_is_not_rounded_to_bfloat16(kernels):
    # 1/0.9 in bfloat16 is 1.109375: every kept activation would shrink by 0.16%. With the
    # scale in float32 only each product is rounded, without a systematic bias.
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(1.0, 2.0, (512, 1024)), jnp.bfloat16)
    y = dropout(x, 0.1, jax.random.key(3), kernels)
    assert y.dtype == jnp.bfloat16
    x32, y32 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kept = y32 != 0
    ratio = y32[kept].sum() / x32[kept].sum()
    assert abs(ratio * 0.9 - 1.0) < 2e-4, ratio


def test_bfloat16_layer_norm_parameter_gradients_are_float32_sums():
    rng = np.random.default_rng(5)
    x = jnp.asarray(2 * rng.standard_normal((4, 64, 16)) + 1, jnp.bfloat16)
    cotangent = jnp.asarray(rng.standard_normal((4, 64, 16)), jnp.bfloat16)
    norm = LayerNorm(16, kernels="cpu", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, 16), jnp.float32)
    graphdef, params = nnx.split(norm)
    _, vjp = jax.vjp(lambda p: nnx.merge(graphdef, p)(x), params)
    (d_params,) = vjp(cotangent)
    d_scale, d_bias = d_params["scale"][...], d_params["bias"][...]
    assert d_scale.dtype == d_bias.dtype == jnp.float32
    # Expected sums in float64 from the same bfloat16 inputs.
    x64, g64 = np.asarray(x, np.float64), np.asarray(cotangent, np.float64)
    normalized = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(d_bias, g64.sum((0, 1)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d_scale, (g64 * normalized).sum((0, 1)), rtol=1e-4, atol=1e-3)
