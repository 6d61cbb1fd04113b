"""Class probabilities of raw WFDB records: the library of ``cardioformer_jax.predict``."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cardioformer_jax.core import progress
from cardioformer_jax.data import dataset_inputs
from cardioformer_jax.data.preprocessing import RecordError
from cardioformer_jax.evaluation import inference


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One record's result: `probabilities` (K,) averaged over `num_samples` samples."""

    record: str
    num_samples: int
    probabilities: np.ndarray
    source_fs: float
    ignored_leads: tuple[str, ...]

    def predicted(self, class_names: Sequence[str]) -> str:
        return class_names[int(np.argmax(self.probabilities))]


@dataclasses.dataclass(frozen=True)
class Failure:
    """A record that could not be predicted, with a short `kind` and a readable message."""

    record: str
    kind: str
    message: str


def find_records(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Record paths (without extension) of the arguments, in order, without repeats: every
    ``*.hea`` below a folder (sorted), the record of a ``.hea``/``.dat``, else the path."""
    records: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            records.extend(str(h.with_suffix("")) for h in sorted(path.rglob("*.hea")))
        elif path.suffix in (".hea", ".dat"):
            records.append(str(path.with_suffix("")))
        else:
            records.append(str(path))
    return list(dict.fromkeys(records))


def predict_records(model: inference.TrainedModel, records: Sequence[str],
                    batch_size: int = inference.DEFAULT_BATCH_SIZE,
                    members: Sequence[inference.TrainedModel] = ()
                    ) -> list[Prediction | Failure]:
    """One `Prediction` or `Failure` per record, in order; with `members` (same input
    contract) the mean probabilities of all (an ensemble). Progress from 10 records on."""
    for member in members:
        if member.spec != model.spec:
            raise ValueError(f"{member.run_dir} takes other inputs or classes than "
                             f"{model.run_dir}; an ensemble needs one input contract")
    results: list[Prediction | Failure] = []
    for record in progress.track(records, len(records), "predicting", "records",
                                 enabled=len(records) >= 10):
        try:
            prepared = dataset_inputs.prepare_record(record, model.spec)
        except RecordError as err:
            results.append(Failure(record, err.kind, err.reason))
            continue
        n = len(prepared.samples)
        probabilities = np.mean(
            [m.probabilities(prepared.samples, batch_size,
                             m.tabular_inputs(n, prepared.age, prepared.sex))
             for m in (model, *members)], axis=0).astype(np.float64)
        results.append(Prediction(record, len(prepared.samples), probabilities.mean(axis=0),
                                  prepared.source_fs, prepared.ignored_leads))
    return results


def to_json(model: inference.TrainedModel, results: Sequence[Prediction | Failure]
            ) -> dict[str, Any]:
    """The machine-readable form printed by ``--json``."""
    names = list(model.spec.class_names)
    records = [{"record": r.record, "ok": True, "num_samples": r.num_samples,
                "probabilities": dict(zip(names, map(float, r.probabilities), strict=True)),
                "predicted": r.predicted(names), "source_sampling_rate_hz": r.source_fs,
                "ignored_leads": list(r.ignored_leads)} if isinstance(r, Prediction)
               else {"record": r.record, "ok": False, "error": r.kind, "message": r.message}
               for r in results]
    return {
        "run_dir": str(model.run_dir), "checkpoint_step": model.step, "epoch": model.epoch,
        "dataset": model.spec.dataset, "classes": names,
        "sample_unit": "segment" if model.spec.mode == "segments" else "heartbeat",
        "records": records,
    }


def format_table(model: inference.TrainedModel, results: Sequence[Prediction | Failure]
                 ) -> str:
    """A fixed-width table: record, samples, one probability column per class, argmax."""
    names = list(model.spec.class_names)
    unit = "segments" if model.spec.mode == "segments" else "beats"
    predictions = [r for r in results if isinstance(r, Prediction)]
    record_width = max([len("record"), *(len(r.record) for r in predictions)])
    widths = [max(6, len(n)) for n in names]
    header = (f"{'record':<{record_width}}  {unit:>8}  "
              + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
              + "  predicted")
    lines = [header]
    for r in predictions:
        cells = "  ".join(f"{p:>{w}.4f}" for p, w in zip(r.probabilities, widths, strict=True))
        lines.append(f"{r.record:<{record_width}}  {r.num_samples:>8}  {cells}  "
                     f"{r.predicted(names)}")
    return "\n".join(lines)


def run_cli(workdir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
            paths: Iterable[str | os.PathLike[str]], *,
            as_json: bool = False, seed: int | None = None,
            batch_size: int = inference.DEFAULT_BATCH_SIZE) -> int:
    """The command line: the records' table (or JSON) on stdout, failures on stderr, the
    mean of several workdirs' probabilities (an ensemble); returns the exit status."""
    workdirs = [workdir] if isinstance(workdir, (str, os.PathLike)) else list(workdir)
    loaded = [inference.load_for_command_line(w, seed=seed) for w in workdirs]
    if any(m is None for m in loaded):
        return 2
    model, *members = loaded
    records = find_records(paths)
    if not records:
        print("error: no WFDB record (.hea) found in the given paths", file=sys.stderr)
        return 1
    try:
        results = predict_records(model, records, batch_size, members)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if as_json:
        output = to_json(model, results)
        if members:
            output["ensemble"] = [str(m.run_dir) for m in loaded]
        print(json.dumps(output, indent=2))
    else:
        source = (f"mean of {len(loaded)} runs ({', '.join(str(m.run_dir) for m in loaded)})"
                  if members else f"{model.run_dir} (checkpoint step {model.step}, epoch "
                  f"{model.epoch})")
        print(f"# {model.spec.dataset} model: {source}; probabilities averaged over each record's "
              f"{'1 s segments' if model.spec.mode == 'segments' else 'heartbeats'}")
        if any(isinstance(r, Prediction) for r in results):
            print(format_table(model, results))
    for r in results:
        if isinstance(r, Failure):
            print(f"error: {r.record}: {r.message} [{r.kind}]", file=sys.stderr)
    succeeded = sum(isinstance(r, Prediction) for r in results)
    if succeeded < len(results):
        print(f"{succeeded} of {len(results)} records predicted", file=sys.stderr)
    return 0 if succeeded else 1
