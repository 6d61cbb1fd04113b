"""Search space of Cardioformer (``model_name="cardioformer"``) for `cardioformer_jax.tune`.

    python -m cardioformer_jax.tune --config=configs/ptbxl.py --workdir=DIR --trials=50

``search_space(trial, config)`` sets, on a copy of the base config, the optimiser (learning
rate, log scale; batch size), regularisation (dropout; the strengths of the three token
augmentations, written as the ``model.augmentations`` string) and the architecture (width
d_model with d_ff = 2 d_model as in the paper, heads, layers, the list of patch lengths).
Everything else (data, epochs, early stopping, seed) stays as in the base config.
"""

from __future__ import annotations

import ml_collections
import optuna

from cardioformer_jax import config_lib

LEARNING_RATE = (1e-5, 3e-3)
BATCH_SIZES = (32, 64, 128, 256)
DROPOUT = (0.0, 0.3)
# Upper bounds of the augmentation strengths (the paper: jitter0.2, scale0.2, drop0.5).
AUGMENTATIONS = {"jitter": 0.5, "scale": 0.5, "drop": 0.7}
D_MODELS = (64, 128, 256)
N_HEADS = (2, 4, 8)  # each divides every D_MODELS entry: no choice is ever invalid
E_LAYERS = (2, 6)
# Patch-length lists for 250-sample inputs, scaled like configs/ptbxl_benchmark.py for longer
# ones; the names are the categorical choices Optuna stores.
PATCH_LISTS = {
    "paper16": config_lib.PATCH_LENS_16,
    "paper12": config_lib.PATCH_LENS_12,
    "coarse8": (4, 8, 16, 16, 32, 32, 32, 32),
    "octaves4": (4, 8, 16, 32),
}


def patch_lists(seq_len: int) -> dict[str, tuple[int, ...]]:
    """`PATCH_LISTS` scaled by ``seq_len // 250``, without those with a patch over `seq_len`."""
    scale = max(1, seq_len // 250)
    scaled = {name: tuple(p * scale for p in lens) for name, lens in PATCH_LISTS.items()}
    return {name: lens for name, lens in scaled.items() if max(lens) <= seq_len}


def search_space(trial: optuna.Trial, config: ml_collections.ConfigDict) -> None:
    """Sets the tuned fields of `config` from `trial`'s suggestions."""
    config.train.learning_rate = trial.suggest_float("learning_rate", *LEARNING_RATE, log=True)
    config.train.batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)
    model = config.model
    model.dropout = trial.suggest_float("dropout", *DROPOUT, step=0.05)
    model.augmentations = ",".join(
        f"{name}{trial.suggest_float(name, 0.0, high, step=0.05):.2f}"
        for name, high in AUGMENTATIONS.items())
    model.d_model = trial.suggest_categorical("d_model", D_MODELS)
    model.d_ff = 2 * model.d_model
    model.n_heads = trial.suggest_categorical("n_heads", N_HEADS)
    model.e_layers = trial.suggest_int("e_layers", *E_LAYERS)
    lists = patch_lists(config.input.seq_len)
    model.patch_lens = lists[trial.suggest_categorical("patch_lens", tuple(lists))]
