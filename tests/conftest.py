"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardioformer_jax.data import datasets, synthetic

TINY_PTBXL_PATIENTS = 40


@pytest.fixture(scope="session")
def tiny_ptbxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic PTB-XL twin of 40 patients built once per session (ArrayRecord).

    Returns (manual_dir, data_dir); the "default" config has 310 train, 100 validation
    and 100 test examples of shape (250, 12). Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("tiny_ptbxl")
    manual_dir = synthetic.write_ptbxl_twin(root / "raw", TINY_PTBXL_PATIENTS, seed=0)
    data_dir = root / "tfds"
    datasets.build("ptbxl", manual_dir, data_dir, num_workers=0, progress=False)
    return manual_dir, data_dir
