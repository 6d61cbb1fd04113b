"""Shared pieces of the `configs/*.py` files (SPEC sections 2 and 5)."""

from __future__ import annotations

import dataclasses

import ml_collections

from cardioformer_jax.model import ModelConfig

PATCH_LENS_16 = (2, 4, 8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32)
PATCH_LENS_12 = (2, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32)


def model_config(**overrides) -> ml_collections.ConfigDict:
    """The `model` section: every `ModelConfig` field, paper defaults, then `overrides`.

    Augmentations stay a string (the reference's syntax) so that command-line overrides
    such as `--config.model.augmentations=none` work.
    """
    values = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    values["augmentations"] = "jitter0.2,scale0.2,drop0.5"
    values.update(overrides)
    ModelConfig.from_config(values)  # fail early on a bad value
    return ml_collections.ConfigDict(values)


def base_config() -> ml_collections.ConfigDict:
    """Dataset-independent defaults; the dataset configs fill in `dataset` and `model`."""
    config = ml_collections.ConfigDict()
    config.seed = 41
    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = ""
    config.dataset.builder_config = ""  # "" = the builder's default config
    config.dataset.data_dir = "~/tensorflow_datasets"
    config.model = model_config()
    return config
