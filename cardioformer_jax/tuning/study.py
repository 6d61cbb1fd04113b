"""The study, its objective and the worker loop of `cardioformer_jax.tune` (docs/tuning.md)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
import warnings
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import optuna
import sqlalchemy.exc
from absl import logging

from cardioformer_jax import config_lib, models
from cardioformer_jax.core import tasks
from cardioformer_jax.data import demo, input_pipeline
from cardioformer_jax.training import train
from cardioformer_jax.tuning import report, search

STUDY_DB = "study.db"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Trials that count against the budget when a worker decides whether to start another.
TAKEN = (*FINISHED, optuna.trial.TrialState.RUNNING)
PRUNERS = ("median", "none")
# User attribute of a trial: its run folder under the tuning workdir. A retry inherits it
# (the retry callback copies user attributes) and resumes that folder.
RUN_ATTR = "run"
# Errors that end a trial as failed and let the worker go on: a diverging configuration
# (train.nan_policy="stop"). Anything else (a missing dataset, a bug) stops the worker.
TRIAL_ERRORS = (FloatingPointError,)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The tuner's options (the command's flags)."""

    trials: int  # finished (complete + pruned) trials wanted in the study
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///<workdir>/study.db
    study_name: str | None = None  # None: "<model_name>-<dataset>"
    search: str | None = None  # search-space file; None: configs/search/<model_name>.py
    seed: int = 0
    worker: int = 0  # distinct per concurrent worker: seeds its sampler differently
    pruner: str = "median"
    pruner_startup_trials: int = 5  # no pruning until this many trials have finished
    pruner_warmup_epochs: int = 2  # nor before a trial has reported this many epochs
    heartbeat_interval: int = 60  # seconds
    grace_period: int = 300  # seconds without a heartbeat before a trial counts as dead
    max_retry: int = 3  # retries of a dead worker's trial

    def __post_init__(self) -> None:
        minimum = {"trials": 1, "worker": 0, "pruner_startup_trials": 0,
                   "pruner_warmup_epochs": 0, "heartbeat_interval": 1, "max_retry": 0}
        problems = [f"{name}={getattr(self, name)} must be >= {low}"
                    for name, low in minimum.items() if getattr(self, name) < low]
        if self.pruner not in PRUNERS:
            problems.append(f"pruner={self.pruner!r} must be one of {PRUNERS}")
        if not self.grace_period > self.heartbeat_interval:
            problems.append(f"grace_period={self.grace_period} must exceed "
                            f"heartbeat_interval={self.heartbeat_interval}")
        if problems:
            raise ValueError("invalid tuning settings: " + "; ".join(problems))


def storage_url(workdir: str | os.PathLike, storage: str | None) -> str:
    """`storage`, or the SQLite database ``<workdir>/study.db``."""
    return storage or f"sqlite:///{Path(workdir).resolve() / STUDY_DB}"


def make_storage(url: str, settings: Settings) -> optuna.storages.RDBStorage:
    """The study database with heartbeats and retries of dead workers' trials."""
    # Several local workers write one SQLite file: wait for the lock instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats and retries: experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback = optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=settings.max_retry, inherit_intermediate_values=True)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period, heartbeat_stale_trial_callback=callback)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # Workers started together on a new database race to create its tables.
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def make_sampler(settings: Settings) -> optuna.samplers.TPESampler:
    """TPE seeded by (seed, worker): concurrent workers must not propose the same trials."""
    entropy = np.random.SeedSequence([settings.seed, settings.worker]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(entropy))


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                       n_warmup_steps=settings.pruner_warmup_epochs)


def default_study_name(config: ml_collections.ConfigDict) -> str:
    dataset = config.dataset.name + (f"-{config.dataset.builder_config}"
                                     if config.dataset.builder_config else "")
    return f"{models.model_name(config)}-{dataset}"


def _protocol(config: ml_collections.ConfigDict, space_path: Path) -> dict[str, Any]:
    """What every trial of a study must share; a worker with another one is refused."""
    return {"model_name": models.model_name(config), "dataset": config.dataset.name,
            "builder_config": config.dataset.builder_config,
            "multilabel": tasks.from_config(config).multilabel,
            "selection_metric": config.train.selection_metric,
            "search_space": space_path.name}


