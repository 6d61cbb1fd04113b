"""MIMIC-IV-ECG, 4 classes (SB, ST, AF, NORM), split by subject (docs/README.md)."""

import ml_collections

from cardioformer_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.dataset.name = "mimic_iv_ecg"
    config.input.seq_len, config.input.num_channels = 250, 12
    config.dataset.num_classes = 4
    config.model = config_lib.model_section(
        patch_lens=config_lib.PATCH_LENS_16, augmentations="jitter0.2,scale0.2,drop0.5")
    return config
