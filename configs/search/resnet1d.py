"""Search space of the 1-D ResNet baseline (``model_name="resnet1d"``) for `cardioformer_jax.tune`.

    python -m cardioformer_jax.tune --config=configs/resnet1d.py --workdir=DIR --trials=50

``search_space(trial, config)`` sets the optimiser (learning rate, log scale; batch size),
the dropout before the head (``resnet.dropout``: the ResNet reads neither ``model.dropout``
nor the token augmentations, which are Cardioformer's) and the architecture (stage widths,
blocks per stage, convolution kernel size). Everything else stays as in the base config.
"""

from __future__ import annotations

import ml_collections
import optuna

LEARNING_RATE = (1e-5, 3e-3)
BATCH_SIZES = (32, 64, 128, 256)
DROPOUT = (0.0, 0.5)
# Stage widths (one stage per width); the names are the categorical choices Optuna stores.
WIDTHS = {
    "32-64-128": (32, 64, 128),
    "64-128-256": (64, 128, 256),  # the default
    "64-128-256-512": (64, 128, 256, 512),
    "128-256-512": (128, 256, 512),
}
BLOCKS_PER_STAGE = (1, 3)
KERNEL_SIZES = (3, 5, 7, 9, 11, 15)


def search_space(trial: optuna.Trial, config: ml_collections.ConfigDict) -> None:
    """Sets the tuned fields of `config` from `trial`'s suggestions."""
    config.train.learning_rate = trial.suggest_float("learning_rate", *LEARNING_RATE, log=True)
    config.train.batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)
    resnet = config.resnet
    resnet.dropout = trial.suggest_float("dropout", *DROPOUT, step=0.05)
    resnet.widths = WIDTHS[trial.suggest_categorical("widths", tuple(WIDTHS))]
    resnet.blocks_per_stage = trial.suggest_int("blocks_per_stage", *BLOCKS_PER_STAGE)
    resnet.kernel_size = trial.suggest_categorical("kernel_size", KERNEL_SIZES)
