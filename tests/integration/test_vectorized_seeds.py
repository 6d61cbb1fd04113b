"""Seeds trained together in one vectorised program (`loop.train_seeds`): each seed equals
a run of that seed alone, and an interrupted run resumes to the same end."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cardioformer_jax.evaluation import inference
from cardioformer_jax.training import checkpointing, loop, train
from tests.helpers import REPO, train_fixtures

SEEDS = (41, 42)


def _config(data_dir, **train_overrides):
    config = train_fixtures.tiny_config(data_dir)
    config.train.steps_per_epoch = 3
    config.train.update(train_overrides)
    return config


def _signals(n: int = 24) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, 250, 12)).astype(np.float32)


def _eval_outputs(run_dir) -> np.ndarray:
    """Eval-mode probabilities of the run's trained (SWA) model on fixed inputs."""
    return inference.load(run_dir).probabilities(_signals())


def _train(config, workdir):
    return train.train_and_evaluate(config, workdir)


def test_each_seed_equals_its_run_alone(tiny_ptbxl, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    config = _config(tiny_ptbxl[1], num_epochs=2)
    config.seeds = len(SEEDS)
    together = _train(config, tmp_path / "together")
    assert "seeds [41, 42] trained together in one program" in caplog.text
    assert "[train seed 42] step 1/6" in caplog.text
    assert together["seeds"] == list(SEEDS)
    outputs = {s: _eval_outputs(tmp_path / "together" / f"seed_{s}") for s in SEEDS}
    assert not np.allclose(outputs[41], outputs[42], atol=1e-3)  # two different models

    alone_config = _config(tiny_ptbxl[1], num_epochs=2)
    alone_config.seed = 42
    alone = _train(alone_config, tmp_path / "alone")
    # Same initial weights, dropout stream and data order: the same model, up to the
    # rounding of the vectorised arithmetic.
    np.testing.assert_allclose(outputs[42], _eval_outputs(tmp_path / "alone"),
                               rtol=1e-4, atol=1e-5)
    got = together["per_seed"]["42"]
    assert got["best_epoch"] == alone["best_epoch"]
    assert got["epochs_completed"] == alone["epochs_completed"] == 2
    for split in ("validation", "test"):
        assert got[split]["num_examples"] == alone[split]["num_examples"] == 100
        assert got[split]["auroc"] == pytest.approx(alone[split]["auroc"], abs=1e-4)
    # The seed's folder is a complete one-seed run: config, results and checkpoints.
    saved = json.loads((tmp_path / "together" / "seed_42" / "config.json").read_text())
    assert saved["seed"] == 42 and saved["seeds"] == 1


def test_sequential_mode_gives_the_same_seeds(tiny_ptbxl, tmp_path):
    config = _config(tiny_ptbxl[1], vectorize_seeds=False)
    config.seeds = len(SEEDS)
    _train(config, tmp_path / "sequential")
    config.train.vectorize_seeds = True
    _train(config, tmp_path / "together")
    for s in SEEDS:
        np.testing.assert_allclose(_eval_outputs(tmp_path / "together" / f"seed_{s}"),
                                   _eval_outputs(tmp_path / "sequential" / f"seed_{s}"),
                                   rtol=1e-4, atol=1e-5)


def test_resume_after_a_kill_between_two_seeds_saves(tiny_ptbxl, tmp_path):
    """Seed 42's checkpoint of step 3 is missing (the process died after seed 41's):
    both resume from step 2, seed 41's step 3 is moved aside, and the run ends where an
    uninterrupted one does."""
    config = _config(tiny_ptbxl[1], num_epochs=2, checkpoint_every_steps=1, keep_checkpoints=3)
    config.seeds = len(SEEDS)
    _train(config, tmp_path / "straight")

    config.train.num_epochs = 1
    _train(config, tmp_path / "killed")
    broken = tmp_path / "killed" / "seed_42" / checkpointing.CHECKPOINT_DIR / "3"
    shutil.rmtree(broken)
    config.train.num_epochs = 2  # resumable change: the run goes on
    result = _train(config, tmp_path / "killed")

    superseded = tmp_path / "killed" / "seed_41" / loop.SUPERSEDED_DIR
    assert [p.name.split("_")[0] for p in superseded.iterdir()] == ["3"]
    for s in SEEDS:
        np.testing.assert_array_equal(_eval_outputs(tmp_path / "killed" / f"seed_{s}"),
                                      _eval_outputs(tmp_path / "straight" / f"seed_{s}"))
        assert result["per_seed"][str(s)]["epochs_completed"] == 2


def test_finished_run_is_not_trained_again(tiny_ptbxl, tmp_path):
    config = _config(tiny_ptbxl[1])
    config.seeds = len(SEEDS)
    first = _train(config, tmp_path)
    steps_before = {s: sorted(int(p.name) for p in
                              (tmp_path / f"seed_{s}" / "checkpoints").iterdir()
                              if p.name.isdigit()) for s in SEEDS}
    again = _train(config, tmp_path)
    assert again["test"] == first["test"]
    for s in SEEDS:
        after = sorted(int(p.name) for p in (tmp_path / f"seed_{s}" / "checkpoints").iterdir()
                       if p.name.isdigit())
        assert after == steps_before[s] == [3]


EIGHT_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0")
    import numpy as np
    from cardioformer_jax.evaluation import inference
    from cardioformer_jax.training import train
    from tests.helpers import train_fixtures

    data_dir, out = sys.argv[1], sys.argv[2]
    config = train_fixtures.tiny_config(data_dir)
    config.mesh.shape = (4, 2)  # batch over 8 devices, weights split over fsdp
    config.train.steps_per_epoch = 2
    config.seeds = 2
    train.train_and_evaluate(config, out + "/together")
    config.seeds, config.seed = 1, 42
    train.train_and_evaluate(config, out + "/alone")
    x = np.random.default_rng(0).normal(size=(8, 250, 12)).astype(np.float32)
    a = inference.load(out + "/together/seed_42").probabilities(x)
    b = inference.load(out + "/alone").probabilities(x)
    print("RESULT", float(np.abs(a - b).max()))
    """
)


@pytest.mark.slow
def test_seeds_together_on_an_eight_device_mesh(tiny_ptbxl, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    child = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(tiny_ptbxl[1]),
                            str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    line = next(x for x in child.stdout.splitlines() if x.startswith("RESULT"))
    assert float(line.split()[1]) < 1e-5
