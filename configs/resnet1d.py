"""The 1-D ResNet baseline (`cardioformer_jax.models.resnet1d`) with a dataset's data and protocol.

    python -m cardioformer_jax.main --config=configs/resnet1d.py --workdir=DIR        # PTB-XL
    python -m cardioformer_jax.main --config=configs/resnet1d.py:ptb --workdir=DIR

The argument picks the dataset config it starts from (``ptbxl`` default, ``ptb``,
``mimic_iv_ecg``): same data, splits, optimiser, SWA, early stopping and seeds as Cardioformer,
only the network differs. Its size is set in the ``resnet`` section, e.g.
``--config.resnet.widths=(32,64,128) --config.resnet.norm=layer``.
"""

from __future__ import annotations

import importlib

import ml_collections

DATASETS: tuple[str, ...] = ("ptbxl", "ptb", "mimic_iv_ecg")


def get_config(dataset: str = "ptbxl") -> ml_collections.ConfigDict:
    """The baseline on `dataset` (a `configs/<dataset>.py` name)."""
    dataset = dataset.strip() or "ptbxl"
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    config = importlib.import_module(f"configs.{dataset}").get_config()
    config.model_name = "resnet1d"
    return config
