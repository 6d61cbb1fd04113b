"""The training loop: one seed, or K seeds trained together (docs/training.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from cardioformer_jax import models
from cardioformer_jax.core import logging_utils, paths, sharding
from cardioformer_jax.data import input_pipeline
from cardioformer_jax.training import checkpointing, steps
from cardioformer_jax.training.early_stopping import EarlyStopping

RESULTS_FILE = "results.json"
# Split names of the built TFDS datasets.
TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT = "train", "validation", "test"
# Where the seeds-together resume moves a seed's checkpoints newer than the common step.
SUPERSEDED_DIR = "superseded_checkpoints"

# `evaluate_fn(state, split, epoch) -> metrics` replaces the real evaluation (tests script
# the metric sequence the early stopping sees with it); it gets one seed's state.
EvaluateFn = Callable[["steps.TrainState", str, int], Mapping[str, float]]
# `on_epoch_end(epoch, results)`: called for each running seed after each epoch's
# evaluation and checkpoint with the metrics by split (the tuner reports the validation
# metric to Optuna, which may prune the run by raising from it).
EpochEndFn = Callable[[int, Mapping[str, Mapping[str, float]]], None]


class StepLog:
    """Device scalars of recent steps, fetched only at log and checkpoint points."""

    def __init__(self) -> None:
        self.first_step = 0
        self.values: list[dict[str, jax.Array]] = []
        self.start = time.perf_counter()

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
    """``step N/total``, percentage and ETA of the training log lines (docs/training.md,
    "Logs"): the clock starts at the first `describe`, after this process's first step."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.clock_step: int | None = None
        self.clock_start = 0.0

    def describe(self, step: int) -> str:
        now = time.perf_counter()
        if self.clock_step is None:
            self.clock_step, self.clock_start = step, now
        return logging_utils.format_progress(step, self.total_steps, now - self.clock_start,
                                             timed_steps=step - self.clock_step)


def _finite_steps(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per logged step: loss and gradient norm both finite (what the step itself tests)."""
    return np.isfinite(values["loss"]) & np.isfinite(values["grad_norm"])


def check_finite(values: Mapping[str, np.ndarray], first_step: int, epoch: int,
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


def train_scalars(values: Mapping[str, np.ndarray], first_step: int, elapsed: float,
                  epoch: int, train_config: ml_collections.ConfigDict, nonfinite_steps: int
                  ) -> dict[str, float | int]:
    """The training log's scalars of the steps in `values` (means over the finite steps,
    throughput over `elapsed` seconds); warns about skipped steps."""
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


def _nonfinite_steps(state: steps.TrainState) -> np.ndarray:
    """Each seed's count of dropped updates, ``(K,)``."""
    return np.asarray(jax.device_get(state.nonfinite_steps)).reshape(-1)


@dataclasses.dataclass
class _Seed:
    seed: int
    label: str  # names the seed in log lines: "" when it trains alone
    config: ml_collections.ConfigDict
    run_dir: epath.Path
    checkpoints: checkpointing.Checkpointer
    writer: logging_utils.MetricWriter
    train_input: input_pipeline.TrainInput
    early: EarlyStopping
    best: dict[str, Any] | None = None
    result: dict[str, Any] | None = None  # set when the seed has finished

    @property
    def running(self) -> bool:
        return self.result is None


def _early_stopping(meta: Mapping[str, Any], train_config: ml_collections.ConfigDict
                    ) -> EarlyStopping:
    """The checkpoint's early-stopping progress under the config's patience and delta."""
    early = EarlyStopping(patience=train_config.patience, min_delta=train_config.min_delta)
    if "early_stopping" not in meta:
        return early
    values = dict(meta["early_stopping"])
    if values["best_metric"] is None:  # JSON stores the initial -inf as null
        values["best_metric"] = float("-inf") if values["higher_is_better"] else float("inf")
    restored = EarlyStopping.from_dict(values)
    return dataclasses.replace(restored, patience=early.patience, min_delta=early.min_delta,
                               should_stop=restored.num_bad_epochs >= early.patience)


def _finished(meta: Mapping[str, Any], early: EarlyStopping,
              train_config: ml_collections.ConfigDict) -> bool:
    return early.should_stop or int(meta.get("epoch", 0)) >= train_config.num_epochs


