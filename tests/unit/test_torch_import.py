"""Importing the PyTorch reference's weights, checked against a NumPy reference.

No PyTorch here: state_dicts are built as NumPy arrays with the reference's names, straight
from docs/pytorch_checkpoints.md (not from ``torch_import``'s own tables), and
``tests/helpers/numpy_reference`` is an independent float64 forward pass of the reference
written from docs/model.md. The command line: tests/integration/test_torch_import_cli.py.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax import config_lib
from cardioformer_jax.interop.torch_import import (
    PE_NAME,
    convert,
    expected_reference_shapes,
    export_reference_state_dict,
    import_reference_weights,
    load_reference_model,
    load_torch_state_dict,
)
from cardioformer_jax.models import count_params
from cardioformer_jax.models.cardioformer import Cardioformer, CardioformerConfig
from tests.helpers import numpy_reference as ref
from tests.helpers.numpy_reference import make_state_dict, torch_style_pe
from tests.helpers.tiny_models import reference_small as small_config

# Each test runs the programs of its own small models once or twice: compiling is the cost.


def make_input(config: CardioformerConfig, batch: int = 2, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(
        (batch, config.seq_len, config.num_channels)).astype(np.float32)
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def imported(config: CardioformerConfig, sd) -> Cardioformer:
    model = load_reference_model(config, sd, rngs=nnx.Rngs(123))
    model.eval()
    return model


def reference_logits(config: CardioformerConfig, sd, x) -> np.ndarray:
    return ref.forward(x, sd, patch_lens=config.patch_lens, n_heads=config.n_heads,
                       e_layers=config.e_layers, no_inter_attn=config.no_inter_attn,
                       single_channel=config.single_channel)


def assert_logits_match(logits, expected):
    logits = np.asarray(logits, np.float64)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(logits - expected)) <= 1e-5 * scale, (logits, expected)


def layer_module(model: Cardioformer, layer: int):
    """Encoder layer ``layer`` as a module of its own (the stacked weights sliced)."""
    graphdef, state = nnx.split(model.layers)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[layer], state))


def flat_params(model: Cardioformer) -> dict:
    return {path: np.asarray(v[...])
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ---------------------------------------------------------------------------------------------
# (a) Each tensor lands where it must.


def test_parameter_layout_matches_documented_tree():
    config = small_config()
    sd = make_state_dict(config)
    model = imported(config, sd)
    # group 0 = patch length 8 = granularities (0, 2); group 1 = p 2; group 2 = p 4.
    assert model.layout.group_members == ((0, 2), (1,), (3,))
    w = sd["enc_embedding.value_embeddings.2.tokenConv.weight"]
    np.testing.assert_array_equal(model.patch_kernels[0][...][1], w[:, 0].transpose(2, 1, 0))
    np.testing.assert_array_equal(model.granularity_embeddings[...][3],
                                  sd["enc_embedding.learnable_embeddings.3"][0])
    layers = model.layers
    prefix = "encoder.attn_layers.1"
    np.testing.assert_array_equal(
        layers.intra_attentions[0].value_kernel[...][1, 1],
        sd[f"{prefix}.attention.intra_attentions.2.value_projection.weight"].T)
    np.testing.assert_array_equal(
        layers.intra_attentions[2].out_bias[...][1, 0],
        sd[f"{prefix}.attention.intra_attentions.3.out_projection.bias"])
    np.testing.assert_array_equal(
        layers.inter_attention.key_kernel[...][1, 0],
        sd[f"{prefix}.attention.inter_attention.key_projection.weight"].T)
    np.testing.assert_array_equal(layers.resblock3.conv2.kernel[...][1],
                                  sd[f"{prefix}.resblock3.conv2.weight"][:, :, 0].T)
    np.testing.assert_array_equal(layers.resblock2.norm.scale[...][1],
                                  sd[f"{prefix}.resblock2.norm.weight"])
    np.testing.assert_array_equal(layers.norm2.bias[...][0],
                                  sd["encoder.attn_layers.0.norm2.bias"])
    np.testing.assert_array_equal(model.norm.scale[...], sd["encoder.norm.weight"])
    np.testing.assert_array_equal(model.projection.kernel[...], sd["projection.weight"].T)


def test_known_patch_weight_gives_known_token():
    """A one-hot convolution kernel picks one (time, lead) sample of each patch."""
    config = small_config()
    sd = make_state_dict(config)
    g, p, d0, c0, k0 = 2, 8, 5, 1, 3  # granularity 2: second member of the p=8 group
    w = np.zeros_like(sd[f"enc_embedding.value_embeddings.{g}.tokenConv.weight"])
    w[d0, 0, c0, k0] = 1.0
    sd[f"enc_embedding.value_embeddings.{g}.tokenConv.weight"] = w
    sd[f"enc_embedding.learnable_embeddings.{g}"] = np.zeros((1, config.d_model), np.float32)
    model = imported(config, sd)
    x = make_input(config)
    tokens = np.asarray(model.embed(jnp.asarray(x)))
    mine = tokens[:, model.layout.granularity_slice(g)]
    n = config.seq_len // p + 1
    padded = np.concatenate([x, np.repeat(x[:, -1:], p, axis=1)], axis=1)
    pe = torch_style_pe(n, config.d_model)[0]
    expected = np.broadcast_to(pe, (x.shape[0], n, config.d_model)).copy()
    expected[:, :, d0] += padded[:, np.arange(n) * p + k0, c0]
    np.testing.assert_allclose(mine, expected, rtol=1e-6, atol=1e-6)
    # The last patch is all padding: copies of the last timestamp.
    np.testing.assert_allclose(mine[:, -1, d0] - pe[-1, d0], x[:, -1, c0], rtol=1e-6)


def test_embedding_of_every_granularity_matches_reference():
    config = small_config()
    sd = make_state_dict(config)
    model = imported(config, sd)
    x = make_input(config)
    tokens = np.asarray(model.embed(jnp.asarray(x)))
    for g in range(config.num_granularities):
        np.testing.assert_allclose(tokens[:, model.layout.granularity_slice(g)],
                                   ref.embed(x, sd, config.patch_lens, g),
                                   rtol=1e-5, atol=1e-5)


def test_known_attention_weights_give_known_attention_output():
    config = small_config()
    sd = make_state_dict(config)
    model = imported(config, sd)
    layer = layer_module(model, 1)
    rng = np.random.default_rng(3)
    # Granularity 2 is member 1 of group 0 (patch length 8, 6 tokens).
    tokens = rng.standard_normal((2, 2, 6, config.d_model)).astype(np.float32)
    # The layer's attentions take group-leading, batch-inner (G, N, B, D) tokens.
    out = np.asarray(layer.intra_attentions[0](jnp.asarray(tokens.transpose(1, 2, 0, 3)), None))
    out = out.transpose(2, 0, 1, 3)
    for j, g in enumerate((0, 2)):
        expected = ref.multi_head_attention(
            tokens[:, j].astype(np.float64), sd,
            f"encoder.attn_layers.1.attention.intra_attentions.{g}", config.n_heads)
        np.testing.assert_allclose(out[:, j], expected, rtol=1e-5, atol=1e-5)
    routers = rng.standard_normal((2, 4, config.d_model)).astype(np.float32)
    out = np.asarray(layer.inter_attention(jnp.asarray(routers.transpose(1, 0, 2)[None]),
                                           None))[0].transpose(1, 0, 2)
    expected = ref.multi_head_attention(routers.astype(np.float64), sd,
                                        "encoder.attn_layers.1.attention.inter_attention",
                                        config.n_heads)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_known_resblock_weights_give_known_output():
    config = small_config()
    sd = make_state_dict(config)
    model = imported(config, sd)
    z = np.random.default_rng(4).standard_normal((2, 5, config.d_model)).astype(np.float32)
    out = np.asarray(layer_module(model, 0).resblock2(jnp.asarray(z), None))
    block = "encoder.attn_layers.0.resblock2"
    h = ref.gelu(ref.linear(z, sd[f"{block}.conv1.weight"][:, :, 0], sd[f"{block}.conv1.bias"]))
    h = ref.linear(h, sd[f"{block}.conv2.weight"][:, :, 0], sd[f"{block}.conv2.bias"])
    expected = ref.layer_norm(z + h, sd[f"{block}.norm.weight"], sd[f"{block}.norm.bias"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_known_projection_gives_known_logit():
    """A one-hot projection row reads one (token, feature) of the config-order flatten."""
    config = small_config()
    sd = make_state_dict(config)
    # Token 4 of granularity 2 (p=8; granularities 0 and 1 have 6 and 21 tokens), feature 7.
    token, feature = 6 + 21 + 4, 7
    weight = np.zeros_like(sd["projection.weight"])
    weight[1, token * config.d_model + feature] = 1.0
    sd["projection.weight"] = weight
    model = imported(config, sd)
    flat = np.random.default_rng(5).standard_normal(
        (2, model.layout.num_tokens, config.d_model)).astype(np.float32)
    logits = np.asarray(model.head(jnp.asarray(flat)))
    source = model.layout.granularity_slice(2).start + 4  # where the port keeps that token
    normed = ref.layer_norm(flat[:, source], sd["encoder.norm.weight"], sd["encoder.norm.bias"])
    expected = ref.gelu(normed[:, feature]) + sd["projection.bias"][1]
    np.testing.assert_allclose(logits[:, 1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[:, 0], sd["projection.bias"][0], rtol=1e-6)


# The reference's own counts for PTB-XL and its two ablations that drop the inter-attention.
@pytest.mark.parametrize("overrides,tensors,params", [
    ({}, 985, 8_702_597),
    ({"no_inter_attn": True}, 937, 8_306_309),
    ({"patch_lens": (8,)}, 187, 1_623_685),
], ids=["full", "no_inter_attn", "single_granularity"])
def test_ptbxl_ablations_have_the_reference_tensors_and_parameter_counts(
        overrides, tensors, params):
    config = CardioformerConfig.from_config({
        **config_lib.model_section(**{"patch_lens": config_lib.PATCH_LENS_16, **overrides}),
        "seq_len": 250, "num_channels": 12, "num_classes": 5})
    sd = make_state_dict(config)
    assert len(sd) == tensors
    assert sum(v.size for k, v in sd.items() if k != PE_NAME) == params
    assert {k: v.shape for k, v in sd.items()} == expected_reference_shapes(config)
    abstract = nnx.eval_shape(lambda: Cardioformer(config, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == params
    assert (abstract.layers.inter_attention is None) == (not overrides == {})


@pytest.mark.slow
def test_ptbxl_configuration_has_the_documented_tensors():
    config = CardioformerConfig.from_config({
        **config_lib.model_section(patch_lens=config_lib.PATCH_LENS_16),
        "seq_len": 250, "num_channels": 12, "num_classes": 5})
    sd = make_state_dict(config)
    assert len(sd) == 985
    assert sum(v.size for k, v in sd.items() if k != PE_NAME) == 8_702_597
    assert sd["projection.weight"].shape == (5, 48768)
    assert {k: v.shape for k, v in sd.items()} == expected_reference_shapes(config)
    model = imported(config, sd)
    assert count_params(model) == 8_702_597
    exported = export_reference_state_dict(model)
    assert list(exported) == list(sd)
    for name, value in sd.items():
        if name != PE_NAME:
            np.testing.assert_array_equal(exported[name], value, err_msg=name)
    x = make_input(config, batch=1)
    assert_logits_match(model(jnp.asarray(x)), reference_logits(config, sd, x))


# ---------------------------------------------------------------------------------------------
# (b) The imported model against the NumPy reference, whole forward pass.

FORWARD_CASES = {
    "ptbxl_like": dict(seq_len=250, num_channels=12, num_classes=5,
                       patch_lens=config_lib.PATCH_LENS_16),
    "ptb_like": dict(seq_len=300, num_channels=15, num_classes=2,
                     patch_lens=config_lib.PATCH_LENS_12),
    "no_inter_attn": dict(seq_len=64, patch_lens=(2, 4, 8, 8), no_inter_attn=True),
    "single_granularity": dict(seq_len=64, patch_lens=(4,)),
    "single_channel": dict(seq_len=64, patch_lens=(4, 8, 8), single_channel=True),
    "unordered": dict(patch_lens=(8, 2, 8, 4)),
    "odd_lengths": dict(seq_len=37, num_channels=2, patch_lens=(5, 3, 5, 37), e_layers=3,
                        n_heads=2),
}


_LARGE_CASES = ("ptbxl_like", "ptb_like")  # many granularities: slow to build eagerly


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=[pytest.mark.slow] if case in _LARGE_CASES else [])
    for case in FORWARD_CASES])
def test_imported_model_matches_numpy_reference(case):
    config = small_config(**FORWARD_CASES[case])
    sd = make_state_dict(config, seed=7)
    model = imported(config, sd)
    x = make_input(config, batch=3)
    expected = reference_logits(config, sd, x)
    assert_logits_match(model(jnp.asarray(x)), expected)
    if case == "single_channel":  # samples must not mix when leads become batch entries
        assert_logits_match(model(jnp.asarray(x[1:2])), expected[1:2])


def test_inter_attention_matters():
    """Guards the comparison: the reference does depend on the inter-attention weights."""
    config = small_config()
    sd = make_state_dict(config, seed=7)
    x = make_input(config)
    changed = dict(sd)
    name = "encoder.attn_layers.0.attention.inter_attention.value_projection.bias"
    changed[name] = sd[name] + 1.0
    assert np.max(np.abs(reference_logits(config, changed, x)
                         - reference_logits(config, sd, x))) > 1e-3
    assert_logits_match(imported(config, changed)(jnp.asarray(x)),
                        reference_logits(config, changed, x))


# ---------------------------------------------------------------------------------------------
# (c) Round trips.


def test_export_then_import_gives_identical_params():
    config = small_config(single_channel=True)
    source = Cardioformer(config, rngs=nnx.Rngs(0))
    exported = export_reference_state_dict(source)
    assert all(v.dtype == np.float32 for v in exported.values())
    assert {k: v.shape for k, v in exported.items()} == expected_reference_shapes(config)
    target = Cardioformer(config, rngs=nnx.Rngs(1))
    import_reference_weights(target, exported)
    a, b = flat_params(source), flat_params(target)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


def test_import_then_export_gives_identical_state_dict():
    config = small_config()
    sd = make_state_dict(config)
    exported = export_reference_state_dict(imported(config, sd))
    assert list(exported) == list(sd)
    for name, value in sd.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_npz_and_wrapped_checkpoints(tmp_path):
    config = small_config()
    sd = make_state_dict(config)
    path = tmp_path / "ref.npz"
    np.savez(path, **sd)
    loaded = load_torch_state_dict(path)
    assert list(loaded) == list(sd)
    wrapped = {"epoch": 3, "model": {f"module.{k}": v for k, v in sd.items()}}
    assert list(load_torch_state_dict(wrapped)) == list(sd)
    model = Cardioformer(config, rngs=nnx.Rngs(0))
    import_reference_weights(model, str(path))
    np.testing.assert_array_equal(model.projection.bias[...], sd["projection.bias"])


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "ref.pth"
    path.write_bytes(b"not really a checkpoint")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails even if installed
    with pytest.raises(ImportError, match=r"\[torch\]"):
        load_torch_state_dict(path)


def test_cli_convert_saves_restorable_params(tmp_path, capsys):
    import orbax.checkpoint as ocp

    config = small_config()
    sd = make_state_dict(config)
    np.savez(tmp_path / "ref.npz", **sd)
    model = convert(config, tmp_path / "ref.npz", tmp_path / "params")
    assert f"{count_params(model):,} parameters" in capsys.readouterr().out
    abstract = nnx.eval_shape(lambda: Cardioformer(config, rngs=nnx.Rngs(0)))
    restored = ocp.StandardCheckpointer().restore(tmp_path / "params",
                                                  nnx.state(abstract, nnx.Param))
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(config, sd, tmp_path / "params")
    fresh = Cardioformer(config, rngs=nnx.Rngs(9))
    nnx.update(fresh, restored)
    a, b = flat_params(model), flat_params(fresh)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


# ---------------------------------------------------------------------------------------------
# (d) Refusals.


def import_error(config: CardioformerConfig, sd) -> str:
    model = Cardioformer(config, rngs=nnx.Rngs(0))
    before = flat_params(model)
    with pytest.raises(ValueError) as info:
        import_reference_weights(model, sd)
    after = flat_params(model)
    assert all(np.array_equal(before[p], after[p]) for p in before), "model was modified"
    return str(info.value)


def test_missing_tensor_is_refused():
    config = small_config()
    sd = make_state_dict(config)
    name = "encoder.attn_layers.1.attention.intra_attentions.3.query_projection.weight"
    del sd[name]
    message = import_error(config, sd)
    assert "1 missing tensor" in message and name in message
    assert "unexpected" not in message and "mis-shaped" not in message


def test_unexpected_tensor_is_refused():
    config = small_config()
    sd = make_state_dict(config)
    sd["encoder.attn_layers.0.attention.router.weight"] = np.zeros((16, 16), np.float32)
    message = import_error(config, sd)
    assert "1 unexpected tensor" in message
    assert "encoder.attn_layers.0.attention.router.weight" in message


def test_misshaped_projection_names_num_classes():
    sd = make_state_dict(small_config(num_classes=4))
    message = import_error(small_config(), sd)
    features = sd["projection.weight"].shape[1]
    assert f"projection.weight: expected (3, {features}), got (4, {features})" in message
    assert "likely config field: num_classes" in message
    assert "num_classes: checkpoint 4, config 3" in message


def test_wrong_patch_lens_are_named():
    sd = make_state_dict(small_config(patch_lens=(8, 2, 4, 8)))
    message = import_error(small_config(), sd)
    assert ("enc_embedding.value_embeddings.2.tokenConv.weight: expected (16, 1, 3, 8), "
            "got (16, 1, 3, 4); likely config field: patch_lens[2]") in message
    assert "patch_lens: checkpoint (8, 2, 4, 8), config (8, 2, 8, 4)" in message


def test_wrong_layer_count_is_named():
    sd = make_state_dict(small_config(e_layers=3))
    message = import_error(small_config(), sd)
    assert "unexpected tensor" in message and "encoder.attn_layers.2." in message
    assert "... and" in message  # long lists are cut short
    assert "e_layers: checkpoint 3, config 2" in message


def test_single_channel_checkpoint_is_named():
    sd = make_state_dict(small_config(single_channel=True))
    message = import_error(small_config(), sd)
    assert "likely config field: num_channels (or single_channel)" in message
    assert "single_channel ablation" in message


def test_positional_table_is_checked_and_optional():
    config = small_config()
    sd = make_state_dict(config)
    bad = dict(sd)
    bad[PE_NAME] = np.zeros_like(sd[PE_NAME])
    assert "sinusoidal" in import_error(config, bad)
    bad[PE_NAME] = sd[PE_NAME][:, :10]  # p=2 needs 21 positions
    assert "has 10 positions" in import_error(config, bad)
    without = {k: v for k, v in sd.items() if k != PE_NAME}
    x = make_input(config)
    assert_logits_match(imported(config, without)(jnp.asarray(x)),
                        reference_logits(config, sd, x))
