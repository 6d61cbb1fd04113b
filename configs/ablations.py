"""The paper's ablations (docs/model.md, Ablations) as ready configs, on top of a dataset config.

    python -m cardioformer_jax.main --config=configs/ablations.py:no_inter_attn --workdir=DIR
    python -m cardioformer_jax.main --config=configs/ablations.py:single_channel,ptb ...

The argument is ``ABLATION[,DATASET]``; DATASET is ``ptbxl`` (default), ``ptb`` or
``mimic_iv_ecg`` (the `configs/<dataset>.py` the ablation starts from). Ablations:

* ``no_inter_attn``: no inter-granularity attention (docs/model.md, Encoder layer step 2 skipped);
* ``single_granularity``: one granularity, patch length 8 (another length with
  ``--config.model.patch_lens=16``);
* ``single_channel``: patches cut per lead (each lead its own one-channel sample);
* ``no_augmentation``: no token augmentation (``augmentations="none"``);
* ``tabular_late`` / ``tabular_early``: age and sex with the ECG (``model.tabular``; not
  an ablation of the paper but an addition, compared against the paper's setting): their
  embedding joins the head's features (late) or is a token of every granularity (early).
"""

from __future__ import annotations

import importlib

import ml_collections

ABLATIONS: tuple[str, ...] = ("no_inter_attn", "single_granularity", "single_channel",
                              "no_augmentation", "tabular_late", "tabular_early")
DATASETS: tuple[str, ...] = ("ptbxl", "ptb", "mimic_iv_ecg")
SINGLE_PATCH_LEN = 8


def get_config(arg: str = "no_inter_attn") -> ml_collections.ConfigDict:
    """The ablation ``arg`` = ``ABLATION[,DATASET]`` (see the module docstring)."""
    name, _, dataset = (part.strip() for part in arg.partition(","))
    dataset = dataset or "ptbxl"
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose one of {', '.join(ABLATIONS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    config = importlib.import_module(f"configs.{dataset}").get_config()
    model = config.model
    if name == "no_inter_attn":
        model.no_inter_attn = True
    elif name == "single_granularity":
        model.patch_lens = (SINGLE_PATCH_LEN,)
    elif name == "single_channel":
        model.single_channel = True
    elif name.startswith("tabular_"):
        model.tabular = name.removeprefix("tabular_")
    else:
        model.augmentations = "none"
    return config
