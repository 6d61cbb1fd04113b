"""The tuner end to end on the tiny synthetic PTB-XL build, real Optuna and real training:
two worker commands sharing one SQLite study, the retry of a dead worker's trial, the test
split never read. The search spaces and output files alone: tests/unit/test_tuning_search.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import optuna
import pytest

from cardioformer_jax import config_lib
from cardioformer_jax.data import datasets
from cardioformer_jax.training import train
from cardioformer_jax.tuning import report, search, study
from tests.conftest import TINY_PTBXL_PATIENTS
from tests.helpers import REPO, run_fixtures, train_fixtures

TINY_SEARCH = REPO / "tests" / "helpers" / "tiny_search.py"


@pytest.fixture(scope="module")
def data_dir(tiny_ptbxl):
    return tiny_ptbxl[1]


def _env():
    """The repository importable (configs/, tests/), CPU, and the session's compilation
    cache (set in os.environ by tests/conftest.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return env


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _check_no_test_split(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    splits = {row["split"] for row in rows}
    assert train.VALIDATION_SPLIT in splits and train.TEST_SPLIT not in splits, splits


def _check_outputs(workdir, summary):
    config = report.load_config_file(workdir / report.BEST_CONFIG)
    config_lib.validate_config(config)
    best = json.loads((workdir / report.BEST_TRIAL).read_text())
    assert best["best"]["number"] == summary["best"]["number"]
    assert best["best"]["number"] in best["counted_trials"]
    assert config.train.learning_rate == best["best"]["params"]["learning_rate"]
    text = (workdir / report.REPORT).read_text()
    assert "## Best trial" in text and "the test split was not read" in text
    assert (workdir / report.PLOTS / report.HISTORY_PNG).stat().st_size > 0
    return config


def test_dead_workers_trial_is_retried_in_its_folder(data_dir, tmp_path, monkeypatch):
    """A RUNNING trial whose heartbeat stopped (its worker was killed) is failed by the next
    worker and retried with the same parameters in the same run folder; the worker reads
    the train and validation splits only."""
    workdir = tmp_path / "tune"
    workdir.mkdir()
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), data_dir)
    settings = study.Settings(trials=1, search=str(TINY_SEARCH), heartbeat_interval=1,
                              grace_period=2, pruner="none")
    url = study.storage_url(workdir, None)
    dead = optuna.create_study(storage=study.make_storage(url, settings),
                               study_name=study.default_study_name(config),
                               direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # ask/tell has no heartbeat thread
        trial = dead.ask()
    search.trial_config(search.load(TINY_SEARCH), trial, config)
    trial.set_user_attr(study.RUN_ATTR, "trial_0")
    dead._storage.record_heartbeat(trial._trial_id)  # what the killed worker's thread did
    time.sleep(settings.grace_period + 1)

    read = []
    data_source = datasets.data_source
    monkeypatch.setattr(datasets, "data_source",
                        lambda name, data_dir, split, *a, **k: read.append(split)
                        or data_source(name, data_dir, split, *a, **k))
    summary = study.run(config, workdir, settings)

    assert train.TEST_SPLIT not in read and {"train", "validation"} <= set(read)
    first, retry = _load(url, "cardioformer-ptbxl").get_trials()
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params
    assert retry.user_attrs[study.RUN_ATTR] == "trial_0"
    assert not (workdir / "trial_1").exists()
    results = json.loads((workdir / "trial_0" / train.RESULTS_FILE).read_text())
    assert results["test"] is None and retry.value == results["validation"]["f1"]
    _check_no_test_split(workdir / "trial_0")
    assert summary["best"]["number"] == 1 and summary["best"]["retry_of"] == 0
    _check_outputs(workdir, summary)
    # One complete trial: no importances, said so in the report.
    assert not (workdir / report.PLOTS / report.IMPORTANCES_PNG).exists()
    assert "need 2 complete trials" in (workdir / report.REPORT).read_text()
    # The budget is met: another worker runs no trial and rewrites the same outputs.
    again = study.run(config, workdir, settings)
    assert len(_load(url, "cardioformer-ptbxl").get_trials()) == 2
    assert again["best"]["number"] == 1
    # A trial another live worker is running (fresh heartbeat) holds a place in the
    # budget: with room for one more trial, this worker starts none.
    live_settings = dataclasses.replace(settings, trials=2, grace_period=600)
    live = optuna.load_study(study_name="cardioformer-ptbxl",
                             storage=study.make_storage(url, live_settings))
    with pytest.warns(UserWarning, match="Heartbeat"):
        running = live.ask()
    live._storage.record_heartbeat(running._trial_id)
    study.run(config, workdir, live_settings)
    states = [t.state for t in _load(url, "cardioformer-ptbxl").get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE,
                      optuna.trial.TrialState.RUNNING]


def test_synthetic_twin_is_built_once_for_every_trial(tmp_path):
    """A synthetic config's twin is built in the tuning workdir, and the trials read that
    build instead of each writing its own into its run folder."""
    workdir = tmp_path / "tune"
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tmp_path / "unused")
    config.dataset.synthetic_patients = TINY_PTBXL_PATIENTS
    settings = study.Settings(trials=2, search=str(TINY_SEARCH), pruner="none")
    summary = study.run(config, workdir, settings)

    assert (workdir / "data" / "tfds").is_dir() and not (tmp_path / "unused").exists()
    for number in range(2):
        run_dir = workdir / f"trial_{number}"
        assert (run_dir / train.RESULTS_FILE).is_file() and not (run_dir / "data").exists()
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["dataset"]["data_dir"] == str(workdir / "data" / "tfds")
    # The best config is the user's own: it still builds its twin where it runs.
    best = report.load_config_file(workdir / report.BEST_CONFIG)
    assert best.dataset.synthetic_patients == TINY_PTBXL_PATIENTS
    assert summary["best"] is not None


