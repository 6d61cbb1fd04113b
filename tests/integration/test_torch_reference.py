"""The PyTorch re-creation of the reference against the JAX model (needs the [torch] extra).

Its ``state_dict`` goes through ``torch_import`` into the JAX model, whose eval-mode logits
must match PyTorch's: an end-to-end check of the import against real ``Conv2d``,
``Conv1d``, ``Linear`` and ``LayerNorm`` layouts rather than hand-built arrays.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cardioformer_jax import config_lib  # noqa: E402
from cardioformer_jax.interop.torch_import import (  # noqa: E402
    expected_reference_shapes,
    export_reference_state_dict,
    load_reference_model,
)
from cardioformer_jax.interop.torch_reference import (  # noqa: E402
    build_model,
    compare_reference,
    time_inference,
    time_training,
)
from cardioformer_jax.models.cardioformer import CardioformerConfig  # noqa: E402
from configs import demo  # noqa: E402
from tests.helpers.tiny_models import (  # noqa: E402
    REFERENCE_SMALL,
    reference_small,
    set_model,
)

CASES = {
    "grouped": {},
    "ordered": dict(patch_lens=(2, 4, 8, 8, 8)),
    "no_inter_attn": dict(no_inter_attn=True),
    "single_granularity": dict(patch_lens=(8,)),
    "odd_lengths": dict(seq_len=37, num_channels=2, patch_lens=(5, 3, 5, 37), e_layers=3,
                        n_heads=2),
}


def perturbed_reference(config: CardioformerConfig, seed: int = 3):
    """A reference model whose LayerNorms are not at their (1, 0) init, in eval mode."""
    model = build_model(config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


# Two cases in the fast lane; the others repeat, against PyTorch, configurations that
# tests/unit/test_torch_import.py checks against the NumPy reference: slow lane.
FAST_CASES = ("grouped", "no_inter_attn")


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=() if case in FAST_CASES else pytest.mark.slow)
    for case in sorted(CASES)])
def test_imported_weights_reproduce_torch_logits(case):
    config = reference_small(**CASES[case])
    reference = perturbed_reference(config)
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = load_reference_model(config, state_dict)
    model.eval()
    x = np.random.default_rng(0).standard_normal(
        (4, config.seq_len, config.num_channels)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = np.asarray(model(jnp.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The check can tell models apart: other weights give other logits.
    other = build_model(config, seed=11).eval()
    with torch.no_grad():
        assert not np.allclose(other(torch.from_numpy(x)).numpy(), got, atol=1e-3)


def test_ptbxl_structure_has_the_documented_names_and_size():
    config = CardioformerConfig.from_config({
        **config_lib.model_section(patch_lens=config_lib.PATCH_LENS_16),
        "seq_len": 250, "num_channels": 12, "num_classes": 5})
    reference = build_model(config)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert len(shapes) == 985
    assert shapes == expected_reference_shapes(config)
    assert sum(p.numel() for p in reference.parameters()) == 8_702_597


def test_train_mode_is_random_and_eval_mode_is_not():
    config = reference_small(augmentations="jitter0.2,scale0.2,drop0.5")
    reference = build_model(config)
    x = torch.randn(2, config.seq_len, config.num_channels)
    with torch.no_grad():
        assert not torch.equal(reference(x), reference(x))
        reference.eval()
        assert torch.equal(reference(x), reference(x))


def test_time_training_reports_the_benchmark_fields():
    result = time_training(reference_small(), batch=4, steps=2, threads=1)
    assert result["threads"] == 1 and result["batch_size"] == 4
    slowest, fastest = result["train_samples_per_second_range"]
    assert 0 < slowest <= result["train_samples_per_second_median"] <= fastest
    assert result["train_samples_per_second"] == pytest.approx(
        4 / result["train_step_seconds"], rel=1e-2)
    with pytest.raises(ValueError, match="steps"):
        time_training(reference_small(), batch=4, steps=0)


def test_time_inference_reports_the_benchmark_fields():
    result = time_inference(reference_small(), eval_batch=6, repeats=2, threads=1)
    assert result["eval_batch_size"] == 6
    assert result["eval_samples_per_second"] > 0 and result["inference_latency_ms"] > 0


@pytest.mark.slow
def test_benchmark_compare_reference_prints_both_and_their_ratios():
    config = demo.get_config()
    set_model(config, **REFERENCE_SMALL)
    results = compare_reference(config, batch=4, eval_batch=4, num_steps=2, rounds=2,
                                threads=1)
    assert len(results["rounds"]) == 2
    for round_ in results["rounds"]:
        ours, reference, ratios = round_["this_port"], round_["reference"], round_["ratios"]
        assert ours["batch_size"] == reference["batch_size"] == 4
        assert ours["parameters"] == reference["parameters"]  # the same model
        assert ratios["train_samples_per_second"] == pytest.approx(
            ours["train_samples_per_second"] / reference["train_samples_per_second"], abs=0.01)
        assert ratios["inference_latency_ms"] == pytest.approx(
            reference["inference_latency_ms"] / ours["inference_latency_ms"], abs=0.01)
    assert results["ratios_by_round"]["eval_samples_per_second"] == [
        r["ratios"]["eval_samples_per_second"] for r in results["rounds"]]
    with pytest.raises(ValueError, match="rounds"):
        compare_reference(config, batch=4, eval_batch=4, num_steps=2, rounds=0)


def test_single_channel_is_refused():
    with pytest.raises(ValueError, match="single_channel"):
        build_model(reference_small(single_channel=True))


@pytest.mark.parametrize("case", ["no_inter_attn", "single_granularity"])
def test_ablation_exports_load_strictly_into_the_reference(case):
    # The reference has no inter_attention module in these ablations: an export that wrote
    # its tensors (or lacked others) would fail a strict load_state_dict.
    config = reference_small(**CASES[case])
    reference = build_model(config, seed=5).eval()
    assert not any("inter_attention" in name for name in reference.state_dict())
    model = load_reference_model(config, {k: v.numpy()
                                          for k, v in reference.state_dict().items()})
    exported = export_reference_state_dict(model)
    other = build_model(config, seed=6).eval()
    other.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in exported.items()},
                          strict=True)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(
        (2, config.seq_len, config.num_channels)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(other(x).numpy(), reference(x).numpy(), rtol=1e-6,
                                   atol=1e-6)
