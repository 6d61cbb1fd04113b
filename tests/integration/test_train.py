"""The training system end to end on the tiny synthetic PTB-XL build; nothing mocked.

Compilation dominates these tests on a CPU (the tiny model's train step takes ~20 s to
compile on a loaded 2-core machine): they share the tiny model's programs, in this process
and, through the session's persistent compilation cache (tests/conftest.py), in the
subprocesses. The checks of the loop that need no training:
tests/unit/test_training_checks.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from cardioformer_jax.core import sharding
from cardioformer_jax.data import datasets, preprocessing
from cardioformer_jax.training import checkpointing, steps, train
from tests.helpers import REPO, train_fixtures


@pytest.fixture(scope="module")
def data_dir(tiny_ptbxl):
    return tiny_ptbxl[1]


def _config(data_dir, **train_overrides):
    config = train_fixtures.tiny_config(data_dir)
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def _numbers(result):
    """A results.json without its provenance (which records each start of the run)."""
    return {k: v for k, v in result.items() if k != "provenance"}


def _single_device_mesh():
    return sharding.create_mesh((1, 1), devices=jax.devices()[:1])


def _restore(run_dir, config, step=None):
    abstract = steps.programs(config, sharding.mesh_from_config(config)).abstract_state
    with checkpointing.Checkpointer(Path(run_dir) / checkpointing.CHECKPOINT_DIR) as ckpt:
        step = ckpt.latest_step() if step is None else step
        return ckpt.restore(step, abstract)


def _subprocess_env():
    """The environment of the commands: the repository importable (configs/, tests/), CPU,
    and the session's compilation cache (set in os.environ by tests/conftest.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return env


def _main_command(workdir, data_dir, *overrides):
    return [sys.executable, "-m", "cardioformer_jax.main",
            "--config=tests/helpers/train_fixtures.py", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", *overrides]


# --- the loop -------------------------------------------------------------------------------


def test_one_epoch_writes_results_and_logs(data_dir, tmp_path, caplog):
    with caplog.at_level("INFO", logger="absl"):
        result = train.train_and_evaluate(_config(data_dir), tmp_path)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["best_epoch"] == 1 and saved["epochs_completed"] == 1
    for split in ("validation", "test"):
        values = saved[split]
        assert values["num_examples"] == 100  # every example of the split
        for name in ("accuracy", "precision", "recall", "f1", "auroc", "auprc", "loss"):
            assert math.isfinite(values[name]), (split, name)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["split"] == "train"]
    # Logged after the first step, every 5 steps and at the epoch end (19 steps).
    assert [x["step"] for x in train_lines] == [1, 5, 10, 15, 19]
    assert all(x["steps_per_second"] > 0 and math.isfinite(x["loss"]) for x in train_lines)
    assert {x["split"] for x in lines} == {"train", "validation", "test"}
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["model"]["d_model"] == 8
    # Progress out of the 19 steps (no ETA after the first step: its compilation is not
    # timed), and the closing line with the best epoch's test metrics.
    test = saved["test"]
    assert ("[train] step 1/19 (5.2%) | " in caplog.text
            and "[train] step 5/19 (26.3%, ETA " in caplog.text
            and [m for m in caplog.messages if m.startswith("best epoch")] == [
                f"best epoch 1: test accuracy={test['accuracy']:.4f}, f1={test['f1']:.4f}, "
                f"auroc={test['auroc']:.4f}; results: {tmp_path / 'results.json'}"])


def test_loss_decreases_on_a_learnable_task():
    config = train_fixtures.tiny_config()
    mesh = _single_device_mesh()
    state, compiled = steps.create_train_state(config, mesh)
    # Class k: a sine of k + 1 cycles per window on every lead, plus noise.
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 250, dtype=np.float32)
    batches = []
    for _ in range(4):  # batch 16 as in the other tests: the same compiled step
        labels = rng.integers(0, 5, 16)
        waves = np.sin(2 * np.pi * (labels[:, None] + 1) * t)[:, :, None]
        signal_ = waves + 0.3 * rng.standard_normal((16, 250, 12))
        batches.append({"signal": preprocessing.standardize(signal_.astype(np.float32)),
                        "label": labels.astype(np.int32)})
    losses = []
    for i in range(60):
        state, out = compiled.train(state, batches[i % 4])
        losses.append(float(out["loss"]))
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8]), losses


