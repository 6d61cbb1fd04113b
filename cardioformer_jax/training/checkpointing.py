"""Orbax checkpoints of a training run, resumable at any step (docs/training.md, "Resuming")."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from cardioformer_jax import config_lib
from cardioformer_jax.core import logging_utils, paths

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
RANK_METRIC = "best_epoch_rank"

# Fields that make a checkpoint unusable (other shapes, other data, another data order),
# and those that may change when a run resumes (how it runs and reports, not what it
# computes): `config_lib.FIELDS` and `CardioformerConfig.SHAPE_FIELDS` declare them. Any other
# change needs the user's explicit permission (`allow`).
INCOMPATIBLE_FIELDS: tuple[str, ...] = config_lib.resume_fields(config_lib.NEVER)
RESUMABLE_CHANGES: tuple[str, ...] = config_lib.resume_fields(config_lib.FREE)
HISTORY_FILE = "config_history.jsonl"
DATASET_FILE = "dataset.json"
UNREADABLE_DIR = "unreadable_checkpoints"


class ResumeConfigError(ValueError):
    """A run directory's checkpoints do not fit this config (`check_run_config`)."""


def _best_rank(metrics: Mapping[str, Any]) -> float:
    value = float(metrics.get(RANK_METRIC, -1))
    return value if math.isfinite(value) else -1.0


# Orbax's standard handler stores plain arrays; typed keys (the model's `RngKey`, dtype
# key<fry>) go to disk as their raw uint32 key data and are re-wrapped on restore.
def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_keys_to_data(tree: Any) -> Any:
    def convert(x: Any) -> Any:
        if not _is_key(x):
            return x
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        # A key's PartitionSpec leaves the extra trailing key-data dimension whole.
        return data.update(sharding=getattr(x, "sharding", None))

    return jax.tree.map(convert, tree)


def _data_to_keys(tree: Any, abstract: Any) -> Any:
    return jax.tree.map(
        lambda x, a: jax.random.wrap_key_data(x, dtype=a.dtype) if _is_key(a) else x,
        tree, abstract)


@dataclasses.dataclass
class Restored:
    """What `Checkpointer.restore` returns."""

    step: int
    state: Any
    meta: dict[str, Any]