def open_study(url: str, name: str, settings: Settings, protocol: dict[str, Any]
               ) -> optuna.Study:
    """Creates the study or joins it; checks it tunes the same protocol."""
    study = optuna.create_study(
        storage=make_storage(url, settings), study_name=name, direction="maximize",
        sampler=make_sampler(settings), pruner=make_pruner(settings), load_if_exists=True)
    existing = study.user_attrs.get("protocol")
    if existing is None:
        study.set_user_attr("protocol", protocol)
    elif existing != protocol:
        raise ValueError(f"study {name!r} tunes {existing}, this config {protocol}; use "
                         f"another --study or the study's config")
    return study


def budget_trials(study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    """The first `trials` finished trials by number: the budget every architecture gets."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    return sorted(finished, key=lambda t: t.number)[:trials]


def _taken(study: optuna.Study) -> int:
    """Finished plus running trials (dead workers' trials failed first: no budget held)."""
    optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=TAKEN))


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _prepare_data(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """Synthetic configs: the twin built once, under a file lock, in ``workdir/data``."""
    if config.dataset.synthetic_patients <= 0:
        return config
    with open(workdir / "data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = demo.prepare_synthetic_dataset(config, workdir)
    config.dataset.synthetic_patients = 0  # data_dir now points at the shared build
    return config


def _objective(space: search.SearchSpace, config: ml_collections.ConfigDict, workdir: Path,
               worker: int):
    metric = config.train.selection_metric

    def objective(trial: optuna.Trial) -> float:
        trial_config = search.trial_config(space, trial, config)
        run = trial.user_attrs.get(RUN_ATTR) or f"trial_{trial.number}"
        trial.set_user_attr(RUN_ATTR, run)
        trial.set_user_attr("worker", worker)
        logging.info("trial %d in %s: %s", trial.number, workdir / run, trial.params)

        def report_epoch(epoch: int, results: dict[str, dict[str, float]]) -> None:
            value = float(results[train.VALIDATION_SPLIT][metric])
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric} {value:.4f} after epoch {epoch}")

        result = train.train_and_evaluate(
            trial_config, workdir / run, evaluate_splits=(train.VALIDATION_SPLIT,),
            on_epoch_end=report_epoch)
        if result["validation"] is None:
            raise RuntimeError(f"trial {trial.number} finished without an evaluated epoch")
        trial.set_user_attr("best_epoch", result["best_epoch"])
        trial.set_user_attr("epochs_completed", result["epochs_completed"])
        return float(result["validation"][metric])

    return objective


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
        settings: Settings) -> dict[str, Any]:
    """One worker: joins (or creates) the study, runs trials until the study has
    ``settings.trials`` finished ones, then writes the outputs (`report.write_outputs`) of
    the trials finished so far. Returns the outputs' summary."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = ml_collections.ConfigDict(config.to_dict())
    config_lib.validate_config(base)
    config = ml_collections.ConfigDict(base.to_dict())
    if config.seeds != 1:
        logging.info("tuning trains one seed per trial (config.seeds=%d is for the final run "
                     "of best_config.py)", config.seeds)
        config.seeds = 1
    config = _prepare_data(config, workdir)
    # A missing or mismatched dataset is an error now, not a failed trial.
    input_pipeline.check_dataset(config, (train.TRAIN_SPLIT, train.VALIDATION_SPLIT))
    space_path = Path(settings.search) if settings.search else search.default_path(config)
    space = search.load(space_path)
    url = storage_url(workdir, settings.storage)
    name = settings.study_name or default_study_name(config)
    study = open_study(url, name, settings, _protocol(config, space_path))

    objective = _objective(space, config, workdir, settings.worker)
    taken = _taken(study)
    logging.info("study %r (%s): %d of %d trials to go; worker %d", name,
                 report.public_url(url), max(settings.trials - taken, 0), settings.trials,
                 settings.worker)
    while taken < settings.trials:
        # A worker starts a trial only while finished + running trials are under the budget,
        # so concurrent workers do not overshoot it. Failed trials (TRIAL_ERRORS) do not
        # count: another round replaces them, unless a whole round failed (then something
        # is wrong with every trial; see the log).
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        study.optimize(
            objective, n_trials=settings.trials - taken,
            callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=TAKEN)],
            catch=TRIAL_ERRORS, gc_after_trial=True)
        if len(study.get_trials(deepcopy=False, states=FINISHED)) == finished:
            logging.warning("every trial of this round failed; stopping this worker")
            break
        taken = _taken(study)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if running:
        logging.info("budget taken; other workers still run trial(s) %s, and the last "
                     "worker to stop writes the outputs with them",
                     ", ".join(str(t.number) for t in running))
    counted = budget_trials(study, settings.trials)
    return report.write_outputs(study, counted, best_trial(counted), base, space, workdir,
                                url=url, search_path=space_path, budget=settings.trials)
