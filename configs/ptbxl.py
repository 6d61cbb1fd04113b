"""PTB-XL, 5 superclasses, subject-independent splits (docs/README.md)."""

import ml_collections

from cardioformer_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.dataset.name = "ptbxl"
    config.input.seq_len, config.input.num_channels = 250, 12
    config.dataset.num_classes = 5
    config.model = config_lib.model_section(
        patch_lens=config_lib.PATCH_LENS_16, augmentations="jitter0.2,scale0.2,drop0.5")
    return config
