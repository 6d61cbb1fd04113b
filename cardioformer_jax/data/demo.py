"""The demo's data: a synthetic PTB-XL twin written and built inside the workdir."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from cardioformer_jax.core import logging_utils, paths
from cardioformer_jax.data import datasets


def prepare_synthetic_dataset(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                              ) -> ml_collections.ConfigDict:
    """For ``dataset.synthetic_patients > 0``: writes the synthetic PTB-XL twin to
    ``<workdir>/data/raw``, builds it into ``<workdir>/data/tfds`` (each once, on process 0)
    and returns the config pointing at it; other configs pass through. A URL workdir is
    refused (ArrayRecord writes local files only) with the commands to build it locally."""
    patients = config.dataset.synthetic_patients
    if patients <= 0:
        return config
    if config.dataset.name != "ptbxl":
        raise ValueError(f"dataset.synthetic_patients needs dataset.name='ptbxl', got "
                         f"{config.dataset.name!r}")
    workdir = paths.resolve_path(workdir)
    if paths.is_url(workdir):
        raise ValueError(_synthetic_url_message(config, workdir))
    from cardioformer_jax.data import synthetic  # only the demo needs the generator

    data = workdir / "data"
    raw, tfds_dir, marker = data / "raw", data / "tfds", data / "synthetic.json"
    wanted = {"patients": patients, "seed": int(config.seed)}
    if jax.process_index() == 0:
        if not (raw / "ptbxl_database.csv").is_file():
            logging.info("writing a synthetic PTB-XL twin of %d patients to %s", patients, raw)
            # Written aside and renamed: a run killed half-way leaves no partial twin.
            partial = data / "raw.partial"
            partial.rmtree(missing_ok=True)
            synthetic.write_ptbxl_twin(partial, patients, seed=config.seed)
            logging_utils.write_json(marker, wanted)
            partial.rename(raw)
        existing = json.loads(marker.read_text()) if marker.is_file() else None
        if existing != wanted:
            raise ValueError(f"{data} holds a synthetic dataset {existing}, not {wanted}; "
                             f"use another --workdir")
        builder_config = config.dataset.builder_config or None
        datasets.build("ptbxl", raw, tfds_dir, builder_config, progress=False)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic dataset built")
    config = ml_collections.ConfigDict(config.to_dict())
    config.dataset.data_dir = os.fspath(tfds_dir)
    return config


def _synthetic_url_message(config: ml_collections.ConfigDict, workdir: epath.Path) -> str:
    builder_config = config.dataset.builder_config or None
    bucket_data = workdir / "data" / "tfds"
    build = datasets.build_command("ptbxl", "/tmp/synthetic_tfds", builder_config)
    build = build.replace("<unpacked PhysioNet folder>", "/tmp/synthetic_ptbxl")
    return (
        f"the synthetic dataset (dataset.synthetic_patients={config.dataset.synthetic_patients})"
        f" is built into the workdir, and {workdir} is a URL: ArrayRecord files can only be "
        f"written to a local file system. Use a local --workdir, or build the data locally, "
        f"copy it to the bucket and train from there:\n"
        f"  python -m cardioformer_jax.synthetic --out /tmp/synthetic_ptbxl "
        f"--patients {config.dataset.synthetic_patients} --seed {config.seed}\n"
        f"  {build}\n"
        f"  gcloud storage cp --recursive /tmp/synthetic_tfds/ptbxl {bucket_data}/\n"
        f"  python -m cardioformer_jax.main --config=... --workdir={workdir} "
        f"--config.dataset.synthetic_patients=0 --config.dataset.data_dir={bucket_data}")
