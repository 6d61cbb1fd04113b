"""Shared pieces of the `configs/*.py` files (docs/model.md, docs/training.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from cardioformer_jax import models
from cardioformer_jax.data import windows
from cardioformer_jax.models import resnet1d
from cardioformer_jax.models.cardioformer import ModelConfig

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
    """Dataset-independent defaults; the dataset configs fill in `dataset` and `model`.

    Every field a run can use exists here: `validate_config` rejects any other key, so
    a misspelt override fails before training instead of being silently ignored.
    """
    config = ml_collections.ConfigDict()
    config.seed = 41  # first seed; also seeds the data order
    config.seeds = 1  # >1: run seeds seed..seed+seeds-1 in workdir/seed_<s>, aggregate

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = ""
    config.dataset.builder_config = ""  # "" = the builder's default config
    # True: train on the multi-hot `labels` feature (one sigmoid per class, binary
    # cross-entropy; the PTB-XL benchmark configs); False: on the single `label` (softmax).
    config.dataset.multilabel = False
    # "": every lead of the dataset; "12", "6", "4", "3", "2": the PhysioNet/CinC Challenge
    # 2021 lead sets (`dataset_inputs.LEAD_SETS`), in training, evaluation and `predict`.
    config.dataset.leads = ""
    config.dataset.data_dir = "~/tensorflow_datasets"
    # > 0: write a synthetic PTB-XL twin of this many patients into `<workdir>/data` and
    # build it there with the ptbxl builder (the demo); `data_dir` is then ignored.
    config.dataset.synthetic_patients = 0
    # Input pipeline (see `input_pipeline`): Grain worker processes (0: threads only),
    # read threads per process, batches buffered per process.
    config.dataset.num_workers = 0
    config.dataset.num_threads = 2
    config.dataset.prefetch_batches = 4

    # Crops of longer records (`data.windows`; the PTB-XL benchmark suite's protocol):
    # crop_seconds 0 feeds whole records; > 0: the model's input (model.seq_len samples) is
    # a crop this long, random per example and epoch in training, and evaluation scores a
    # record by eval_aggregation ("max" or "mean") of the probabilities over the windows
    # at stride eval_stride_seconds.
    config.input = ml_collections.ConfigDict()
    config.input.crop_seconds = 0.0
    config.input.eval_stride_seconds = 0.0
    config.input.eval_aggregation = "max"

    config.model = model_config()
    # Which network to train (`models.MODEL_NAMES`): "cardioformer" reads the `model`
    # section; "resnet1d" (baseline) reads `resnet` and the input/class fields of `model`.
    config.model_name = "cardioformer"
    config.resnet = ml_collections.ConfigDict(resnet1d.default_section())

    # docs/training.md: Adam 1e-4, no weight decay or schedule, clipping at global norm 4.0,
    # batch 128, up to 100 epochs, SWA per epoch, early stopping on validation macro-F1.
    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # global, over all devices and processes
    config.train.eval_batch_size = 256  # global; the last batch is padded and masked
    config.train.num_epochs = 100
    config.train.steps_per_epoch = -1  # -1: one pass over the training split
    config.train.learning_rate = 1e-4
    config.train.grad_clip_norm = 4.0  # global norm; <= 0 disables clipping
    config.train.patience = 10
    # The validation metric early stopping, the best checkpoint and the reported epoch
    # follow (higher is better): "f1" (macro, the paper), "auroc" (macro), "accuracy"
    # (single-label only) or "fmax" (multi-label only).
    config.train.selection_metric = "f1"
    config.train.min_delta = 1e-5
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 500  # plus one at every epoch end
    config.train.keep_checkpoints = 2  # latest K; the best (validation F1) is kept too
    config.train.async_checkpointing = True
    config.train.nan_policy = "stop"  # "stop": fail naming the step; "skip": drop the update
    # seeds > 1: True trains the seeds together in one vectorised program (K models in
    # memory, `steps.seed_programs`); False one after another.
    config.train.vectorize_seeds = True

    # Device mesh (see `sharding.create_mesh`): the batch is split over both axes, the
    # large weights over `fsdp`; -1 takes the devices left over.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (-1, 1)
    config.mesh.axis_names = ("data", "fsdp")
    return config


def _schema_problems(config: Any, schema: Any, prefix: str) -> list[str]:
    problems = []
    for key in config.keys():
        name = f"{prefix}{key}"
        if key not in schema:
            problems.append(f"unknown config key {name!r} (known under "
                            f"{prefix[:-1] or 'config'}: {sorted(schema.keys())})")
        elif isinstance(schema[key], ml_collections.ConfigDict):
            if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
                problems.append(f"config key {name!r} must be a section, got {config[key]!r}")
            else:
                problems.extend(_schema_problems(config[key], schema[key], f"{name}."))
    return problems


def with_defaults(saved: dict[str, Any]) -> ml_collections.ConfigDict:
    """A saved config (``config.json``) with the defaults of keys added to `base_config`
    since it was written, so runs of earlier versions still load; unknown keys stay and
    fail `validate_config`."""
    config = base_config()
    config.update(ml_collections.ConfigDict(saved))
    return config


def selection_metrics(multilabel: bool) -> tuple[str, ...]:
    """The validation metrics a run can select its best epoch by."""
    return ("auroc", "fmax", "f1") if multilabel else ("f1", "auroc", "accuracy")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for keys `base_config()` does not define or bad values.

    The dataset configs only change values, so the key set of `base_config()` is the
    schema of every config; `ModelConfig.from_config` checks the model section.
    """
    # The lead sets live with the input contracts (imported here: it reads WFDB).
    from cardioformer_jax.data.dataset_inputs import LEAD_SETS

    problems = _schema_problems(config, base_config(), "")
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    ModelConfig.from_config(config.model)
    models.model_spec(config)  # model_name and, for the baseline, the resnet section
    train = config.train
    checks = [
        (config.seeds >= 1, f"seeds={config.seeds} must be >= 1"),
        (bool(config.dataset.name), "dataset.name is empty; use one of configs/*.py"),
        (train.batch_size >= 1, f"train.batch_size={train.batch_size} must be >= 1"),
        (train.eval_batch_size >= 1,
         f"train.eval_batch_size={train.eval_batch_size} must be >= 1"),
        (train.num_epochs >= 1, f"train.num_epochs={train.num_epochs} must be >= 1"),
        (train.steps_per_epoch == -1 or train.steps_per_epoch >= 1,
         f"train.steps_per_epoch={train.steps_per_epoch} must be -1 or >= 1"),
        (train.learning_rate > 0, f"train.learning_rate={train.learning_rate} must be > 0"),
        (train.patience >= 1, f"train.patience={train.patience} must be >= 1"),
        (train.min_delta >= 0, f"train.min_delta={train.min_delta} must be >= 0"),
        (train.log_every_steps >= 1,
         f"train.log_every_steps={train.log_every_steps} must be >= 1"),
        (train.checkpoint_every_steps >= 1,
         f"train.checkpoint_every_steps={train.checkpoint_every_steps} must be >= 1"),
        (train.keep_checkpoints >= 1,
         f"train.keep_checkpoints={train.keep_checkpoints} must be >= 1"),
        (train.selection_metric in selection_metrics(config.dataset.multilabel),
         f"train.selection_metric={train.selection_metric!r} must be one of "
         f"{selection_metrics(config.dataset.multilabel)} for "
         f"{'multi' if config.dataset.multilabel else 'single'}-label training"),
        (train.nan_policy in ("stop", "skip"),
         f"train.nan_policy={train.nan_policy!r} must be 'stop' or 'skip'"),
        (config.dataset.leads in ("", *LEAD_SETS),
         f"dataset.leads={config.dataset.leads!r} must be '' (every lead) or one of the "
         f"Challenge 2021 lead sets {tuple(LEAD_SETS)}"),
        (not config.dataset.leads or config.dataset.leads not in LEAD_SETS
         or config.model.num_channels == int(config.dataset.leads),
         f"dataset.leads={config.dataset.leads!r} keeps {config.dataset.leads} leads but "
         f"model.num_channels={config.model.num_channels}"),
        (config.dataset.synthetic_patients >= 0,
         f"dataset.synthetic_patients={config.dataset.synthetic_patients} must be >= 0"),
        (config.dataset.num_workers >= 0,
         f"dataset.num_workers={config.dataset.num_workers} must be >= 0"),
        (config.dataset.num_threads >= 1,
         f"dataset.num_threads={config.dataset.num_threads} must be >= 1"),
        (len(config.mesh.shape) == len(config.mesh.axis_names),
         f"mesh.shape={tuple(config.mesh.shape)} and mesh.axis_names="
         f"{tuple(config.mesh.axis_names)} differ in length"),
    ]
    problems = [message for ok, message in checks if not ok]
    problems += windows.config_problems(config)
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
