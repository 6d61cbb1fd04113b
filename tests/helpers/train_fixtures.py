"""A tiny training config for the training-loop tests (also usable as a --config file).

    python -m cardioformer_jax.main --config=tests/helpers/train_fixtures.py \
        --config.dataset.data_dir=DIR --workdir=W

(from the repository root: the file imports ``configs`` and ``tests.helpers``).
"""

from __future__ import annotations

import os

import ml_collections

from configs import ptbxl
from tests.helpers import tiny_models


def tiny_config(data_dir: str | os.PathLike | None = None) -> ml_collections.ConfigDict:
    """PTB-XL config with the tiny model (`tiny_models.TINY`), batch 16, one epoch, few logs."""
    config = tiny_models.tiny_model(ptbxl.get_config())
    if data_dir is not None:
        config.dataset.data_dir = os.fspath(data_dir)
    config.train.batch_size = 16
    config.train.eval_batch_size = 64
    config.train.num_epochs = 1
    config.train.learning_rate = 1e-3
    config.train.log_every_steps = 5
    config.train.checkpoint_every_steps = 1000
    config.dataset.num_threads = 1
    config.dataset.prefetch_batches = 2
    return config


def get_config() -> ml_collections.ConfigDict:
    return tiny_config()


def _mesh(config: ml_collections.ConfigDict, devices=None):
    from cardioformer_jax.core import sharding

    return sharding.create_mesh(config.mesh.shape, devices=devices)


def loss_sequence(config: ml_collections.ConfigDict, steps: int, devices=None) -> list[float]:
    """Training losses of the first `steps` steps on the config's mesh (over `devices`)."""
    from cardioformer_jax.data import input_pipeline
    from cardioformer_jax.training import steps as training_steps

    mesh = _mesh(config, devices)
    state, compiled = training_steps.create_train_state(config, mesh)
    train_input = input_pipeline.create_train_input(config, mesh)
    losses = []
    try:
        for _ in range(steps):
            state, out = compiled.train(state, next(train_input))
            losses.append(float(out["loss"]))
    finally:
        train_input.close()
    return losses


def initial_predictions(config: ml_collections.ConfigDict, mesh) -> dict[str, list]:
    """`steps.predict` of the initial parameters on the validation split, as lists."""
    from cardioformer_jax.training import steps

    state, compiled = steps.create_train_state(config, mesh)
    out = steps.predict(compiled.eval, state.params, state.rngs, config, "validation", mesh)
    return {"index": out["index"].tolist(), "probs": out["probs"].tolist()}
