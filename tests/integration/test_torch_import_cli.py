"""The torch_import command line (``python -m cardioformer_jax.torch_import``) in a
subprocess; the import itself is tested in tests/unit/test_torch_import.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from cardioformer_jax.models import count_params
from cardioformer_jax.models.cardioformer import Cardioformer, CardioformerConfig
from tests.helpers import REPO
from tests.helpers.numpy_reference import make_state_dict


@pytest.mark.slow
def test_cli_command_line(tmp_path):
    model_flags = dict(seq_len=40, num_channels=12, num_classes=5, d_model=8, d_ff=16,
                       n_heads=2, e_layers=1, patch_lens=(2, 4, 8, 8))
    config = CardioformerConfig(**model_flags)
    np.savez(tmp_path / "ref.npz", **make_state_dict(config))
    sections = {"seq_len": "input", "num_channels": "input", "num_classes": "dataset"}
    overrides = [f"--config.{sections.get(k, 'model')}.{k}={v}"
                 for k, v in model_flags.items() if k != "patch_lens"]
    overrides.append("--config.model.patch_lens=2,4,8,8")
    result = subprocess.run(
        [sys.executable, "-m", "cardioformer_jax.torch_import", "--config=configs/ptbxl.py",
         *overrides, f"--checkpoint={tmp_path / 'ref.npz'}", f"--out={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    # Shapes only: the parameter count needs no weights.
    params = count_params(nnx.eval_shape(lambda: Cardioformer(config, rngs=nnx.Rngs(0))))
    assert f"{params:,} parameters saved to" in result.stdout
    assert (tmp_path / "out").is_dir()