def test_swa_is_the_mean_of_the_epoch_parameters(data_dir, tmp_path):
    config = _config(data_dir, num_epochs=3, steps_per_epoch=2, keep_checkpoints=10)
    train.train_and_evaluate(config, tmp_path)

    epoch_params = [_restore(tmp_path, config, step).state.params for step in (2, 4, 6)]
    last = _restore(tmp_path, config, 6).state
    assert int(last.swa_count) == 3
    expected = jax.tree.map(lambda *p: sum(np.asarray(x, np.float64) for x in p) / 3,
                            *epoch_params)
    for got, want in zip(jax.tree.leaves(last.swa_params), jax.tree.leaves(expected),
                         strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    # The parameters moved between epochs, so the mean is not any one of them.
    assert not checkpointing.tree_equal(epoch_params[0], epoch_params[2])


def test_early_stopping_stops_at_the_right_epoch_and_keeps_the_best(data_dir, tmp_path):
    # Validation F1 per epoch: 0.5, 0.7, +1e-7 (not an improvement: min_delta 1e-5), 0.6
    # -> with patience 2 the run stops after epoch 4; epoch 2 is the result.
    val_f1 = {1: 0.5, 2: 0.7, 3: 0.7 + 1e-7, 4: 0.6, 5: 0.9}
    seen = []

    def scripted(state, split, epoch):
        seen.append((epoch, split))
        f1 = val_f1[epoch] if split == "validation" else epoch / 10
        return {"f1": f1, "auroc": f1}

    config = _config(data_dir, num_epochs=5, steps_per_epoch=2, patience=2,
                     checkpoint_every_steps=1, keep_checkpoints=1)
    result = train.train_and_evaluate(config, tmp_path, evaluate_fn=scripted)

    assert [e for e, s in seen if s == "validation"] == [1, 2, 3, 4]
    assert result["best_epoch"] == 2 and result["best_step"] == 4
    assert result["epochs_completed"] == 4 and result["stopped_early"]
    assert result["test"] == {"f1": 0.2, "auroc": 0.2}
    with checkpointing.Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.best_step() == 4
        # Latest (epoch 4) and best (epoch 2) survive; mid-epoch steps were pruned.
        assert ckpt.all_steps() == [4, 8]
    # Rerunning the finished run trains nothing more and reports the same result.
    rerun = train.train_and_evaluate(config, tmp_path, evaluate_fn=scripted)
    assert _numbers(rerun) == _numbers(result)
    assert len(rerun["provenance"]["configs"]) == 2  # the rerun is on record
    assert len(seen) == 8


def test_evaluation_sees_every_example_exactly_once(data_dir):
    config = _config(data_dir)  # 100 examples in batches of 64: 2 batches, 28 padded
    mesh = _single_device_mesh()
    state, compiled = steps.create_train_state(config, mesh)
    out = steps.predict(compiled.eval, state.params, state.rngs, config, "validation", mesh)

    source = datasets.data_source("ptbxl", data_dir, "validation")
    assert np.array_equal(out["index"], np.arange(len(source)))
    examples = [source[i] for i in range(len(source))]
    assert np.array_equal(out["label"], [e["label"] for e in examples])
    # The same probabilities as one unpadded forward pass over the whole split.
    model = nnx.merge(compiled.definition.eval_graphdef, state.params, state.rngs)
    signals = np.stack([preprocessing.standardize(e["signal"]) for e in examples])
    want = jax.nn.softmax(model(signals), axis=-1)
    np.testing.assert_allclose(out["probs"], want, rtol=1e-5, atol=1e-6)


# --- errors ---------------------------------------------------------------------------------


def test_nonfinite_loss_stops_naming_the_step(data_dir, tmp_path):
    # Adam moves every weight by ~lr: after step 1 the weights are ~1e38 and the logits
    # of step 2 overflow.
    config = _config(data_dir, learning_rate=1e38, steps_per_epoch=4, log_every_steps=100)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step 2 "):
        train.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


def test_nonfinite_steps_are_skipped_and_counted(data_dir, tmp_path):
    one_step = _config(data_dir, learning_rate=1e38, steps_per_epoch=1)
    train.train_and_evaluate(one_step, tmp_path / "one")
    skipped = _config(data_dir, learning_rate=1e38, steps_per_epoch=4, nan_policy="skip")
    result = train.train_and_evaluate(skipped, tmp_path / "skip")

    assert result["nonfinite_steps"] == 3
    # Steps 2-4 were dropped: the parameters are exactly those after step 1.
    assert checkpointing.tree_equal(_restore(tmp_path / "skip", skipped).state.params,
                                    _restore(tmp_path / "one", one_step).state.params)
    logged = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text()
              .splitlines()]
    assert [x["nonfinite_steps"] for x in logged if x["split"] == "train"][-1] == 3