@pytest.mark.slow
def test_two_workers_share_one_study(data_dir, tmp_path):
    workdir = tmp_path / "tune"
    command = [sys.executable, "-m", "cardioformer_jax.tune",
               "--config=tests/helpers/train_fixtures.py", f"--workdir={workdir}",
               f"--config.dataset.data_dir={data_dir}", "--config.train.num_epochs=2",
               "--config.train.steps_per_epoch=2", "--config.train.eval_batch_size=128",
               f"--search={TINY_SEARCH}", "--trials=4",
               "--pruner_startup_trials=1", "--pruner_warmup_epochs=0"]
    workers = [subprocess.Popen([*command, f"--worker={k}"], cwd=REPO, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for k in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
        assert "best trial" in out
    url = study.storage_url(workdir, None)
    trials = _load(url, "cardioformer-ptbxl").get_trials()
    finished = [t for t in trials if t.state in study.FINISHED]
    # The budget (running trials hold places in it); one more only if both workers passed
    # the budget check at the same instant.
    assert 4 <= len(finished) <= 5 and len(finished) == len(trials), trials
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    for t in trials:
        run_dir = workdir / t.user_attrs["run"]
        assert t.user_attrs["run"] == f"trial_{t.number}"
        _check_no_test_split(run_dir)
        if t.state == optuna.trial.TrialState.COMPLETE:
            results = json.loads((run_dir / train.RESULTS_FILE).read_text())
            assert results["test"] is None and results["validation"] is not None
            assert t.value == results["validation"]["f1"]
            assert sorted(t.intermediate_values) == [1, 2]
        else:  # pruned after an epoch: the run stopped there, without results.json
            assert sorted(t.intermediate_values) in ([1], [1, 2])
            assert not (run_dir / train.RESULTS_FILE).exists()
    summary = json.loads((workdir / report.BEST_TRIAL).read_text())
    _check_outputs(workdir, summary)
    assert summary["counted_trials"] == sorted(t.number for t in finished)[:4]
    complete = [t for t in finished if t.number in summary["counted_trials"]
                and t.state == optuna.trial.TrialState.COMPLETE]
    assert max(t.value for t in complete) == summary["best"]["value"]
    importances = workdir / report.PLOTS / report.IMPORTANCES_PNG
    assert importances.exists() == (len(complete) >= 2)


def test_help_lists_the_flags():
    proc = subprocess.run([sys.executable, "-m", "cardioformer_jax.tune", "--help"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "python -m cardioformer_jax.tune" in proc.stdout
    for flag in ("config", "workdir", "trials", "storage", "study", "search", "worker",
                 "pruner", "heartbeat_interval", "grace_period"):
        assert f"  --{flag}:" in proc.stdout, flag


def test_missing_dataset_is_an_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cardioformer_jax.tune", "--config=tests/helpers/train_fixtures.py",
         f"--workdir={tmp_path / 'tune'}", f"--config.dataset.data_dir={tmp_path / 'none'}",
         "--trials=2"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr and "build_dataset" in proc.stderr
    assert not (tmp_path / "tune" / study.STUDY_DB).exists()