def _restore(runs: Sequence[_Seed], one: steps.Programs,
             train_config: ml_collections.ConfigDict) -> list[checkpointing.Restored]:
    """Each seed's newest readable checkpoint, with the unfinished seeds brought to the
    newest step they all hold (docs/training.md); a seed without one: None."""
    initial_positions = [run.train_input.get_state() for run in runs] if len(runs) > 1 else []
    restored = [run.checkpoints.restore_latest_readable(one.abstract_state, run.train_input)
                or checkpointing.Restored(0, None, {}) for run in runs]
    unfinished = [i for i, (run, r) in enumerate(zip(runs, restored, strict=True))
                  if r.state is None
                  or not _finished(r.meta, _early_stopping(r.meta, train_config), train_config)]
    common = min((int(restored[i].meta.get("step", 0)) for i in unfinished), default=0)
    for i in unfinished:
        run, step = runs[i], int(restored[i].meta.get("step", 0))
        if step == common:  # always so for a seed trained alone
            continue
        held = run.checkpoints.all_steps()
        if common and common not in held:
            raise RuntimeError(
                f"cannot resume seed {run.seed} at step {common}, the newest step every "
                f"unfinished seed holds: {run.checkpoints.directory} holds steps {held}. "
                f"Resume with --config.train.vectorize_seeds=False (each seed then resumes "
                f"from its own newest checkpoint).")
        for newer in sorted(s for s in held if s > common):
            moved = (run.checkpoints.set_aside(newer, folder=SUPERSEDED_DIR)
                     if jax.process_index() == 0 else "(process 0)")
            logging.warning("seed %d: checkpoint of step %d is newer than step %d, which "
                            "the other seeds resume from; moved to %s", run.seed, newer,
                            common, moved)
        if common:
            restored[i] = run.checkpoints.restore(common, one.abstract_state, run.train_input)
        else:
            run.train_input.set_state(initial_positions[i])
            restored[i] = checkpointing.Restored(0, None, {})
    return restored


def train_seeds(runs: Sequence[tuple[ml_collections.ConfigDict, str | os.PathLike]], *,
                evaluate_fn: EvaluateFn | None = None,
                allow_config_change: Sequence[str] = (),
                evaluate_splits: Sequence[str] = (VALIDATION_SPLIT, TEST_SPLIT),
                on_epoch_end: EpochEndFn | None = None) -> list[dict[str, Any]]:
    """The docs/training.md protocol for each ``(config, run folder)`` of `runs` (seeds of
    one config), trained together, resuming what is there; returns each ``results.json``.
    `allow_config_change`: `checkpointing.check_run_config`. Without the test split in
    `evaluate_splits` (tuning) it is never read: ``"test"`` is then None."""
    if VALIDATION_SPLIT not in evaluate_splits:
        raise ValueError(f"evaluate_splits={tuple(evaluate_splits)} must include "
                         f"{VALIDATION_SPLIT!r}: early stopping follows it")
    config = runs[0][0]  # what every seed shares: model, data, mesh, batch sizes
    train_config = config.train
    mesh = sharding.mesh_from_config(config)
    steps.check_fits(config, mesh)
    try:
        dataset = input_pipeline.dataset_identity(config)
    except FileNotFoundError:
        dataset = None  # not built: `check_dataset` below says how to build it
    runs = [(seed_config, paths.resolve_path(run_dir)) for seed_config, run_dir in runs]
    for seed_config, run_dir in runs:
        checkpointing.check_run_config(run_dir, seed_config, allow=allow_config_change,
                                       dataset=dataset)
    # Shapes and labels against the model, before compiling; of the splits the run reads.
    input_pipeline.check_dataset(config, (TRAIN_SPLIT, *evaluate_splits))

    compiled = steps.seed_programs(steps.programs(config, mesh), len(runs))
    with contextlib.ExitStack() as stack:
        seeds = []
        for seed_config, run_dir in runs:
            train_input = input_pipeline.create_train_input(seed_config, mesh)
            stack.callback(train_input.close)
            checkpoints = stack.enter_context(checkpointing.Checkpointer(
                run_dir / checkpointing.CHECKPOINT_DIR, keep=train_config.keep_checkpoints,
                async_save=train_config.async_checkpointing))
            writer = stack.enter_context(logging_utils.MetricWriter(run_dir))
            seed = int(seed_config.seed)
            seeds.append(_Seed(seed=seed, label=f"seed {seed}" if len(runs) > 1 else "",
                               config=seed_config, run_dir=run_dir, checkpoints=checkpoints,
                               writer=writer, train_input=train_input,
                               early=_early_stopping({}, train_config)))
        steps_per_epoch = (train_config.steps_per_epoch if train_config.steps_per_epoch > 0
                           else seeds[0].train_input.steps_per_epoch)
        return _loop(config, mesh, compiled, seeds, steps_per_epoch, dataset,
                     evaluate_fn=evaluate_fn, evaluate_splits=evaluate_splits,
                     on_epoch_end=on_epoch_end)


