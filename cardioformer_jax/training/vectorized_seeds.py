"""Several seeds trained together in one program (``config.seeds > 1``, the default
``train.vectorize_seeds=True``; docs/training.md).

The K seeds' training states are stacked along a leading axis and every program is the
one-seed program under `jax.vmap`: one step updates all K models, one evaluation pass
scores them all, one SWA update averages them all. What makes a seed that seed stays its
own: its initial weights (made by the one-seed init program), its dropout and augmentation
stream, and its data order (its own `input_pipeline.TrainInput`). So seed ``s`` here
computes what a run of seed ``s`` alone computes, up to the rounding of the vectorised
arithmetic (tests/integration/test_vectorized_seeds.py compares them).

The run folders are those of the one-after-another mode: ``workdir/seed_<s>/`` with its
config, checkpoints, metrics and ``results.json``, so `evaluate`, `predict`, `export` and a
resume with ``train.vectorize_seeds=False`` read them unchanged. Each seed stops early on
its own: its results are then written and it is neither evaluated nor saved again, while
its slot keeps computing until the last seed stops (the program's shapes are fixed).

Checkpoints: at each checkpoint point every running seed's slice of the state is saved in
its own folder. A run killed between two seeds' saves resumes every unfinished seed from
the newest step they all hold; the newer checkpoints of the others are moved aside to
``seed_<s>/superseded_checkpoints/`` (kept, never deleted).

Memory: K models, their Adam moments and SWA averages, and K batches are on the devices
at once; when they do not fit, ``train.vectorize_seeds=False`` runs the seeds one after
another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from cardioformer_jax import models
from cardioformer_jax.core import logging_utils, paths, sharding
from cardioformer_jax.data import input_pipeline
from cardioformer_jax.training import checkpointing, steps, train
from cardioformer_jax.training.early_stopping import EarlyStopping

SUPERSEDED_DIR = "superseded_checkpoints"


# --- the programs ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SeedPrograms:
    """The jitted programs of K stacked seeds (leading axis of every state leaf).

    `train(state, batches)` takes one batch per seed (a tuple) and returns per-seed
    ``{"loss", "grad_norm"}`` of shape ``(K,)``; `eval(params, rngs, batch)` scores one
    batch with every seed, probabilities ``(B, K, classes)`` split like the batch (so
    `steps.predict` gathers them as rows); `take(state, i)` is seed ``i``'s state, placed
    like a one-seed state; `stack(*states)` the reverse.
    """

    one: steps.Programs  # the one-seed programs: init, abstract state, shardings
    num_seeds: int
    shardings: steps.TrainState  # the stacked state's: seed axis whole on every device
    train: Callable[[steps.TrainState, tuple[Mapping[str, jax.Array], ...]],
                    tuple[steps.TrainState, dict[str, jax.Array]]]
    eval: Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], jax.Array]
    swa: Callable[[steps.TrainState], steps.TrainState]
    take: Callable[[steps.TrainState, jax.Array], steps.TrainState]
    stack: Callable[..., steps.TrainState]


def _with_seed_axis(named: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
    """A one-seed leaf's sharding with a leading, unsplit seed axis."""
    return jax.sharding.NamedSharding(named.mesh, jax.sharding.PartitionSpec(None, *named.spec))


