"""PTB, healthy control vs myocardial infarction, heartbeats (300, 15) (docs/README.md)."""

import ml_collections

from cardioformer_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.dataset.name = "ptb"
    config.input.seq_len, config.input.num_channels = 300, 15
    config.dataset.num_classes = 2
    config.model = config_lib.model_section(
        patch_lens=config_lib.PATCH_LENS_12, augmentations="none,drop0.5")
    return config
