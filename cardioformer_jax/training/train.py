"""Training and evaluation loop (docs/training.md), from one CPU to a multi-host mesh.

* The jitted state, step and evaluation programs are in `steps.py`: one buffer-donating
  step per batch (cross-entropy, or binary cross-entropy per class for a multi-label
  dataset, gradient clipping at global norm 4.0, Adam 1e-4).
* After each epoch the SWA average takes the parameters with equal weight (`swa.py`);
  validation and test are evaluated with the averaged model on every example exactly
  once; early stopping watches the validation metric ``train.selection_metric`` (the
  paper: macro-F1; patience 10, min_delta 1e-5) and the best epoch's test metrics are the
  result (``results.json``).
* Checkpoints (`checkpointing.py`) every ``train.checkpoint_every_steps`` and at every epoch
  end hold everything a resumed run needs, including the data iterator's position, so a
  run killed at any moment and restarted with the same command ends with the same
  parameters, bit for bit, as one that was never interrupted.
* ``config.seeds > 1`` runs the protocol for consecutive seeds in ``seed_<s>/``
  subdirectories, trained together in one vectorised program (`vectorized_seeds`;
  ``train.vectorize_seeds=False`` or a custom `evaluate_fn`/`on_epoch_end`: one after
  another), and reports the mean and std of each metric.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from cardioformer_jax import config_lib, models
from cardioformer_jax.core import logging_utils, metrics, paths, sharding
from cardioformer_jax.data import demo, input_pipeline
from cardioformer_jax.training import checkpointing, steps
from cardioformer_jax.training.early_stopping import EarlyStopping

RESULTS_FILE = "results.json"
# Split names of the built TFDS datasets.
TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT = "train", "validation", "test"

# `evaluate_fn(state, split, epoch) -> metrics` replaces the real evaluation (tests script
# the metric sequence the early stopping sees with it).
EvaluateFn = Callable[["steps.TrainState", str, int], Mapping[str, float]]
# `on_epoch_end(epoch, results)`: called after each epoch's evaluation and checkpoint with
# the metrics by split (the tuner reports the validation metric to Optuna, which may prune
# the run by raising from it).
EpochEndFn = Callable[[int, Mapping[str, Mapping[str, float]]], None]


# --- the loop -------------------------------------------------------------------------------


class StepLog:
    """Device scalars of recent steps, fetched only at log/checkpoint points so the
    host never waits for the device between steps."""

    def __init__(self) -> None:
        self.first_step = 0
        self.values: list[dict[str, jax.Array]] = []
        self.start = time.perf_counter()

    def add(self, step_metrics: dict[str, jax.Array]) -> None:
        self.values.append(step_metrics)

    def fetch(self) -> tuple[int, dict[str, np.ndarray], float]:
        """(first step number, stacked host values, seconds since the last fetch); resets."""
        host = jax.device_get(self.values)
        stacked = {k: np.asarray([v[k] for v in host]) for k in (host[0] if host else {})}
        now = time.perf_counter()
        elapsed, first = now - self.start, self.first_step
        self.first_step += len(self.values)
        self.values, self.start = [], now
        return first, stacked, elapsed


class Progress:
    """``step N/total``, percentage and ETA for the training log lines (`format_progress`).

    The clock starts at the first `describe` call, which the loop makes right after this
    process's first step: the rate then leaves out that step's compilation (and, in a
    resumed run, the steps done before). Evaluation and checkpointing between epochs stay
    in the rate, so the ETA estimates when the run ends, not pure training time.
    """

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.clock_step: int | None = None  # the step at which the clock started
        self.clock_start = 0.0

    def describe(self, step: int) -> str:
        now = time.perf_counter()
        if self.clock_step is None:
            self.clock_step, self.clock_start = step, now
        return logging_utils.format_progress(step, self.total_steps, now - self.clock_start,
                                             timed_steps=step - self.clock_step)


def _finite_steps(values: dict[str, np.ndarray]) -> np.ndarray:
    """Per logged step: loss and gradient norm both finite (what the step itself tests)."""
    return np.isfinite(values["loss"]) & np.isfinite(values["grad_norm"])


def check_finite(values: dict[str, np.ndarray], first_step: int, epoch: int,
                  policy: str) -> None:
    """With ``nan_policy='stop'``, raises on the first step whose loss or gradients were not
    finite (a finite loss can come with infinite or NaN gradients)."""
    bad = np.flatnonzero(~_finite_steps(values))
    if bad.size and policy == "stop":
        i = int(bad[0])
        what, value = (("loss", values["loss"][i]) if not np.isfinite(values["loss"][i])
                       else ("gradient norm", values["grad_norm"][i]))
        raise FloatingPointError(
            f"non-finite training {what} ({value}) at step {first_step + i + 1} (epoch "
            f"{epoch}); stopping (train.nan_policy='stop'). Lower train.learning_rate, or "
            f"set train.nan_policy='skip' to drop such updates.")


def _resume(checkpoints: checkpointing.Checkpointer, abstract: steps.TrainState,
            train_input: input_pipeline.TrainInput
            ) -> tuple[steps.TrainState | None, dict[str, Any]]:
    restored = checkpoints.restore_latest_readable(abstract, train_input)
    if restored is None:
        return None, {}
    logging.info("resumed from the checkpoint of step %d (epoch %d, %d steps into it)",
                 restored.step, restored.meta["epoch"], restored.meta["step_in_epoch"])
    return restored.state, restored.meta


def train_seed(config: ml_collections.ConfigDict, run_dir: str | os.PathLike, *,
               evaluate_fn: EvaluateFn | None = None,
               allow_config_change: Sequence[str] = (),
               evaluate_splits: Sequence[str] = (VALIDATION_SPLIT, TEST_SPLIT),
               on_epoch_end: EpochEndFn | None = None) -> dict[str, Any]:
    """The docs/training.md protocol for one seed in `run_dir`, resuming a previous run there.

    A resumed run refuses config changes that alter what it computes unless
    `allow_config_change` names them (`checkpointing.check_run_config`). Returns (and
    writes to ``run_dir/results.json``) the best epoch's metrics, with the configs and the
    dataset that produced them. `evaluate_splits` without the test split (tuning) never
    reads it: ``"test"`` is then None. `on_epoch_end` see `EpochEndFn`.
    """
    if VALIDATION_SPLIT not in evaluate_splits:
        raise ValueError(f"evaluate_splits={tuple(evaluate_splits)} must include "
                         f"{VALIDATION_SPLIT!r}: early stopping follows it")
    run_dir = paths.resolve_path(run_dir)
    train_config = config.train
    mesh = sharding.mesh_from_config(config)
    steps.check_fits(config, mesh)
    try:
        dataset = input_pipeline.dataset_identity(config)
    except FileNotFoundError:
        dataset = None  # not built: `check_dataset` below says how to build it
    checkpointing.check_run_config(run_dir, config, allow=allow_config_change, dataset=dataset)
    # Shapes and labels against the model, before compiling; of the splits the run reads.
    input_pipeline.check_dataset(config, (TRAIN_SPLIT, *evaluate_splits))

    compiled = steps.programs(config, mesh)
    train_input = input_pipeline.create_train_input(config, mesh)
    steps_per_epoch = train_input.steps_per_epoch
    if train_config.steps_per_epoch > 0:
        steps_per_epoch = train_config.steps_per_epoch

    checkpoints = checkpointing.Checkpointer(run_dir / checkpointing.CHECKPOINT_DIR,
                                             keep=train_config.keep_checkpoints,
                                             async_save=train_config.async_checkpointing)
    writer = logging_utils.MetricWriter(run_dir)
    try:
        state, meta = _resume(checkpoints, compiled.abstract_state, train_input)
        if state is not None:
            state = steps.set_learning_rate(state, train_config.learning_rate, compiled.shardings)
        else:
            state = compiled.init(*steps.init_args(config))
            logging.info("new run in %s: %s parameters, mesh %s, %d steps per epoch",
                         run_dir, f"{models.count_params(state.params):,}", dict(mesh.shape),
                         steps_per_epoch)
        early = EarlyStopping(patience=train_config.patience, min_delta=train_config.min_delta)
        if "early_stopping" in meta:
            # The progress comes from the checkpoint, the rules from the config (they can
            # only differ when the user allowed the change).
            restored = early_stopping_from_meta(meta["early_stopping"])
            early = dataclasses.replace(
                restored, patience=early.patience, min_delta=early.min_delta,
                should_stop=restored.num_bad_epochs >= early.patience)
        best = meta.get("best")
        epoch, step_in_epoch = int(meta.get("epoch", 0)), int(meta.get("step_in_epoch", 0))
        step = int(meta.get("step", 0))

        if evaluate_fn is None:
            evaluate_fn = functools.partial(_evaluate_swa, compiled.eval, config, mesh)

        def save(best_epoch: int | None = None) -> None:
            checkpoints.save(step, state, {
                "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
                "early_stopping": early.to_dict(), "best": best,
                "steps_per_epoch": steps_per_epoch}, train_input, best_epoch_rank=best_epoch)

        log = StepLog()
        log.first_step = start_step = step
        # The steps the run takes if it does not stop early.
        progress = Progress(train_config.num_epochs * steps_per_epoch)
        while epoch < train_config.num_epochs and not early.should_stop:
            while step_in_epoch < steps_per_epoch:
                state, step_metrics = compiled.train(state, next(train_input))
                log.add(step_metrics)
                step += 1
                step_in_epoch += 1
                # Also right after this process's first step: that log's throughput
                # holds the compilation, later ones are clean.
                if step % train_config.log_every_steps == 0 or step == start_step + 1:
                    _log_train(log, writer, epoch + 1, train_config, state, progress)
                if (step % train_config.checkpoint_every_steps == 0
                        and step_in_epoch < steps_per_epoch):  # epoch ends save below
                    # NaN check first
                    _log_train(log, writer, epoch + 1, train_config, state, progress)
                    save()
            _log_train(log, writer, epoch + 1, train_config, state, progress)
            epoch += 1
            step_in_epoch = 0
            state = compiled.swa(state)
            results = {split: dict(evaluate_fn(state, split, epoch))
                       for split in evaluate_splits}
            early, is_best = early.update(
                results[VALIDATION_SPLIT][train_config.selection_metric], epoch)
            if is_best:
                best = {"epoch": epoch, "step": step, **results}
            for split, values in results.items():
                writer.write_scalars(step, values, split=split)
                logging_utils.log_scalars(values, step=step, split=f"{split} epoch {epoch}")
            save(best_epoch=epoch if is_best else None)
            log.start = time.perf_counter()  # evaluation time is not training throughput
            if on_epoch_end is not None:
                on_epoch_end(epoch, results)
        checkpoints.wait_until_finished()
        final_state = state
    finally:
        writer.close()
        checkpoints.close()
        train_input.close()

    return write_seed_result(config, run_dir, best=best, epochs_completed=epoch,
                             stopped_early=early.should_stop,
                             nonfinite_steps=int(jax.device_get(final_state.nonfinite_steps)),
                             dataset=dataset)


def write_seed_result(config: ml_collections.ConfigDict, run_dir: epath.Path, *,
                      best: Mapping[str, Any] | None, epochs_completed: int,
                      stopped_early: bool, nonfinite_steps: int,
                      dataset: Mapping[str, Any] | None) -> dict[str, Any]:
    """One seed's ``results.json`` (process 0 writes it) and closing log line; returns it.

    `best`: ``{"epoch", "step", "validation", "test"}`` of the best epoch (None before
    one was evaluated).
    """
    result = {
        "seed": int(config.seed),
        "best_epoch": None if best is None else best["epoch"],
        "best_step": None if best is None else best["step"],
        "epochs_completed": int(epochs_completed),
        "stopped_early": bool(stopped_early),
        "nonfinite_steps": int(nonfinite_steps),
        "validation": None if best is None else best[VALIDATION_SPLIT],
        "test": None if best is None else best.get(TEST_SPLIT),
        # What produced these numbers: every config the run started or resumed with
        # (config_history.jsonl holds them in full) and the dataset it read.
        "provenance": {
            "configs": [{"sha256": e["sha256"], "time": e["time"], "changed": e["changed"]}
                        for e in checkpointing.config_history(run_dir)],
            "dataset": None if dataset is None else dict(dataset),
        },
    }
    if jax.process_index() == 0:
        logging_utils.write_json(run_dir / RESULTS_FILE, result)
        logging.info("%s", logging_utils.format_run_summary(
            result["best_epoch"], result["test"], run_dir / RESULTS_FILE))
    return result


def _evaluate_swa(eval_fn: Callable[..., jax.Array], config: ml_collections.ConfigDict,
                  mesh: jax.sharding.Mesh, state: steps.TrainState, split: str, epoch: int
                  ) -> dict[str, float]:
    del epoch
    return steps.evaluate(eval_fn, state.swa_params, state.rngs, config, split, mesh)


def early_stopping_from_meta(values: Mapping[str, Any]) -> EarlyStopping:
    values = dict(values)
    if values["best_metric"] is None:  # JSON stores the initial -inf as null
        values["best_metric"] = float("-inf") if values["higher_is_better"] else float("inf")
    return EarlyStopping.from_dict(values)


def _log_train(log: StepLog, writer: logging_utils.MetricWriter, epoch: int,
               train_config: ml_collections.ConfigDict, state: steps.TrainState,
               progress: Progress) -> None:
    if not log.values:
        return
    first_step, values, elapsed = log.fetch()
    check_finite(values, first_step, epoch, train_config.nan_policy)
    scalars = train_scalars(values, first_step, elapsed, epoch, train_config,
                            int(jax.device_get(state.nonfinite_steps)))
    step = first_step + values["loss"].size
    writer.write_scalars(step, scalars, split="train")
    logging_utils.log_scalars(scalars, step=step, split="train",
                              progress=progress.describe(step))


def train_scalars(values: Mapping[str, np.ndarray], first_step: int, elapsed: float,
                  epoch: int, train_config: ml_collections.ConfigDict, nonfinite_steps: int
                  ) -> dict[str, float | int]:
    """The training log's scalars of the steps in `values` (``loss``, ``grad_norm`` per
    step, fetched after `elapsed` seconds): means over the finite steps, throughput,
    epoch and the run's count of dropped updates. Warns about skipped steps."""
    n = values["loss"].size
    finite = _finite_steps(values)
    scalars = {
        "loss": float(values["loss"][finite].mean()) if finite.any() else float("nan"),
        "grad_norm": float(values["grad_norm"][finite].mean()) if finite.any() else float("nan"),
        "steps_per_second": n / elapsed,
        "examples_per_second": n * train_config.batch_size / elapsed,
        "epoch": int(epoch),
        "nonfinite_steps": int(nonfinite_steps),
    }
    # Only reached with nan_policy="skip" ("stop" raised before); process 0 reports.
    if not finite.all() and jax.process_index() == 0:
        logging.warning("skipped %d non-finite steps in steps %d-%d", int((~finite).sum()),
                        first_step + 1, first_step + n)
    return scalars


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = seed
    config.seeds = 1
    return config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       evaluate_fn: EvaluateFn | None = None,
                       allow_config_change: Sequence[str] = (),
                       evaluate_splits: Sequence[str] = (VALIDATION_SPLIT, TEST_SPLIT),
                       on_epoch_end: EpochEndFn | None = None) -> dict[str, Any]:
    """Validates `config`, prepares the data and runs every seed; returns the results.

    With ``config.seeds == 1`` the run lives in `workdir` and the result is its
    ``results.json``. With more, seed ``s`` runs in ``workdir/seed_<s>`` and
    ``workdir/results.json`` holds each seed's test metrics and, per metric, their mean
    and std (`metrics.aggregate_seeds`). Rerunning the same command resumes.
    `evaluate_splits` and `on_epoch_end`: see `train_seed` (one seed only without the test
    split: the seeds' aggregate is of test metrics).
    """
    config_lib.validate_config(config)
    if config.seeds > 1 and TEST_SPLIT not in evaluate_splits:
        raise ValueError("evaluate_splits without the test split needs config.seeds == 1")
    workdir = paths.resolve_path(workdir)
    config = demo.prepare_synthetic_dataset(config, workdir)
    if config.seeds == 1:
        return train_seed(config, workdir, evaluate_fn=evaluate_fn,
                          allow_config_change=allow_config_change,
                          evaluate_splits=evaluate_splits, on_epoch_end=on_epoch_end)
    seeds = [config.seed + i for i in range(config.seeds)]
    per_seed = {}
    if config.train.vectorize_seeds and evaluate_fn is None and on_epoch_end is None:
        # Imported here: the vectorised loop builds on this module's pieces.
        from cardioformer_jax.training import vectorized_seeds
        logging.info("seeds %s trained together in one program", seeds)
        per_seed = vectorized_seeds.train_seeds(config, workdir, seeds,
                                                allow_config_change=allow_config_change)
    for seed in (s for s in seeds if s not in per_seed):
        logging.info("seed %d (%d of %d)", seed, seed - seeds[0] + 1, len(seeds))
        per_seed[seed] = train_seed(seed_config(config, seed), workdir / f"seed_{seed}",
                                    evaluate_fn=evaluate_fn,
                                    allow_config_change=allow_config_change,
                                    on_epoch_end=on_epoch_end)
    tests = [r["test"] for r in per_seed.values()]
    if any(t is None for t in tests):
        raise RuntimeError("a seed finished without an evaluated epoch")
    aggregate = metrics.aggregate_seeds(tests)
    result = {
        "seeds": seeds,
        "test": aggregate,
        "test_formatted": {k: metrics.format_mean_std(v) for k, v in aggregate.items()
                           if k != "num_examples"},
        "per_seed": {str(s): r for s, r in per_seed.items()},
    }
    if jax.process_index() == 0:
        logging_utils.write_json(workdir / RESULTS_FILE, result)
        for name, text in result["test_formatted"].items():
            logging.info("test %s over %d seeds: %s", name, len(seeds), text)
        logging.info("%s", logging_utils.format_seeds_summary(
            seeds, result["test_formatted"], workdir / RESULTS_FILE))
    return result
