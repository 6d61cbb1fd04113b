"""PhysioNet/CinC Challenge 2021: the Challenge's 26 scored classes, multi-label, 10 s records.

    python -m cardioformer_jax.main --config=configs/cinc2021.py --workdir=runs/cinc2021
    python -m cardioformer_jax.main --config=configs/cinc2021.py:resnet,leads=2 ...

The argument is ``[resnet][,leads=N][,500hz]``: ``resnet`` trains the 1-D ResNet baseline
instead of Cardioformer; ``leads=N`` one of the Challenge's reduced-lead settings (12, 6, 4,
3, 2 leads: `dataset_inputs.LEAD_SETS`), read from the same 12-lead build; ``500hz`` the
500 Hz windows instead of the 100 Hz ones. The dataset is the cinc2021 builder config
``records_<RATE>hz`` (consecutive 10 s windows of every record, split 60/20/20 by a hash of
the record name; build it first). One sigmoid per class, binary cross-entropy; the best
epoch is the one with the highest validation macro AUROC. `evaluate` adds the Challenge's
own metrics (its score, F-measure and accuracy) from per-class thresholds chosen on
validation (docs/training.md).

Cardioformer's patch lengths: as the PTB-XL benchmark configs, the paper's lengths scaled
from its 250-sample input to the 10 s window.
"""

from __future__ import annotations

import ml_collections

from cardioformer_jax import config_lib
from cardioformer_jax.data import dataset_inputs
from configs import ptbxl_benchmark

RATES = (100, 500)
RECORD_SECONDS = 10
LEAD_SETTINGS = tuple(dataset_inputs.LEAD_SETS)
NUM_SCORED_CLASSES = 26


def parse_argument(argument: str) -> tuple[str, str, int]:
    """``[resnet][,leads=N][,500hz]`` -> (model name, lead setting, rate)."""
    model, leads, rate = "cardioformer", "12", 100
    for part in (p.strip().lower() for p in (argument or "").split(",")):
        if not part:
            continue
        if part in ("resnet", "resnet1d"):
            model = "resnet1d"
        elif part == "cardioformer":
            model = "cardioformer"
        elif part.startswith("leads="):
            leads = part.split("=", 1)[1]
            if leads not in LEAD_SETTINGS:
                raise ValueError(f"{part!r} in {argument!r}: the Challenge's lead settings are "
                                 f"{', '.join(LEAD_SETTINGS)}")
        elif part.endswith("hz") and part[:-2].isdigit() and int(part[:-2]) in RATES:
            rate = int(part[:-2])
        else:
            raise ValueError(f"unknown option {part!r} in {argument!r}; use 'resnet', "
                             f"'leads=N' (N in {', '.join(LEAD_SETTINGS)}) and/or one of "
                             f"{', '.join(f'{r}hz' for r in RATES)}")
    return model, leads, rate


def get_config(argument: str = "") -> ml_collections.ConfigDict:
    model, leads, rate = parse_argument(argument)
    seq_len = rate * RECORD_SECONDS
    config = config_lib.base_config()
    config.dataset.name = "cinc2021"
    config.dataset.builder_config = f"records_{rate}hz"
    config.dataset.multilabel = True
    config.dataset.leads = leads
    config.input.seq_len, config.input.num_channels = seq_len, int(leads)
    config.dataset.num_classes = NUM_SCORED_CLASSES
    config.model = config_lib.model_section(
        patch_lens=ptbxl_benchmark.benchmark_patch_lens(seq_len),
        augmentations="jitter0.2,scale0.2,drop0.5")
    config.model_name = model
    config.train.selection_metric = "auroc"
    return config