def _loop(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          compiled: steps.SeedPrograms, runs: list[_Seed], steps_per_epoch: int,
          dataset: Mapping[str, Any] | None, *, evaluate_fn: EvaluateFn | None,
          evaluate_splits: Sequence[str], on_epoch_end: EpochEndFn | None
          ) -> list[dict[str, Any]]:
    train_config = config.train
    restored = _restore(runs, compiled.one, train_config)
    states, meta = [], {}
    for run, r in zip(runs, restored, strict=True):
        if r.state is None:
            states.append(compiled.one.init(*steps.init_args(run.config)))
            continue
        logging.info("%sresumed from the checkpoint of step %d (epoch %d, %d steps into it)",
                     f"{run.label}: " if run.label else "", r.meta["step"], r.meta["epoch"],
                     r.meta["step_in_epoch"])
        states.append(steps.set_learning_rate(r.state, train_config.learning_rate,
                                              compiled.one.shardings))
        run.early, run.best = _early_stopping(r.meta, train_config), r.meta.get("best")
        if not _finished(r.meta, run.early, train_config):
            meta = r.meta  # the unfinished seeds share their position
    state = compiled.stack(*states)
    del states
    if not meta and any(r.state is None for r in restored):
        params = f"{models.count_params(compiled.one.abstract_state.params):,}"
        if len(runs) == 1:
            logging.info("new run in %s: %s parameters, mesh %s, %d steps per epoch",
                         runs[0].run_dir, params, dict(mesh.shape), steps_per_epoch)
        else:
            logging.info("%d seeds trained together in one program: %s parameters each, "
                         "mesh %s, %d steps per epoch", len(runs), params, dict(mesh.shape),
                         steps_per_epoch)
    epoch, step_in_epoch = int(meta.get("epoch", 0)), int(meta.get("step_in_epoch", 0))
    step = int(meta.get("step", 0))
    for i, (run, r) in enumerate(zip(runs, restored, strict=True)):
        if r.state is not None and _finished(r.meta, run.early, train_config):
            _finish(run, state, i, int(r.meta["epoch"]), dataset)

    def save(best_epochs: Mapping[int, int] | None = None) -> None:
        for i, run in enumerate(runs):
            if run.running:
                best_epoch = None if best_epochs is None else best_epochs.get(i)
                run.checkpoints.save(step, compiled.take(state, i), {
                    "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
                    "early_stopping": run.early.to_dict(), "best": run.best,
                    "steps_per_epoch": steps_per_epoch}, run.train_input,
                    best_epoch_rank=best_epoch)

    log = StepLog()
    log.first_step = start_step = step
    # The steps the run takes if it does not stop early.
    progress = Progress(train_config.num_epochs * steps_per_epoch)
    while epoch < train_config.num_epochs and any(run.running for run in runs):
        while step_in_epoch < steps_per_epoch:
            # Every slot gets a batch (the shapes are fixed); a finished seed's is unused.
            batches = tuple(next(run.train_input) for run in runs)
            state, step_metrics = compiled.train(state, batches)
            log.values.append(step_metrics)
            step += 1
            step_in_epoch += 1
            # Also right after this process's first step: that log's throughput holds
            # the compilation, later ones are clean.
            if step % train_config.log_every_steps == 0 or step == start_step + 1:
                _log_train(log, runs, epoch + 1, train_config, state, progress)
            if (step % train_config.checkpoint_every_steps == 0
                    and step_in_epoch < steps_per_epoch):  # epoch ends save below
                _log_train(log, runs, epoch + 1, train_config, state, progress)  # NaN check
                save()
        _log_train(log, runs, epoch + 1, train_config, state, progress)
        epoch += 1
        step_in_epoch = 0
        state = compiled.swa(state)
        results = _evaluate(config, mesh, compiled, state, runs, epoch, evaluate_fn,
                            evaluate_splits)
        best_epochs = {}
        for i, run_results in results.items():
            run = runs[i]
            run.early, is_best = run.early.update(
                run_results[VALIDATION_SPLIT][train_config.selection_metric], epoch)
            if is_best:
                run.best = {"epoch": epoch, "step": step, **run_results}
                best_epochs[i] = epoch
            for split, values in run_results.items():
                run.writer.write_scalars(step, values, split=split)
                logging_utils.log_scalars(values, step=step,
                                          split=f"{run.label} {split} epoch {epoch}".lstrip())
        save(best_epochs)
        log.start = time.perf_counter()  # evaluation time is not training throughput
        if on_epoch_end is not None:
            for run_results in results.values():
                on_epoch_end(epoch, run_results)
        for i, run in enumerate(runs):
            if run.running and (run.early.should_stop or epoch >= train_config.num_epochs):
                if run.early.should_stop:
                    logging.info("seed %d stops early after epoch %d", run.seed, epoch)
                _finish(run, state, i, epoch, dataset)
    return [run.result for run in runs]


