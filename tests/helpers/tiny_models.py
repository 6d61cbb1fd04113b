"""The small model sizes the tests share, each defined once.

- ``TINY`` / ``tiny_model``: the tiny Cardioformer of the training, inference and command
  tests (d_model 8, one layer, two granularities). The tests that train it share its
  compiled programs, in the process and through the session's compilation cache.
- ``SMALL``: the layer sizes of the model-contract and benchmark tests (d_model 16, two
  layers), which choose their own input and patch lengths.
- ``REFERENCE_SMALL`` / ``reference_small``: the small model of the PyTorch-reference tests
  (NumPy reference and PyTorch re-creation alike): short odd-sized input, four heads, four
  granularities with a repeated patch length.
- ``TINY_RESNET``: the tiny ResNet1D baseline.
"""

from __future__ import annotations

import ml_collections

from cardioformer_jax import config_lib
from cardioformer_jax.models.cardioformer import CardioformerConfig

TINY = dict(d_model=8, d_ff=16, n_heads=2, e_layers=1, patch_lens=(16, 32))

SMALL = dict(d_model=16, d_ff=32, n_heads=2, e_layers=2)

REFERENCE_SMALL = dict(seq_len=40, num_channels=3, num_classes=3, d_model=16, d_ff=32,
                       n_heads=4, e_layers=2, patch_lens=(8, 2, 8, 4), augmentations="none")

TINY_RESNET = dict(stem_width=8, stem_kernel=7, widths=(8, 16), blocks_per_stage=1,
                   kernel_size=5, num_groups=4)


def tiny_model(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """`config` with the tiny Cardioformer (``TINY``, then `overrides`), keeping the config's
    input, classes, augmentations and ablation flags."""
    model = config.model
    values = dict(augmentations=model.augmentations,
                  no_inter_attn=model.no_inter_attn, single_channel=model.single_channel,
                  tabular=model.get("tabular", "none"), **TINY)
    values.update(overrides)
    config.model = config_lib.model_section(**values)
    return config


def set_model(config: ml_collections.ConfigDict, **values) -> ml_collections.ConfigDict:
    """`config` with the `model` section of `values` (`config_lib.model_section`) and the
    input sizes among them (``seq_len``, ``num_channels``, ``num_classes``) at their places
    (`config_lib.INPUT_SIZES`)."""
    for name, field in config_lib.INPUT_SIZES.items():
        if name in values:
            section, key = field.split(".")
            config[section][key] = values.pop(name)
    config.model = config_lib.model_section(**values)
    return config


def reference_small(**overrides) -> CardioformerConfig:
    """``REFERENCE_SMALL`` with `overrides`, as a CardioformerConfig."""
    return CardioformerConfig(**{**REFERENCE_SMALL, **overrides})
