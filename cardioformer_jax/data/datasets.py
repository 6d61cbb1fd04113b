"""Build and read the TFDS datasets without TensorFlow (docs/data.md).

`build` drives `tfds_builders/` (the `tfds build` CLI imports TensorFlow); `data_source` reads.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils

from cardioformer_jax.core import paths
from cardioformer_jax.core import progress as progress_lib

DATASETS: tuple[str, ...] = ("ptbxl", "ptb", "mimic_iv_ecg", "cinc2021")
DEFAULT_CONFIG = "default"

CINC2021_DATABASES: tuple[str, ...] = (
    "PTB-XL", "Chapman-Shaoxing", "Ningbo", "CPSC", "CPSC-extra", "INCART", "PTB", "Georgia")
"""The source databases of the Challenge 2021 set (`labels.cinc2021_source_database`)."""

SOURCE_DATABASES: dict[str, tuple[str, ...]] = {
    "ptbxl": ("PTB-XL",),
    "ptb": ("PTB",),
    "mimic_iv_ecg": ("MIMIC-IV-ECG",),
    "cinc2021": CINC2021_DATABASES,
}
"""The ECG databases each dataset's records come from (synthetic twins count as their
original: a run on the PTB-XL twin stands for a PTB-XL run). External validation leaves out
the evaluated records of any database the run was trained on: the Challenge 2021 set
contains all of PTB-XL (``HR*``) and PTB (``S*``)."""


def source_databases(name: str) -> tuple[str, ...]:
    """The source databases of dataset `name` (`SOURCE_DATABASES`)."""
    if name not in SOURCE_DATABASES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return SOURCE_DATABASES[name]


def builder_class(name: str) -> type:
    """The `Builder` class of `tfds_builders/<name>/` (importing it registers it in TFDS)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"tfds_builders.{name}").Builder


def resolve_config(
    name: str,
    config: str | Any | None = None,
    *,
    split_bounds: tuple[float, float] | None = None,
    split_seed: int | None = None,
):
    """A builder config by name (default: "default"), optionally with other split bounds
    and/or a seeded random subject split (see `tfds_builders.common.derive_config`)."""
    from tfds_builders import common

    cls = builder_class(name)
    if config is None or isinstance(config, str):
        wanted = config or DEFAULT_CONFIG
        configs = {c.name: c for c in cls.BUILDER_CONFIGS}
        if wanted not in configs:
            raise ValueError(f"{name} has no config {wanted!r}; choose one of {', '.join(configs)}")
        config = configs[wanted]
    return common.derive_config(config, split_bounds=split_bounds, split_seed=split_seed)


def build(
    name: str,
    manual_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str],
    config: str | Any | None = None,
    *,
    num_workers: int | None = None,
    split_bounds: tuple[float, float] | None = None,
    split_seed: int | None = None,
    progress: bool = True,
    register_checksums: bool = False,
) -> tfds.core.DatasetBuilder:
    """Builds `name` into `data_dir` (ArrayRecord) and returns the builder.

    `manual_dir`: the unpacked PhysioNet folder (or its parent); None downloads the
    open-access zip (network needed only then; cinc2021 is manual only). An already built
    dataset is reused.
    `num_workers`: record-processing processes (None: all cores, 0: in this process).
    `register_checksums`: record the downloaded archive's size and SHA-256 in the
    builder's `checksums.tsv` (later downloads are then checked against it).
    """
    builder_config = resolve_config(name, config, split_bounds=split_bounds, split_seed=split_seed)
    # `~` and `$VAR` as the shell would have expanded them (TFDS would not).
    data_dir = paths.expand_path(data_dir, "data_dir")
    if manual_dir is not None:
        manual_dir = paths.expand_path(manual_dir, "manual_dir")
    builder = builder_class(name)(
        data_dir=data_dir,
        config=builder_config,
        num_workers=num_workers,
        progress=progress,
    )
    download_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        register_checksums=register_checksums,
    )
    # Our per-record progress (`core.progress`: a bar on a terminal, plain lines in a
    # log) replaces TFDS's example counters for the duration of the build. TFDS's bars stay
    # on only while a zip is downloaded onto a terminal: redrawn into a log file they are
    # walls of carriage returns. The global switch is restored afterwards.
    tfds_bars = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(tfds_bars and progress and manual_dir is None
                              and progress_lib.is_terminal(sys.stderr))
    try:
        builder.download_and_prepare(download_config=download_config, file_format="array_record")
    finally:
        tfds.display_progress_bar(tfds_bars)
    return builder


