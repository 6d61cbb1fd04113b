"""Build (`tfds_builders/`) and read the TFDS datasets without TensorFlow (docs/data.md)."""

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

SOURCE_DATABASES: dict[str, tuple[str, ...]] = {
    "ptbxl": ("PTB-XL",),
    "ptb": ("PTB",),
    "mimic_iv_ecg": ("MIMIC-IV-ECG",),
    # `labels.cinc2021_source_database`
    "cinc2021": ("PTB-XL", "Chapman-Shaoxing", "Ningbo", "CPSC", "CPSC-extra", "INCART", "PTB",
                 "Georgia"),
}
"""The ECG databases each dataset's records come from, synthetic twins counting as their
original (docs/training.md, "External validation")."""


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
    """Builds `name` into `data_dir` (ArrayRecord; an existing build is reused) and returns
    the builder. Arguments as `build_dataset`'s flags; `config`, a builder config or its name
    (None: "default"), is derived with `split_bounds` / `split_seed`
    (`tfds_builders.common.derive_config`).
    """
    from tfds_builders import common

    cls = builder_class(name)
    if config is None or isinstance(config, str):
        configs = {c.name: c for c in cls.BUILDER_CONFIGS}
        config = config or DEFAULT_CONFIG
        if config not in configs:
            raise ValueError(f"{name} has no config {config!r}; choose one of {', '.join(configs)}")
        config = configs[config]
    builder_config = common.derive_config(config, split_bounds=split_bounds, split_seed=split_seed)
    # `~` and `$VAR` as the shell would have expanded them (TFDS would not).
    data_dir = paths.expand_path(data_dir, "data_dir")
    if manual_dir is not None:
        manual_dir = paths.expand_path(manual_dir, "manual_dir")
    builder = cls(data_dir=data_dir, config=builder_config, num_workers=num_workers,
                  progress=progress)
    download_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        register_checksums=register_checksums,
    )
    # Our per-record progress (`core.progress`) replaces TFDS's counters during the build;
    # TFDS's bars stay on only for a download onto a terminal: in a log file they are walls
    # of carriage returns.
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


def dataset_dir(name: str, data_dir: str | os.PathLike[str], config: str | None = None
                ) -> epath.Path:
    """`data_dir/name/config/<the builder's version>`; FileNotFoundError with the build
    command when this version of the preparation code has not (completely) built it there.
    An `epath.Path`, so a ``gs://`` data_dir stays a URL (reading one needs gcsfs)."""
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
        versions.sort(key=lambda v: tuple(int(p) for p in v.split(".")))
        raise FileNotFoundError(
            f"dataset {name}/{config} under {config_dir.parent.parent} was built by builder "
            f"version {', '.join(versions)}; this code prepares "
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