@functools.lru_cache(maxsize=4)
def seed_programs(one: steps.Programs, num_seeds: int) -> SeedPrograms:
    """The programs of `num_seeds` stacked seeds of the model of `one` (built once)."""
    definition = one.definition
    stacked = jax.tree.map(_with_seed_axis, one.shardings)
    data = sharding.data_sharding(one.mesh)
    replicated = jax.sharding.NamedSharding(one.mesh, jax.sharding.PartitionSpec())
    train_one = functools.partial(steps.train_step, definition)
    eval_one = functools.partial(steps.eval_step, definition)

    def train_all(state: steps.TrainState, batches: tuple[Mapping[str, jax.Array], ...]
                  ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
        batch = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
        return jax.vmap(train_one)(state, batch)

    def eval_all(params: nnx.State, rngs: nnx.State, batch: Mapping[str, jax.Array]
                 ) -> jax.Array:
        probs = jax.vmap(eval_one, in_axes=(0, 0, None))(params, rngs, batch)
        return jnp.swapaxes(probs, 0, 1)  # rows first, like the batch

    def take(state: steps.TrainState, index: jax.Array) -> steps.TrainState:
        return jax.tree.map(lambda x: x[index], state)

    def stack(*states: steps.TrainState) -> steps.TrainState:
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    return SeedPrograms(
        one=one, num_seeds=num_seeds, shardings=stacked,
        train=jax.jit(sharding.in_mesh(train_all, one.mesh), in_shardings=(stacked, data),
                      out_shardings=(stacked, replicated), donate_argnums=0),
        eval=jax.jit(sharding.in_mesh(eval_all, one.mesh),
                     in_shardings=(stacked.swa_params, stacked.rngs, data),
                     out_shardings=data),
        swa=jax.jit(jax.vmap(steps.swa_epoch_update), in_shardings=(stacked,),
                    out_shardings=stacked, donate_argnums=0),
        take=jax.jit(take, out_shardings=one.shardings),
        stack=jax.jit(stack, out_shardings=stacked),
    )


# --- one seed's bookkeeping -----------------------------------------------------------------


@dataclasses.dataclass
class _Seed:
    """What the loop keeps per seed: its folder, writers, data and early-stopping state."""

    seed: int
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


@dataclasses.dataclass
class _Restored:
    state: steps.TrainState | None
    meta: dict[str, Any]


def _early_stopping(meta: Mapping[str, Any], train_config: ml_collections.ConfigDict
                    ) -> EarlyStopping:
    """The checkpoint's early-stopping progress under the config's rules (as `train`)."""
    early = EarlyStopping(patience=train_config.patience, min_delta=train_config.min_delta)
    if "early_stopping" not in meta:
        return early
    restored = train.early_stopping_from_meta(meta["early_stopping"])
    return dataclasses.replace(restored, patience=early.patience, min_delta=early.min_delta,
                               should_stop=restored.num_bad_epochs >= early.patience)


def _finished(meta: Mapping[str, Any], early: EarlyStopping,
              train_config: ml_collections.ConfigDict) -> bool:
    return early.should_stop or int(meta.get("epoch", 0)) >= train_config.num_epochs


def _restore(runs: Sequence[_Seed], one: steps.Programs,
             train_config: ml_collections.ConfigDict) -> list[_Restored]:
    """Each seed's newest readable checkpoint, with the unfinished seeds brought to the
    newest step they all hold (see the module docstring); a seed without one: None."""
    initial_positions = [run.train_input.get_state() for run in runs]
    restored = []
    for run in runs:
        got = run.checkpoints.restore_latest_readable(one.abstract_state, run.train_input)
        restored.append(_Restored(None, {}) if got is None else _Restored(got.state, got.meta))
    unfinished = [i for i, (run, r) in enumerate(zip(runs, restored, strict=True))
                  if r.state is None
                  or not _finished(r.meta, _early_stopping(r.meta, train_config), train_config)]
    common = min((int(restored[i].meta.get("step", 0)) for i in unfinished), default=0)
    for i in unfinished:
        run, step = runs[i], int(restored[i].meta.get("step", 0))
        if step == common:
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
            got = run.checkpoints.restore(common, one.abstract_state, run.train_input)
            restored[i] = _Restored(got.state, got.meta)
        else:
            run.train_input.set_state(initial_positions[i])
            restored[i] = _Restored(None, {})
    return restored


# --- the loop -------------------------------------------------------------------------------


def train_seeds(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                seeds: Sequence[int], *, allow_config_change: Sequence[str] = ()
                ) -> dict[int, dict[str, Any]]:
    """Trains `seeds` together in ``workdir/seed_<s>`` (resuming what is there) with the
    protocol of `train.train_seed`; returns each seed's ``results.json`` contents."""
    workdir = paths.resolve_path(workdir)
    train_config = config.train
    evaluate_splits = (train.VALIDATION_SPLIT, train.TEST_SPLIT)
    mesh = sharding.mesh_from_config(config)
    steps.check_fits(config, mesh)
    try:
        dataset = input_pipeline.dataset_identity(config)
    except FileNotFoundError:
        dataset = None  # not built: `check_dataset` below says how to build it
    seed_configs = {s: train.seed_config(config, s) for s in seeds}
    for s, seed_config in seed_configs.items():
        checkpointing.check_run_config(workdir / f"seed_{s}", seed_config,
                                       allow=allow_config_change, dataset=dataset)
    input_pipeline.check_dataset(config, (train.TRAIN_SPLIT, *evaluate_splits))

    one = steps.programs(config, mesh)
    compiled = seed_programs(one, len(seeds))
    with contextlib.ExitStack() as stack:
        runs = []
        for s, seed_config in seed_configs.items():
            run_dir = workdir / f"seed_{s}"
            train_input = input_pipeline.create_train_input(seed_config, mesh)
            stack.callback(train_input.close)
            checkpoints = checkpointing.Checkpointer(
                run_dir / checkpointing.CHECKPOINT_DIR, keep=train_config.keep_checkpoints,
                async_save=train_config.async_checkpointing)
            stack.callback(checkpoints.close)
            writer = logging_utils.MetricWriter(run_dir)
            stack.callback(writer.close)
            runs.append(_Seed(seed=s, config=seed_config, run_dir=run_dir,
                              checkpoints=checkpoints, writer=writer, train_input=train_input,
                              early=EarlyStopping(patience=train_config.patience,
                                                  min_delta=train_config.min_delta)))
        steps_per_epoch = runs[0].train_input.steps_per_epoch
        if train_config.steps_per_epoch > 0:
            steps_per_epoch = train_config.steps_per_epoch
        return _loop(config, mesh, compiled, runs, steps_per_epoch, dataset)


def _loop(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          compiled: SeedPrograms, runs: list[_Seed], steps_per_epoch: int,
          dataset: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    train_config = config.train
    restored = _restore(runs, compiled.one, train_config)
    states, meta = [], {}
    for run, r in zip(runs, restored, strict=True):
        if r.state is None:
            states.append(compiled.one.init(*steps.init_args(run.config)))
            continue
        logging.info("seed %d: resumed from the checkpoint of step %d (epoch %d)", run.seed,
                     r.meta["step"], r.meta["epoch"])
        states.append(steps.set_learning_rate(r.state, train_config.learning_rate,
                                              compiled.one.shardings))
        run.early, run.best = _early_stopping(r.meta, train_config), r.meta.get("best")
        if not _finished(r.meta, run.early, train_config):
            meta = r.meta  # the unfinished seeds share their position
    state = compiled.stack(*states)
    del states
    if not meta and any(r.state is None for r in restored):
        logging.info("%d seeds trained together in one program: %s parameters each, mesh "
                     "%s, %d steps per epoch", len(runs),
                     f"{models.count_params(compiled.one.abstract_state.params):,}",
                     dict(mesh.shape), steps_per_epoch)
    epoch, step_in_epoch = int(meta.get("epoch", 0)), int(meta.get("step_in_epoch", 0))
    step = int(meta.get("step", 0))
    for i, (run, r) in enumerate(zip(runs, restored, strict=True)):
        if r.state is not None and _finished(r.meta, run.early, train_config):
            _finish(run, state, i, int(r.meta["epoch"]), dataset)

    def save(best_epochs: Mapping[int, int] | None = None) -> None:
        for i, run in enumerate(runs):
            if run.running:
                best_epoch = None if best_epochs is None else best_epochs.get(i)
                run.checkpoints.save(step, compiled.take(state, jnp.int32(i)), {
                    "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
                    "early_stopping": run.early.to_dict(), "best": run.best,
                    "steps_per_epoch": steps_per_epoch}, run.train_input,
                    best_epoch_rank=best_epoch)

    log = train.StepLog()
    log.first_step = start_step = step
    progress = train.Progress(train_config.num_epochs * steps_per_epoch)
    while epoch < train_config.num_epochs and any(run.running for run in runs):
        while step_in_epoch < steps_per_epoch:
            # Every slot gets a batch (the shapes are fixed); a finished seed's is unused.
            batches = tuple(next(run.train_input) for run in runs)
            state, step_metrics = compiled.train(state, batches)
            log.add(step_metrics)
            step += 1
            step_in_epoch += 1
            if step % train_config.log_every_steps == 0 or step == start_step + 1:
                _log_train(log, runs, epoch + 1, train_config, state, progress)
            if (step % train_config.checkpoint_every_steps == 0
                    and step_in_epoch < steps_per_epoch):
                _log_train(log, runs, epoch + 1, train_config, state, progress)
                save()
        _log_train(log, runs, epoch + 1, train_config, state, progress)
        epoch += 1
        step_in_epoch = 0
        state = compiled.swa(state)
        # One pass over each split scores every seed.
        outputs = {split: steps.predict(compiled.eval, state.swa_params, state.rngs, config,
                                        split, mesh)
                   for split in (train.VALIDATION_SPLIT, train.TEST_SPLIT)}
        best_epochs = {}
        for i, run in enumerate(runs):
            if not run.running:
                continue
            results = {split: steps.prediction_metrics(config, out["probs"][:, i],
                                                       out["label"])
                       for split, out in outputs.items()}
            run.early, is_best = run.early.update(
                results[train.VALIDATION_SPLIT][train_config.selection_metric], epoch)
            if is_best:
                run.best = {"epoch": epoch, "step": step, **results}
                best_epochs[i] = epoch
            for split, values in results.items():
                run.writer.write_scalars(step, values, split=split)
                logging_utils.log_scalars(values, step=step,
                                          split=f"seed {run.seed} {split} epoch {epoch}")
        save(best_epochs)
        log.start = time.perf_counter()  # evaluation time is not training throughput
        for i, run in enumerate(runs):
            if run.running and (run.early.should_stop or epoch >= train_config.num_epochs):
                if run.early.should_stop:
                    logging.info("seed %d stops early after epoch %d", run.seed, epoch)
                _finish(run, state, i, epoch, dataset)
    return {run.seed: run.result for run in runs}


def _finish(run: _Seed, state: steps.TrainState, index: int, epochs_completed: int,
            dataset: Mapping[str, Any] | None) -> None:
    """Waits for the seed's checkpoints and writes its results (`train.write_seed_result`)."""
    run.checkpoints.wait_until_finished()
    nonfinite = int(jax.device_get(state.nonfinite_steps)[index])
    run.result = train.write_seed_result(
        run.config, run.run_dir, best=run.best, epochs_completed=epochs_completed,
        stopped_early=run.early.should_stop, nonfinite_steps=nonfinite, dataset=dataset)


def _log_train(log: train.StepLog, runs: Sequence[_Seed], epoch: int,
               train_config: ml_collections.ConfigDict, state: steps.TrainState,
               progress: train.Progress) -> None:
    """Per running seed: the NaN check, its metric file and one log line."""
    if not log.values:
        return
    first_step, values, elapsed = log.fetch()  # values: (steps, seeds)
    nonfinite = np.asarray(jax.device_get(state.nonfinite_steps))
    step = first_step + values["loss"].shape[0]
    described = progress.describe(step)
    for i, run in enumerate(runs):
        if not run.running:
            continue
        column = {k: v[:, i] for k, v in values.items()}
        try:
            train.check_finite(column, first_step, epoch, train_config.nan_policy)
        except FloatingPointError as error:
            raise FloatingPointError(f"seed {run.seed}: {error}") from None
        scalars = train.train_scalars(column, first_step, elapsed, epoch, train_config,
                                      int(nonfinite[i]))
        run.writer.write_scalars(step, scalars, split="train")
        logging_utils.log_scalars(scalars, step=step, split=f"train seed {run.seed}",
                                  progress=described)
