"""Tiny run directories for the inference tests, made by the training code itself.

The tiny model itself is `tiny_models.tiny_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import ml_collections

from cardioformer_jax.core import sharding
from cardioformer_jax.training import checkpointing, steps


def tiny_training(config: ml_collections.ConfigDict, data_dir: str | os.PathLike,
                  steps_per_epoch: int = 2) -> ml_collections.ConfigDict:
    """Training settings for a run of a few steps on the tiny synthetic PTB-XL build."""
    config.dataset.data_dir = os.fspath(data_dir)
    config.dataset.num_threads = 1
    config.dataset.prefetch_batches = 2
    config.train.batch_size = 16
    config.train.eval_batch_size = 128
    config.train.num_epochs = 1
    config.train.steps_per_epoch = steps_per_epoch
    config.train.learning_rate = 1e-3
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 1000
    return config


def save_epoch_end_run(config: ml_collections.ConfigDict, run_dir: Path) -> Path:
    """A run directory as the training loop leaves it after an epoch, without data.

    Fresh parameters go through the loop's own SWA update and are saved by its
    `Checkpointer` as the best epoch's checkpoint, next to the run's ``config.json``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.create_mesh((1, 1), devices=jax.devices()[:1])
    state, programs = steps.create_train_state(config, mesh)
    state = programs.swa(state)
    checkpointing.check_run_config(run_dir, config)
    with checkpointing.Checkpointer(run_dir / checkpointing.CHECKPOINT_DIR,
                                    async_save=False) as checkpoints:
        checkpoints.save(1, state, {"step": 1, "epoch": 1}, best_epoch_rank=1)
    return run_dir