def _evaluate(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
              compiled: steps.SeedPrograms, state: steps.TrainState, runs: Sequence[_Seed],
              epoch: int, evaluate_fn: EvaluateFn | None, splits: Sequence[str]
              ) -> dict[int, dict[str, dict[str, Any]]]:
    """Each running seed's metrics by split, of its SWA model (or `evaluate_fn`'s)."""
    running = [i for i, run in enumerate(runs) if run.running]
    if evaluate_fn is not None:
        return {i: {split: dict(evaluate_fn(compiled.take(state, i), split, epoch))
                    for split in splits} for i in running}
    # One pass over each split scores every seed: probabilities (N, K, classes).
    outputs = {split: steps.predict(compiled.eval, state.swa_params, state.rngs, config,
                                    split, mesh) for split in splits}
    probs = {split: out["probs"].reshape(len(out["label"]), len(runs), -1)
             for split, out in outputs.items()}
    return {i: {split: steps.prediction_metrics(config, probs[split][:, i], out["label"])
                for split, out in outputs.items()} for i in running}


def _log_train(log: StepLog, runs: Sequence[_Seed], epoch: int,
               train_config: ml_collections.ConfigDict, state: steps.TrainState,
               progress: Progress) -> None:
    """Per running seed: the NaN check, its metric file and one log line."""
    if not log.values:
        return
    first_step, values, elapsed = log.fetch()
    values = {k: v.reshape(v.shape[0], -1) for k, v in values.items()}  # (steps, seeds)
    nonfinite = _nonfinite_steps(state)
    step = first_step + values["loss"].shape[0]
    described = progress.describe(step)
    for i, run in enumerate(runs):
        if not run.running:
            continue
        column = {k: v[:, i] for k, v in values.items()}
        try:
            check_finite(column, first_step, epoch, train_config.nan_policy)
        except FloatingPointError as error:
            if not run.label:
                raise
            raise FloatingPointError(f"{run.label}: {error}") from None
        scalars = train_scalars(column, first_step, elapsed, epoch, train_config,
                                int(nonfinite[i]))
        run.writer.write_scalars(step, scalars, split="train")
        logging_utils.log_scalars(scalars, step=step, split=f"train {run.label}".rstrip(),
                                  progress=described)


def _finish(run: _Seed, state: steps.TrainState, index: int, epochs_completed: int,
            dataset: Mapping[str, Any] | None) -> None:
    """Waits for the seed's checkpoints, writes its ``results.json`` and closing log line."""
    run.checkpoints.wait_until_finished()
    best, run_dir = run.best, run.run_dir
    result = {
        "seed": int(run.config.seed),
        "best_epoch": None if best is None else best["epoch"],
        "best_step": None if best is None else best["step"],
        "epochs_completed": int(epochs_completed),
        "stopped_early": bool(run.early.should_stop),
        "nonfinite_steps": int(_nonfinite_steps(state)[index]),
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
    run.result = result
