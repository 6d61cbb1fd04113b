"""A few training steps of the ResNet baseline and of each ablation, through the training
code on the tiny synthetic PTB-XL build (their models: tests/unit/test_baselines.py)."""

from __future__ import annotations

import math

import pytest

from cardioformer_jax.evaluation import inference
from cardioformer_jax.models.cardioformer import Cardioformer
from cardioformer_jax.models.resnet1d import ResNet1D
from cardioformer_jax.training import train
from configs import ablations, resnet1d
from tests.helpers import run_fixtures
from tests.helpers.tiny_models import TINY_RESNET, tiny_model


def _train(config, data_dir, tmp_path):
    result = train.train_and_evaluate(run_fixtures.tiny_training(config, data_dir),
                                      tmp_path)
    for split in ("validation", "test"):
        assert result[split]["num_examples"] == 100
        assert all(math.isfinite(result[split][k]) for k in ("loss", "accuracy", "auroc"))
    assert result["best_epoch"] == 1 and result["nonfinite_steps"] == 0
    return inference.load(tmp_path).module()


def test_resnet_baseline_trains(tiny_ptbxl, tmp_path):
    config = resnet1d.get_config()
    config.resnet.update(TINY_RESNET)
    model = _train(config, tiny_ptbxl[1], tmp_path)
    assert isinstance(model, ResNet1D) and model.config.widths == (8, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ablations.ABLATIONS)
def test_ablation_trains(name, tiny_ptbxl, tmp_path):
    ablated = ablations.get_config(name)
    patch_lens = ablated.model.patch_lens if name == "single_granularity" else (16, 32)
    config = tiny_model(ablated, patch_lens=patch_lens)
    model = _train(config, tiny_ptbxl[1], tmp_path)
    assert isinstance(model, Cardioformer)
    got = model.config
    if name == "no_inter_attn":
        assert got.no_inter_attn
    elif name == "single_granularity":
        assert got.patch_lens == (8,) and got.num_granularities == 1
    elif name == "single_channel":
        # The head sees every lead's tokens: C * D * sum N_i = 12 * 8 * (16 + 8).
        assert got.single_channel and model.projection.kernel.shape == (2304, 5)
    elif name.startswith("tabular_"):
        # Early: one age/sex token more per granularity, D * (17 + 9) head features;
        # late: the D-wide age/sex embedding joins the D * (16 + 8) token features.
        assert got.tabular == name.removeprefix("tabular_")
        assert model.tabular_embedding.kernel.shape == (4, 8)
        features = 8 * (17 + 9) if got.tabular == "early" else 8 * (16 + 8) + 8
        assert model.projection.kernel.shape == (features, 5)
    else:
        assert got.augmentations == (("none", 0.0),)
