"""A trained run as an eval-mode model: the loader behind predict, evaluate, export."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from cardioformer_jax import config_lib
from cardioformer_jax.core import logging_utils, paths, sharding, tasks
from cardioformer_jax.data import dataset_inputs, tabular, windows
from cardioformer_jax.training import checkpointing, steps, train

DEFAULT_BATCH_SIZE = 64
_SEED_DIR = re.compile(r"^seed_(\d+)$")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A restored run, ready for inference."""

    config: ml_collections.ConfigDict  # as saved in its config.json
    run_dir: epath.Path  # workdir or workdir/seed_<s>
    step: int  # the restored checkpoint's
    epoch: int | None  # the epoch that checkpoint ends (None if its metadata lacks it)
    params: nnx.State  # the SWA-averaged parameters
    rngs: nnx.State  # random-stream state: unused in eval mode, needed to rebuild the model
    spec: dataset_inputs.RecordPreparation  # the dataset's input contract
    programs: steps.Programs  # on a one-device mesh: `eval` and `logits` programs

    @property
    def mesh(self) -> jax.sharding.Mesh:
        """The (one-device) mesh the parameters live on."""
        return self.programs.mesh

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(seq_len, num_channels)`` of one sample."""
        return int(self.config.input.seq_len), int(self.config.input.num_channels)

    @property
    def num_classes(self) -> int:
        return int(self.config.dataset.num_classes)

    @property
    def windowing(self) -> windows.Windowing | None:
        """The run's crops (``input.crop_seconds``), or None when the model reads whole records."""
        return windows.from_config(self.config)

    def module(self) -> nnx.Module:
        """The eval-mode model (a fresh copy; dropout and augmentations off)."""
        return nnx.merge(self.programs.definition.eval_graphdef, self.params, self.rngs,
                         copy=True)

    def apply_fn(self) -> Callable[..., jax.Array]:
        """``f(params, rngs, {"signal": (B, T, C)[, "tabular": (B, 4)]}) -> logits (B, K)``
        (float32), pure: `steps.logits_step`, what the `logits` program compiles."""
        return functools.partial(steps.logits_step, self.programs.definition)

    @property
    def uses_tabular(self) -> bool:
        """Whether the model fuses age and sex (``model.tabular``)."""
        return self.config.model.tabular != "none"

    def tabular_inputs(self, n: int, age: np.ndarray | float | None = None,
                       sex: np.ndarray | int | None = None) -> np.ndarray | None:
        """``(n, 4)`` age/sex features (None: the model lacks them); None age/sex: unknown."""
        if not self.uses_tabular:
            return None
        age = np.broadcast_to(np.asarray(-1.0 if age is None else age, np.float64), (n,))
        sex = np.broadcast_to(np.asarray(-1 if sex is None else sex), (n,))
        return tabular.tabular_features(age, sex)

    def logits(self, signals: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE,
               tabular_inputs: np.ndarray | None = None) -> np.ndarray:
        """Logits ``(N, K)`` of model-ready samples ``(N, T, C)`` (and their ``(N, 4)`` age/sex
        `tabular_inputs`; None: unknown), in batches zero-padded to `padded_rows`."""
        return self._run(self.programs.logits, self._samples(signals, False), batch_size,
                         tabular_inputs)

    def _samples(self, signals: np.ndarray, records: bool) -> np.ndarray:
        """`signals` as float32 samples ``(N, T, C)``, or whole `records` ``(N, any, C)``."""
        signals = np.asarray(signals, np.float32)
        length, channels = self.input_shape
        if signals.ndim != 3 or signals.shape[2] != channels or (
                not records and signals.shape[1] != length):
            raise ValueError(f"expected {'records' if records else 'samples'} of shape (N, "
                             f"{'T' if records else length}, {channels}), got {signals.shape}")
        return signals

    def probabilities(self, signals: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE,
                      tabular_inputs: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` (the `eval` program), as `logits`; a run trained on
        crops (`windowing`) takes whole records ``(N, T, C)`` and aggregates their windows."""
        signals = self._samples(signals, records=self.windowing is not None)
        return self._run(self.programs.eval, signals, batch_size, tabular_inputs)

    def _run(self, program: Callable[..., jax.Array], signals: np.ndarray, batch_size: int,
             tabular_inputs: np.ndarray | None) -> np.ndarray:
        """`program(params, rngs, batch)` over `signals` in padded batches (`logits`)."""
        n = signals.shape[0]
        if self.uses_tabular and tabular_inputs is None:
            tabular_inputs = self.tabular_inputs(n)
        if not self.uses_tabular and tabular_inputs is not None:
            raise ValueError("this model does not take age/sex features (model.tabular="
                             "'none')")
        outputs = []
        for start in range(0, n, batch_size):
            chunk = signals[start:start + batch_size]
            pad = [(0, padded_rows(len(chunk), batch_size) - len(chunk)), (0, 0)]
            batch = {"signal": np.pad(chunk, pad + [(0, 0)])}
            if tabular_inputs is not None:
                rows = np.asarray(tabular_inputs[start:start + batch_size], np.float32)
                batch["tabular"] = np.pad(rows, pad)
            outputs.append(np.asarray(program(self.params, self.rngs, batch))[:len(chunk)])
        if not outputs:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(outputs)


def padded_rows(rows: int, batch_size: int) -> int:
    """The batch `rows` samples run in: the next power of two, at most `batch_size`."""
    return min(batch_size, 1 << max(rows - 1, 0).bit_length())


def quiet_orbax() -> None:
    """Hides Orbax's informational warnings from a command line's output."""
    logging_utils.quiet_orbax(logging.ERROR)


def seed_run_dirs(workdir: str | os.PathLike) -> dict[int, epath.Path]:
    """``{seed: workdir/seed_<seed>}`` of a multi-seed workdir (empty for a single run)."""
    workdir = paths.as_path(workdir)
    children = workdir.iterdir() if workdir.is_dir() else ()
    return dict(sorted((int(match.group(1)), child) for child in children
                       if (match := _SEED_DIR.match(child.name)) and child.is_dir()))


def _validation_score(run_dir: epath.Path) -> float:
    """The run's validation value of the metric it selected its best epoch by."""
    try:
        metric = read_config(run_dir).train.selection_metric
        value = json.loads((run_dir / train.RESULTS_FILE).read_text())["validation"][metric]
        return float(value) if value is not None and math.isfinite(value) else -math.inf
    except (OSError, KeyError, TypeError, ValueError):
        return -math.inf


def resolve_run_dir(workdir: str | os.PathLike, seed: int | None = None) -> epath.Path:
    """`workdir`, or its ``seed_<seed>/`` run (None: the best validation selection metric,
    the first seed on ties); FileNotFoundError when there is no run."""
    workdir = paths.as_path(workdir)
    seeds = seed_run_dirs(workdir)
    if seed is not None:
        if seed in seeds:
            return seeds[seed]
        if (not seeds and (workdir / checkpointing.CONFIG_FILE).is_file()
                and int(read_config(workdir).seed) == seed):
            return workdir
        raise FileNotFoundError(f"no run of seed {seed} in {workdir} (seeds: "
                                f"{sorted(seeds) or 'a single run'})")
    if seeds:
        return max(seeds.values(), key=_validation_score)  # max keeps the first on ties
    if not (workdir / checkpointing.CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{workdir} is not a training workdir (no {checkpointing.CONFIG_FILE} and no "
            f"seed_<s>/ runs); pass the --workdir given to cardioformer_jax.main")
    return workdir


def read_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's saved config (``config.json``), validated like a new run's."""
    path = paths.as_path(run_dir) / checkpointing.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a training run?")
    config = config_lib.with_defaults(json.loads(path.read_text()))
    try:
        config_lib.validate_config(config)
    except ValueError as err:
        raise ValueError(f"{path} is not a config this version can run (written by another "
                         f"version of cardioformer-jax?): {err}") from err
    return config


def load_for_command_line(workdir: str | os.PathLike, seed: int | None = None
                          ) -> TrainedModel | None:
    """`load`, or None after printing ``error: ...`` on stderr (Orbax quiet)."""
    quiet_orbax()
    try:
        return load(workdir, seed=seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def load(workdir: str | os.PathLike, *, seed: int | None = None, step: int | None = None
         ) -> TrainedModel:
    """The best (or `step`'s) checkpoint's SWA parameters of a training workdir (single or
    multi-seed: `resolve_run_dir`) as a `TrainedModel`."""
    run_dir = resolve_run_dir(workdir, seed)
    config = read_config(run_dir)
    spec = dataset_inputs.record_preparation(config.dataset.name, config.dataset.builder_config,
                                             leads=config.dataset.leads,
                                             task=tasks.from_config(config))
    shape = (int(config.input.seq_len), int(config.input.num_channels))
    record = (spec.sample_length, len(spec.lead_names))
    cropped = windows.from_config(config) is not None
    if (shape != record if not cropped
            else shape[1] != record[1] or shape[0] > record[0]):
        raise ValueError(f"{run_dir}: the model takes samples of shape {shape}, but "
                         f"{spec.dataset} samples are ({spec.sample_length}, "
                         f"{len(spec.lead_names)})")
    # One device is plenty for inference, and makes the restore independent of the mesh
    # the run was trained on.
    mesh = sharding.create_mesh((1, 1), devices=jax.devices()[:1])
    programs = steps.programs(config, mesh)
    directory = paths.as_path(run_dir) / checkpointing.CHECKPOINT_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: no checkpoints in {run_dir}")
    # Read-only; only epoch ends (the best one by default) hold evaluated SWA parameters.
    with checkpointing.Checkpointer(directory, read_only=True) as checkpointer:
        if step is None:
            step = checkpointer.best_step()
            if step is None:
                raise FileNotFoundError(
                    f"{directory} holds no best-epoch checkpoint (steps "
                    f"{checkpointer.all_steps()}): no epoch has ended with a finite "
                    "validation F1 yet; train at least one epoch first")
        restored = checkpointer.restore(step, programs.abstract_state)
    if int(jax.device_get(restored.state.swa_count)) == 0:
        raise ValueError(f"checkpoint {step} of {run_dir} has no SWA average yet")
    epoch = restored.meta.get("epoch")
    return TrainedModel(config=config, run_dir=run_dir, step=int(step),
                        epoch=None if epoch is None else int(epoch),
                        params=restored.state.swa_params, rngs=restored.state.rngs, spec=spec,
                        programs=programs)
