"""The PTB-XL benchmark (Strodthoff et al. 2020): multi-label tasks on 10 s records.

    python -m cardioformer_jax.main --config=configs/ptbxl_benchmark.py:superdiagnostic \
        --workdir=runs/ptbxl_bm_superdiagnostic
    python -m cardioformer_jax.main --config=configs/ptbxl_benchmark.py:all,resnet,500hz ...
    python -m cardioformer_jax.main --config=configs/ptbxl_benchmark.py:form,crops ...

The argument is ``TASK[,resnet][,500hz][,crops]``: TASK one of
`labels.PTBXL_BENCHMARK_TASKS` (all, diagnostic, subdiagnostic, superdiagnostic, form,
rhythm), ``resnet`` trains the 1-D ResNet baseline instead of Cardioformer, ``500hz`` the
500 Hz records instead of the 100 Hz ones. By default the model reads whole 10 s records;
``crops`` follows the benchmark suite's protocol instead (`data.windows`): the model reads
2.5 s, training draws a new random 2.5 s crop of each record every epoch, and validation,
test and predict score a record as the maximum of the sigmoid probabilities over its
2.5 s windows at stride 1.25 s (7 windows). The dataset is the ptbxl builder config
``benchmark_<TASK>_<RATE>hz`` (folds 1-8 / 9 / 10, multi-hot labels, build it first).
One sigmoid per class, binary cross-entropy, and the best epoch is the one with the
highest validation macro AUROC, the benchmark's headline metric; Fmax (the 2020 paper's
metric) is reported beside it. docs/benchmarks.md says which of
the benchmark's rules this follows and where it differs.

Cardioformer's patch lengths: the paper's lengths (2 to 32 samples on 250-sample inputs)
scaled by input length / 250 (x4 at 100 Hz, x20 at 500 Hz; with ``crops`` x1 and x5), so
every granularity has as many patches as in the paper (125 down to 8) and attention costs
what it costs there; on whole records at 100 Hz the patches span 80 ms to 1.28 s, from a
QRS complex to a whole beat.
"""

from __future__ import annotations

import ml_collections

from cardioformer_jax import config_lib
from tfds_builders import labels

RATES = (100, 500)
RECORD_SECONDS = 10
# The suite's protocol (``crops``): 2.5 s inputs, evaluation windows every 1.25 s.
CROP_SECONDS = 2.5
EVAL_STRIDE_SECONDS = 1.25


def benchmark_patch_lens(seq_len: int) -> tuple[int, ...]:
    """The paper's 16 patch lengths scaled from its 250-sample input to `seq_len`."""
    scale = seq_len // 250
    return tuple(p * scale for p in config_lib.PATCH_LENS_16)


def parse_argument(argument: str) -> tuple[str, str, int, bool]:
    """``TASK[,resnet][,500hz][,crops]`` -> (task, model name, rate, crops); ValueError when
    malformed."""
    parts = [p.strip().lower() for p in (argument or "").split(",") if p.strip()]
    if not parts or parts[0] not in labels.PTBXL_BENCHMARK_TASKS:
        raise ValueError(f"configs/ptbxl_benchmark.py needs a task first, one of "
                         f"{', '.join(labels.PTBXL_BENCHMARK_TASKS)}; got {argument!r}")
    task, model, rate, crops = parts[0], "cardioformer", 100, False
    for part in parts[1:]:
        if part in ("resnet", "resnet1d"):
            model = "resnet1d"
        elif part in ("cardioformer",):
            model = "cardioformer"
        elif part.endswith("hz") and part[:-2].isdigit() and int(part[:-2]) in RATES:
            rate = int(part[:-2])
        elif part == "crops":
            crops = True
        else:
            raise ValueError(f"unknown option {part!r} in {argument!r}; use 'resnet', "
                             f"'crops' and/or one of {', '.join(f'{r}hz' for r in RATES)}")
    return task, model, rate, crops


def get_config(argument: str = "superdiagnostic") -> ml_collections.ConfigDict:
    task, model, rate, crops = parse_argument(argument)
    seq_len = round(rate * (CROP_SECONDS if crops else RECORD_SECONDS))
    num_classes = len(labels.PTBXL_TASK_CLASSES[task])
    config = config_lib.base_config()
    config.dataset.name = "ptbxl"
    config.dataset.builder_config = f"benchmark_{task}_{rate}hz"
    config.dataset.multilabel = True
    config.input.seq_len, config.input.num_channels = seq_len, 12
    config.dataset.num_classes = num_classes
    config.model = config_lib.model_section(
        patch_lens=benchmark_patch_lens(seq_len), augmentations="jitter0.2,scale0.2,drop0.5")
    config.model_name = model
    if crops:
        config.input.crop_seconds = CROP_SECONDS
        config.input.eval_stride_seconds = EVAL_STRIDE_SECONDS
        config.input.eval_aggregation = "max"
    config.train.selection_metric = "auroc"
    return config
