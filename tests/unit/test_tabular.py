"""Age and sex with the ECG: the feature encoding and both fusions in both models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax import config_lib
from cardioformer_jax.data.tabular import TABULAR_FEATURES, tabular_features
from cardioformer_jax.models.cardioformer import Cardioformer, CardioformerConfig
from cardioformer_jax.models.resnet1d import ResNet1D, ResNet1DConfig
from configs import ablations


def test_features_handle_missing_values_and_ptbxl_ages_over_90():
    features = tabular_features([60.0, 300.0, -1.0, np.nan, 30.0], [1, 0, -1, 0, 7])
    assert features.shape == (5, len(TABULAR_FEATURES)) and features.dtype == np.float32
    np.testing.assert_allclose(features[0], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(features[1], [1.5, 1.0, 1.0, 0.0])  # 300 means >= 90
    np.testing.assert_allclose(features[2], [0.0, 0.0, 0.0, 0.0])  # both unknown
    np.testing.assert_allclose(features[3], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(features[4], [-1.5, 1.0, 0.0, 0.0])  # unknown sex code


TINY = dict(d_model=8, d_ff=16, n_heads=2, e_layers=1, patch_lens=(16, 32, 32))


def _models(mode):
    cardio = Cardioformer(CardioformerConfig(tabular=mode, **TINY), rngs=nnx.Rngs(0))
    resnet = ResNet1D(ResNet1DConfig(widths=(8, 16), stem_width=8, num_groups=4,
                                     tabular=mode), rngs=nnx.Rngs(0))
    for model in (cardio, resnet):
        model.eval()
    return cardio, resnet


@pytest.mark.parametrize("mode", ["late", "early"])
def test_both_models_use_age_and_sex(mode):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 250, 12)), jnp.float32)
    young = jnp.asarray(tabular_features(np.full(6, 25.0), np.zeros(6)))
    old = jnp.asarray(tabular_features(np.full(6, 85.0), np.ones(6)))
    for model in _models(mode):
        a, b = model({"signal": x, "tabular": young}), model({"signal": x, "tabular": old})
        assert a.shape == (6, 5) and np.isfinite(a).all()
        assert not np.allclose(a, b)  # the clinical context changes the output
        with pytest.raises(ValueError, match="age and sex"):
            model(x)
        with pytest.raises(ValueError, match="shape"):
            model({"signal": x, "tabular": young[:, :3]})


def test_a_model_without_fusion_refuses_features():
    x = jnp.zeros((2, 250, 12))
    for model in _models("none"):
        with pytest.raises(ValueError, match="tabular='none'"):
            model({"signal": x, "tabular": jnp.zeros((2, 4))})


def test_early_fusion_adds_one_token_per_granularity_and_chunks_agree():
    plain, early = CardioformerConfig(**TINY), CardioformerConfig(tabular="early", **TINY)
    assert early.head_features - plain.head_features == early.d_model * 3
    late = CardioformerConfig(tabular="late", **TINY)
    assert late.head_features - plain.head_features == late.d_model
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 250, 12)), jnp.float32)
    t = jnp.asarray(tabular_features(rng.uniform(20, 90, 16), rng.integers(-1, 2, 16)))
    whole = Cardioformer(CardioformerConfig(tabular="early", eval_chunk_size=16, **TINY),
                         rngs=nnx.Rngs(0))
    chunked = Cardioformer(CardioformerConfig(tabular="early", eval_chunk_size=4, **TINY),
                           rngs=nnx.Rngs(0))
    for m in (whole, chunked):
        m.eval()
    np.testing.assert_allclose(chunked({"signal": x, "tabular": t}),
                               whole({"signal": x, "tabular": t}), atol=2e-5)
    single = Cardioformer(CardioformerConfig(tabular="early", single_channel=True, **TINY),
                          rngs=nnx.Rngs(0))
    single.eval()
    assert single({"signal": x[:2], "tabular": t[:2]}).shape == (2, 5)


def test_tabular_configs_validate():
    for name in ("tabular_late", "tabular_early"):
        config = ablations.get_config(name)
        config_lib.validate_config(config)
        assert config.model.tabular == name.removeprefix("tabular_")
    config = ablations.get_config("tabular_late")
    config.model.tabular = "middle"
    with pytest.raises(ValueError, match="tabular"):
        config_lib.validate_config(config)
