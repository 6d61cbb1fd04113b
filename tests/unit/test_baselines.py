"""The ResNet baseline and the ablation configs: the models they build. A few training steps
of each: tests/integration/test_baselines_training.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax import config_lib, models
from cardioformer_jax.models import count_params
from cardioformer_jax.models.cardioformer import Cardioformer
from cardioformer_jax.models.resnet1d import ResNet1D, ResNet1DConfig
from configs import ablations, resnet1d
from tests.helpers.tiny_models import TINY_RESNET


@pytest.mark.parametrize("dataset", ablations.DATASETS)
@pytest.mark.parametrize("name", ablations.ABLATIONS)
def test_ablation_configs_change_only_their_part(name, dataset):
    config = ablations.get_config(f"{name},{dataset}")
    config_lib.validate_config(config)
    base = __import__(f"configs.{dataset}", fromlist=["get_config"]).get_config()
    changed = {k for k in base.model.keys() if base.model[k] != config.model[k]}
    expected = {"no_inter_attn": {"no_inter_attn"}, "single_granularity": {"patch_lens"},
                "single_channel": {"single_channel"}, "no_augmentation": {"augmentations"},
                "tabular_late": {"tabular"}, "tabular_early": {"tabular"}}
    assert changed == expected[name]
    assert config.to_dict() == {**base.to_dict(), "model": config.model.to_dict()}


def test_ablation_defaults_and_errors():
    assert ablations.get_config().model.no_inter_attn  # no argument: no_inter_attn on PTB-XL
    assert ablations.get_config("single_granularity").model.patch_lens == (8,)
    assert ablations.get_config("no_augmentation").dataset.name == "ptbxl"
    with pytest.raises(ValueError, match="unknown ablation"):
        ablations.get_config("no_attention")
    with pytest.raises(ValueError, match="unknown dataset"):
        ablations.get_config("single_channel,cifar")


def _abstract_model(config) -> nnx.Module:
    """The config's model with shapes only (no weights computed)."""
    return nnx.eval_shape(lambda: models.build_model(models.network_config(config),
                                                      rngs=nnx.Rngs(params=0, dropout=1)))


def test_model_factory():
    config = resnet1d.get_config("ptb")
    config_lib.validate_config(config)
    spec = models.network_config(config)
    assert isinstance(spec, ResNet1DConfig)
    assert (spec.seq_len, spec.num_channels, spec.num_classes) == (300, 15, 2)
    assert isinstance(_abstract_model(config), ResNet1D)
    assert isinstance(_abstract_model(ablations.get_config()), Cardioformer)
    config.model_name = "transformer"
    with pytest.raises(ValueError, match="unknown model_name"):
        config_lib.validate_config(config)
    config.model_name = "resnet1d"
    config.resnet.norm = "batch"
    with pytest.raises(ValueError, match="norm='batch'"):
        config_lib.validate_config(config)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_resnet_contract(norm):
    spec = ResNet1DConfig(seq_len=250, num_channels=12, num_classes=5, norm=norm,
                          **TINY_RESNET)
    apply = nnx.jit(lambda m, x: m(x))  # one compiled program instead of op-by-op
    x = np.random.default_rng(0).normal(size=(3, 250, 12)).astype(np.float32)
    model = nnx.jit(lambda: ResNet1D(spec, rngs=nnx.Rngs(params=0, dropout=1)))()
    train_a, train_b = apply(model, x), apply(model, x)
    model.eval()
    eval_a = apply(model, x)
    eval_b = apply(model, x)
    single = apply(model, x[1:2])
    assert train_a.shape == (3, 5) and not jnp.allclose(train_a, train_b)  # dropout
    np.testing.assert_array_equal(eval_a, eval_b)
    # Each sample on its own gives the same logits: no statistic crosses the batch.
    np.testing.assert_allclose(single, eval_a[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expects \(batch, 250, 12\)"):
        model(x[:, :200])
    # Parameters and the dropout stream, nothing else: what the training state holds.
    _, params, rest = nnx.split(model, nnx.Param, ...)
    assert set(jax.tree.leaves(jax.tree.map(lambda v: type(v).__name__, rest,
                                            is_leaf=lambda v: isinstance(v, nnx.Variable)))
               ) == {"RngKey", "RngCount"}
    assert count_params(model) > 0


def test_default_resnet_size():
    assert count_params(_abstract_model(resnet1d.get_config())) == 2_179_973