def build_command(name: str, data_dir: str | os.PathLike[str], config: str | None) -> str:
    """The shell command that builds `name` into `data_dir`."""
    command = (
        f"python -m cardioformer_jax.build_dataset {name} "
        f"--manual_dir=<unpacked PhysioNet folder> --data_dir={os.fspath(data_dir)}"
    )
    if config and config != DEFAULT_CONFIG:
        command += f" --builder_config={config}"
    return command


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def dataset_dir(name: str, data_dir: str | os.PathLike[str], config: str | None = None
                ) -> epath.Path:
    """`data_dir/name/config/<the builder's version>`; FileNotFoundError with the build
    command when the dataset has not been built (completely) there by this version of the
    preparation code.

    An `epath.Path`, so a ``gs://`` data_dir stays a URL (`pathlib` would collapse its
    ``//``); reading one needs gcsfs (`etils.epath`'s GCS backend)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    config = config or DEFAULT_CONFIG
    # Absolute, so that the error below says where exactly it looked.
    config_dir = paths.resolve_path(data_dir) / name / config
    versions = []
    if config_dir.is_dir():
        versions = [
            p.name
            for p in config_dir.iterdir()
            if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").is_file()
        ]
    if not versions:
        raise FileNotFoundError(
            f"dataset {name}/{config} is not built under {config_dir.parent.parent}. "
            f"Build it with:\n  {build_command(name, config_dir.parent.parent, config)}"
        )
    current = str(builder_class(name).VERSION)
    if current not in versions:
        # Another version's preparation: reusing it would silently train on other data.
        raise FileNotFoundError(
            f"dataset {name}/{config} under {config_dir.parent.parent} was built by builder "
            f"version {', '.join(sorted(versions, key=_version_key))}; this code prepares "
            f"version {current}, so that build is not reused. Build it with:\n  "
            f"{build_command(name, config_dir.parent.parent, config)}"
        )
    return config_dir / current


def load_builder(
    name: str, data_dir: str | os.PathLike[str], config: str | None = None
) -> tfds.core.DatasetBuilder:
    """A read-only builder of a built dataset (info, metadata, splits); no builder code."""
    return tfds.builder_from_directory(os.fspath(dataset_dir(name, data_dir, config)))


def data_source(
    name: str,
    data_dir: str | os.PathLike[str],
    split: str,
    config: str | None = None,
):
    """Random-access source of decoded examples (dicts of NumPy arrays) of one split.

    Works for every config, including derived ones (pass the name `build` printed).
    """
    builder = load_builder(name, data_dir, config)
    if split not in builder.info.splits:
        raise ValueError(
            f"{name}/{builder.builder_config.name if builder.builder_config else config} "
            f"has no split {split!r}; built splits: {sorted(builder.info.splits)}"
        )
    return builder.as_data_source(split=split)


def parse_split_bounds(text: str | Sequence[str]) -> tuple[float, float]:
    """``"a,b"`` (or ``["a", "b"]``) as the split bounds ``(a, b)``; ValueError otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        bounds = [float(p) for p in parts]
    except ValueError:
        bounds = []
    if len(bounds) != 2:
        raise ValueError(f"expected two numbers a,b (e.g. 0.6,0.8), got {text!r}")
    return bounds[0], bounds[1]


def summary(builder: tfds.core.DatasetBuilder) -> str:
    """What `build` made: the dataset and config, examples per split, skipped records."""
    metadata = builder.info.metadata
    lines = [f"built {builder.name}/{builder.builder_config.name} in {builder.data_dir}"]
    lines += [f"  {split}: {info.num_examples} examples"
              for split, info in builder.info.splits.items()]
    if metadata and metadata.get("skipped_records"):
        lines.append(f"  skipped records by reason: {metadata['skipped_records']}")
    return "\n".join(lines)