def test_incompatible_workdir_is_refused(data_dir, tmp_path):
    config = _config(data_dir, steps_per_epoch=1)
    train.train_and_evaluate(config, tmp_path)
    other = _config(data_dir, steps_per_epoch=1)
    other.model.d_model = 16
    other.dataset.builder_config = "random_split"
    with pytest.raises(ValueError, match="incompatible run") as error:
        train.train_and_evaluate(other, tmp_path)
    assert "model.d_model: 8 in the checkpoint, 16 now" in str(error.value)
    assert "dataset.builder_config" in str(error.value)


def test_unknown_config_key_is_refused(data_dir, tmp_path):
    config = _config(data_dir)
    config.unlock()
    config.train.learning_rte = 1e-3
    with pytest.raises(ValueError, match="unknown config key 'train.learning_rte'"):
        train.train_and_evaluate(config, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("section, field, value, message", [
    ("dataset", "num_classes", 3, r"labels must lie in \[0, 3\)"),
    ("input", "seq_len", 300, r"expects \(seq_len, num_channels\) = \(300, 12\)"),
])
def test_dataset_that_does_not_fit_the_model_is_refused(data_dir, tmp_path, section, field,
                                                        value, message):
    config = _config(data_dir)
    config[section][field] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


# --- seeds ----------------------------------------------------------------------------------


def test_seeds_run_in_subdirectories_and_aggregate(data_dir, tmp_path):
    config = _config(data_dir, steps_per_epoch=2)
    config.seeds = 2
    result = train.train_and_evaluate(config, tmp_path)

    per_seed = [json.loads((tmp_path / f"seed_{s}" / "results.json").read_text())
                for s in (41, 42)]
    assert [r["seed"] for r in per_seed] == [41, 42]
    assert per_seed[0]["test"] != per_seed[1]["test"]  # different seeds, different runs
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [41, 42] == result["seeds"]
    aurocs = [r["test"]["auroc"] for r in per_seed]
    assert saved["test"]["auroc"]["mean"] == pytest.approx(np.mean(aurocs))
    assert saved["test"]["auroc"]["std"] == pytest.approx(np.std(aurocs, ddof=1))
    assert "±" in saved["test_formatted"]["f1"]


# --- subprocesses: 8 devices, kill -9, the command line --------------------------------------

EIGHT_DEVICES = textwrap.dedent(
    """
    import json, os, sys
    # Optimisation level 0: a third of the compile time; the losses agree all the same.
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0")
    import jax
    from cardioformer_jax.core import sharding
    from cardioformer_jax.training import steps
    from tests.helpers import train_fixtures  # the repository is on PYTHONPATH

    assert jax.device_count() == 8
    config = train_fixtures.tiny_config(sys.argv[1])
    config.mesh.shape = (4, 2)
    out = {"losses": train_fixtures.loss_sequence(config, steps=6)}
    mesh = sharding.mesh_from_config(config)
    out["mesh"] = dict(mesh.shape)
    out["predict"] = train_fixtures.initial_predictions(config, mesh)
    config.train.batch_size = 12
    try:
        steps.check_fits(config, mesh)
    except ValueError as error:
        out["batch_error"] = str(error)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_eight_devices_give_the_same_losses_as_one(data_dir, tmp_path):
    script = tmp_path / "eight.py"
    script.write_text(EIGHT_DEVICES)
    proc = subprocess.run([sys.executable, str(script), str(data_dir)], cwd=REPO,
                          env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    eight = json.loads(line[len("RESULT"):])

    config = train_fixtures.tiny_config(data_dir)
    config.mesh.shape = (1, 1)
    one = train_fixtures.loss_sequence(config, steps=6, devices=jax.devices()[:1])
    assert eight["mesh"] == {"data": 4, "fsdp": 2}
    np.testing.assert_allclose(eight["losses"], one, rtol=2e-5)
    assert one[-1] < one[0]
    # Evaluation over 8 devices: every example once, same probabilities.
    one_predict = train_fixtures.initial_predictions(config, _single_device_mesh())
    assert eight["predict"]["index"] == list(range(100)) == one_predict["index"]
    np.testing.assert_allclose(eight["predict"]["probs"], one_predict["probs"], rtol=1e-4,
                               atol=1e-6)
    assert "train.batch_size=12 must be divisible by the 8 devices" in eight["batch_error"]


def _assert_killed_run_ends_as_the_reference(tmp_path, data_dir) -> list[dict]:
    """Both runs (``reference``, ``killed``) end at step 38 with equal state and numbers;
    returns their results.json."""
    config = train_fixtures.tiny_config(data_dir)
    final = {name: _restore(tmp_path / name, config) for name in ("reference", "killed")}
    assert final["reference"].step == final["killed"].step == 38
    assert checkpointing.tree_equal(final["reference"].state, final["killed"].state)
    results = [json.loads((tmp_path / name / "results.json").read_text())
               for name in ("reference", "killed")]
    assert _numbers(results[0]) == _numbers(results[1])
    return results


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(data_dir, tmp_path):
    overrides = ["--config.train.num_epochs=2", "--config.train.checkpoint_every_steps=8"]
    env = _subprocess_env()
    # The uninterrupted reference runs alongside the run that gets killed.
    reference = subprocess.Popen(_main_command(tmp_path / "reference", data_dir, *overrides),
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    command = _main_command(tmp_path / "killed", data_dir, *overrides)
    checkpoints = tmp_path / "killed" / "checkpoints"
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        # SIGKILL as soon as the first checkpoint (step 8 of 38) is committed: mid-epoch,
        # possibly while the next one is being written.
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.time() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "killed" / "results.json").exists(), "killed too late"

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of step" in resumed.stderr
    _, reference_log = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_log[-3000:]

    results = _assert_killed_run_ends_as_the_reference(tmp_path, data_dir)
    assert [len(r["provenance"]["configs"]) for r in results] == [1, 2]


def test_command_line_names_the_build_command_for_a_missing_dataset(tmp_path):
    missing = tmp_path / "no_data"
    proc = subprocess.run(_main_command(tmp_path / "work", missing), cwd=REPO,
                          env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "python -m cardioformer_jax.build_dataset ptbxl" in proc.stderr
    assert f"--data_dir={missing}" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- resume integrity -------------------------------------------------------------------------


def test_resume_refuses_a_change_that_alters_the_run_unless_allowed(data_dir, tmp_path):
    config = _config(data_dir, steps_per_epoch=2)
    train.train_and_evaluate(config, tmp_path)
    changed = _config(data_dir, steps_per_epoch=2, learning_rate=3e-3, num_epochs=2)
    changed.model.dropout = 0.2
    with pytest.raises(ValueError, match="alter what the run computes") as error:
        train.train_and_evaluate(changed, tmp_path)
    message = str(error.value)
    assert "train.learning_rate: 0.001 in config.json, 0.003 now" in message
    assert "model.dropout" in message and "--allow_config_change=" in message
    assert "num_epochs" not in message  # extending a run is not a change of what it computes
    assert json.loads((tmp_path / "config.json").read_text())["train"]["learning_rate"] == 1e-3

    # The changed dropout is a model no other test compiles.
    result = train.train_and_evaluate(
        changed, tmp_path, allow_config_change=["train.learning_rate", "model.dropout"])
    assert result["epochs_completed"] == 2
    history = checkpointing.config_history(tmp_path)
    assert [h["resumed"] for h in history] == [False, True]
    assert set(history[1]["changed"]) == {"train.learning_rate", "model.dropout",
                                          "train.num_epochs"}
    assert history[1]["config"]["train"]["learning_rate"] == 3e-3
    provenance = json.loads((tmp_path / "results.json").read_text())["provenance"]
    assert [c["sha256"] for c in provenance["configs"]] == [
        checkpointing.config_digest(config), checkpointing.config_digest(changed)]
    dataset = provenance["dataset"]
    assert (dataset["name"], dataset["builder_config"]) == ("ptbxl", "default")
    assert dataset["splits"] == {"train": 310, "validation": 100, "test": 100}


def test_allowed_patience_change_applies_to_the_restored_early_stopping(data_dir, tmp_path):
    def run(patience, num_epochs, **allow):
        config = _config(data_dir, steps_per_epoch=1, num_epochs=num_epochs,
                         patience=patience, min_delta=10.0)  # no epoch after the first improves
        return train.train_and_evaluate(config, tmp_path, **allow)

    assert run(patience=1, num_epochs=5)["epochs_completed"] == 2  # stopped early
    resumed = run(patience=3, num_epochs=5, allow_config_change=["train.patience"])
    assert resumed["epochs_completed"] == 4 and resumed["stopped_early"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_unreadable_latest_checkpoint_resumes_from_the_previous_one(data_dir, tmp_path):
    overrides = dict(steps_per_epoch=4, checkpoint_every_steps=2, keep_checkpoints=3)
    reference = train.train_and_evaluate(_config(data_dir, num_epochs=2, **overrides),
                                         tmp_path / "uninterrupted")
    run_dir = tmp_path / "run"
    train.train_and_evaluate(_config(data_dir, num_epochs=1, **overrides), run_dir)
    checkpoints = run_dir / checkpointing.CHECKPOINT_DIR
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [2, 4]
    # The state's metadata file, cut short: the restore fails before any array is read
    # (a cut data file fails the same way, but leaves Orbax's other read tasks to report
    # their errors at exit).
    _truncate(checkpoints / "4" / "state" / "_METADATA")

    resumed = train.train_and_evaluate(_config(data_dir, num_epochs=2, **overrides), run_dir)
    (kept,) = (run_dir / checkpointing.UNREADABLE_DIR).iterdir()
    assert kept.name.startswith("4_") and (kept / "state").is_dir()  # set aside, not deleted
    # From step 2 the run redid steps 3-4 exactly: same result as never interrupted.
    for field in ("test", "validation", "best_step", "epochs_completed"):
        assert resumed[field] == reference[field], field
    config = _config(data_dir, num_epochs=2, **overrides)
    assert checkpointing.tree_equal(_restore(run_dir, config).state.params,
                                    _restore(tmp_path / "uninterrupted", config).state.params)


def test_command_line_refuses_a_changed_resume_with_a_message_not_a_traceback(data_dir,
                                                                              tmp_path):
    train.train_and_evaluate(_config(data_dir, steps_per_epoch=1), tmp_path)
    command = _main_command(tmp_path, data_dir, "--config.train.steps_per_epoch=1",
                            "--config.train.learning_rate=0.5")
    proc = subprocess.run(command, cwd=REPO, env=_subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: resuming" in proc.stderr and "train.learning_rate" in proc.stderr
    assert "--allow_config_change=train.learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_on_a_dataset_with_another_fingerprint_is_refused(data_dir, tmp_path):
    config = _config(data_dir, steps_per_epoch=1)
    train.train_and_evaluate(config, tmp_path)
    recorded = json.loads((tmp_path / checkpointing.DATASET_FILE).read_text())
    assert recorded["fingerprint_sha256"]  # the build's fingerprint is on record
    # As if the run had been trained on another build of the dataset.
    other = {**recorded, "fingerprint_sha256": "0" * 64}
    (tmp_path / checkpointing.DATASET_FILE).write_text(json.dumps(other))
    more = _config(data_dir, steps_per_epoch=1, num_epochs=2)
    with pytest.raises(checkpointing.ResumeConfigError, match="mix two datasets"):
        train.train_and_evaluate(more, tmp_path)
    result = train.train_and_evaluate(more, tmp_path,
                                      allow_config_change=["dataset.fingerprint"])
    assert result["epochs_completed"] == 2
    assert "dataset.fingerprint" in checkpointing.config_history(tmp_path)[-1]["changed"]


@pytest.mark.slow
def test_run_killed_at_random_moments_ends_identical_to_an_uninterrupted_one(data_dir,
                                                                             tmp_path):
    overrides = ["--config.train.num_epochs=2", "--config.train.checkpoint_every_steps=4"]
    env = _subprocess_env()
    reference = subprocess.Popen(_main_command(tmp_path / "reference", data_dir, *overrides),
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    command = _main_command(tmp_path / "killed", data_dir, *overrides)
    checkpoints = tmp_path / "killed" / "checkpoints"
    rng = np.random.default_rng(15)
    kills = 0

    def steps() -> set[str]:
        return {p.name for p in checkpoints.iterdir()} if checkpoints.is_dir() else set()

    for _ in range(3):  # SIGKILL at a random moment after a new checkpoint appears
        before = steps()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 240
            while steps() == before and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))  # mid-step, mid-save or mid-evaluation
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        if (tmp_path / "killed" / "results.json").exists():
            break
    assert kills >= 2, "the run finished before it could be killed twice"
    if not (tmp_path / "killed" / "results.json").exists():
        finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
    _, reference_log = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_log[-3000:]

    _assert_killed_run_ends_as_the_reference(tmp_path, data_dir)