class Checkpointer:
    """The run's `CheckpointManager` in `directory` (a path or URL, `paths.resolve_path`),
    keeping the `keep` latest steps and the best epoch's. `read_only` (inference): nothing
    is created, saved, deleted or moved, and a run still training keeps its temporary files.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2,
                 async_save: bool = True, read_only: bool = False) -> None:
        self.directory = paths.resolve_path(directory)
        self.read_only = read_only
        if read_only:
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0,
                cleanup_tmp_directories=False)
        else:
            policy = checkpoint_managers.AnyPreservationPolicy([
                checkpoint_managers.LatestN(n=keep),
                checkpoint_managers.BestN(get_metric_fn=_best_rank, n=1,
                                          keep_checkpoints_without_metrics=False)])
            options = ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                # Set so that Orbax writes the metrics and `best_step()` ranks by them;
                # which steps are deleted is decided by `preservation_policy` alone.
                best_fn=_best_rank, best_mode="max", enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,  # leftovers of a save killed half-way
                create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta", "data"))

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise ValueError(f"{self.directory} is open read-only: cannot {what}")

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step of the best epoch's checkpoint (None before an epoch improved)."""
        ranked = [(_best_rank(self._manager.metrics(s) or {}), s)
                  for s in self._manager.all_steps()]
        rank, step = max(ranked, default=(-1.0, None))
        return step if rank >= 0 else None

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def set_aside(self, step: int, folder: str = UNREADABLE_DIR) -> str:
        """Moves `step` out of the manager's view into ``<run dir>/<folder>/``; returns where."""
        self._check_writable("set a checkpoint aside")
        source = self.directory / str(step)
        target_dir = self.directory.parent / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{step}_{time.strftime('%Y%m%d-%H%M%S')}"
        source.rename(target)
        self._manager.reload()
        return str(target)

    def restore_latest_readable(self, abstract_state: Any, data_iterator: Any = None
                                ) -> Restored | None:
        """Restores the newest checkpoint that reads (unreadable ones are set aside with a
        warning); None when there is none, RuntimeError listing each failure when none reads.
        """
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return self.restore(step, abstract_state, data_iterator)
            except Exception as error:  # noqa: BLE001 - any read failure: try older steps
                moved = self.set_aside(step) if jax.process_index() == 0 else "(process 0)"
                failures.append(f"step {step}: {type(error).__name__}: {error}")
                logging.warning("checkpoint of step %d is unreadable (%s: %s); moved to %s, "
                                "trying the previous one", step, type(error).__name__,
                                error, moved)
        if failures:
            raise RuntimeError("no checkpoint in " + str(self.directory) + " can be read ("
                               + "; ".join(failures) + "); they were moved to "
                               + str(self.directory.parent / UNREADABLE_DIR))
        return None

    def save(self, step: int, state: Any, meta: Mapping[str, Any], data_iterator: Any = None,
             *, best_epoch_rank: int | None = None) -> None:
        """Starts saving `state`, `meta` (JSON) and the data iterator's position at `step`
        (`best_epoch_rank`: the epoch number at the end of an improving epoch). Returns once the
        state is copied off the devices, so the caller may donate its buffers."""
        self._check_writable("save")
        items = {
            "state": ocp.args.StandardSave(_keys_to_data(state)),
            "meta": ocp.args.JsonSave(logging_utils.to_jsonable(dict(meta))),
        }
        if data_iterator is not None:
            items["data"] = data_iterator.checkpoint_save_args()
        rank = -1 if best_epoch_rank is None else int(best_epoch_rank)
        # The loop decides when to save (every N steps and at epoch ends); `force` skips
        # Orbax's own interval policy.
        self._manager.save(step, args=ocp.args.Composite(**items), metrics={RANK_METRIC: rank},
                           force=True)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Restored:
        """Restores `step` placed like `abstract_state`, and the data iterator in place."""
        items = {
            "state": ocp.args.StandardRestore(_abstract_keys_to_data(abstract_state)),
            "meta": ocp.args.JsonRestore(),
        }
        if data_iterator is not None:
            items["data"] = data_iterator.checkpoint_restore_args()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        state = _data_to_keys(restored["state"], abstract_state)
        return Restored(step=step, state=state, meta=dict(restored["meta"]))

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def config_digest(config: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
    """SHA-256 of a config's canonical JSON: names exactly which config produced a result."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json_best_effort())
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of ``config_history.jsonl``, oldest first ([] for a new run)."""
    path = paths.resolve_path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_run_config(run_dir: str | os.PathLike, config: ml_collections.ConfigDict,
                     allow: Sequence[str] = (),
                     dataset: Mapping[str, Any] | None = None) -> list[str]:
    """Saves ``config.json`` in a new run directory, or checks a resumed run against it
    (docs/training.md, "Resuming"); returns the changed fields. Only process 0 writes.
    `ResumeConfigError` for a changed field of `INCOMPATIBLE_FIELDS`, one outside
    `RESUMABLE_CHANGES` that `allow` does not name, or another `dataset` fingerprint."""
    run_dir = paths.resolve_path(run_dir)
    path = run_dir / CONFIG_FILE
    current = json.loads(config.to_json_best_effort())
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    has_checkpoints = checkpoint_dir.is_dir() and any(
        p.name.isdigit() for p in checkpoint_dir.iterdir())
    changed: list[str] = []
    if path.is_file() and has_checkpoints:
        # Fields added since the run was saved have their defaults.
        saved = json.loads(config_lib.with_defaults(json.loads(path.read_text()))
                           .to_json_best_effort())
        # Both from JSON (tuples are lists in each): compared as they are.
        conflicts = [f"{field}: {old!r} in the checkpoint, {new!r} now"
                     for field in INCOMPATIBLE_FIELDS
                     if (old := _lookup(saved, field)) != (new := _lookup(current, field))]
        if conflicts:
            raise ResumeConfigError(
                f"{run_dir} holds checkpoints of an incompatible run ("
                + "; ".join(conflicts)
                + "). Use another --workdir, or delete the old run to start over.")
        changed = _changed_fields(saved, current)
        dataset_file = run_dir / DATASET_FILE
        if dataset is not None and dataset_file.is_file():
            old = json.loads(dataset_file.read_text()).get("fingerprint_sha256")
            new = dataset.get("fingerprint_sha256")
            if old != new:
                changed.append("dataset.fingerprint")
                if "dataset.fingerprint" not in allow:
                    raise ResumeConfigError(
                        f"{run_dir} was trained on a dataset with fingerprint {old}, the "
                        f"dataset now at {dataset.get('data_dir')} has {new} (another build,"
                        f" source or preparation). Resuming would mix two datasets in one "
                        f"run: use another --workdir, or pass "
                        f"--allow_config_change=dataset.fingerprint to accept it.")
        altering = [f for f in changed if f not in RESUMABLE_CHANGES and f not in allow]
        if altering:
            details = "; ".join(f"{f}: {_lookup(saved, f)!r} in {CONFIG_FILE}, "
                                f"{_lookup(current, f)!r} now" for f in altering)
            raise ResumeConfigError(
                f"resuming {run_dir} with these changes would alter what the run computes: "
                f"{details}. Resume with the saved values, pass "
                f"--allow_config_change={','.join(altering)} to apply them from the "
                f"checkpoint's step on, or use another --workdir.")
        if changed and jax.process_index() == 0:
            logging.warning("resuming %s with changed config fields: %s", run_dir,
                            ", ".join(changed))
    if jax.process_index() == 0:
        entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                 "resumed": bool(path.is_file() and has_checkpoints), "changed": changed,
                 "sha256": config_digest(current), "config": current,
                 "dataset_fingerprint": None if dataset is None
                 else dataset.get("fingerprint_sha256")}
        run_dir.mkdir(parents=True, exist_ok=True)
        history = run_dir / HISTORY_FILE
        previous = history.read_text() if history.is_file() else ""
        history.write_text(previous + json.dumps(logging_utils.to_jsonable(entry)) + "\n")
        logging_utils.write_json(path, current)
        if dataset is not None:
            logging_utils.write_json(run_dir / DATASET_FILE, dict(dataset))
    return changed


def _changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [field for key in sorted(set(old) | set(new))
                for field in _changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix[:-1]]


def tree_equal(a: Any, b: Any) -> bool:
    """Whether two pytrees have equal structure and bitwise-equal leaves (keys: key data)."""
    a, b = _keys_to_data(a), _keys_to_data(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))
