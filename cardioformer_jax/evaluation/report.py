"""A run's report: the library of ``cardioformer_jax.evaluate`` (docs/training.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from cardioformer_jax.core import logging_utils, metrics, paths
from cardioformer_jax.data import datasets
from cardioformer_jax.evaluation import analysis, challenge_report, inference, task_reports
from cardioformer_jax.evaluation.markdown import pct as _pct
from cardioformer_jax.training import steps, train


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """Every example of a split, in split order: probabilities and what is known about it."""

    probs: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,)
    record_ids: np.ndarray  # (N,) str
    subject_ids: np.ndarray  # (N,)
    ages: np.ndarray  # (N,) years, -1 unknown
    sexes: np.ndarray  # (N,) 0 male, 1 female, -1 unknown
    segments: np.ndarray  # (N,) the example's segment within its record


def _with_data_dir(config: ml_collections.ConfigDict, data_dir: str | None
                   ) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    if data_dir:
        config.dataset.data_dir = data_dir
    return config


def as_text(value: Any) -> str:
    """A string feature (bytes from TFDS) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def split_predictions(model: inference.TrainedModel, split: str, data_dir: str | None = None
                      ) -> SplitPredictions:
    """Every example of `split` with its probabilities (`steps.predict`) and metadata."""
    config = _with_data_dir(model.config, data_dir)
    programs = steps.programs(config, model.mesh)
    out = steps.predict(programs.eval, model.params, model.rngs, config, split, model.mesh,
                        progress=True)
    source = datasets.data_source(config.dataset.name, config.dataset.data_dir, split,
                                  config.dataset.builder_config or None)
    rows = [source[int(i)] for i in out["index"]]

    def field(name: str, default: float, dtype: Any) -> np.ndarray:
        return np.asarray([row.get(name, default) for row in rows], dtype=dtype)

    record_ids = np.asarray([as_text(r["record_id"]) for r in rows], dtype=object)
    return SplitPredictions(
        probs=np.asarray(out["probs"], np.float64), labels=np.asarray(out["label"], np.int64),
        record_ids=record_ids, subject_ids=field("subject_id", -1, np.int64),
        ages=field("age", -1.0, np.float64), sexes=field("sex", -1, np.int64),
        segments=field("segment", -1, np.int64))


def _training_results(run_dir: epath.Path, split: str) -> dict[str, float] | None:
    try:
        return json.loads((run_dir / train.RESULTS_FILE).read_text())[split]
    except (OSError, KeyError, ValueError):
        return None


ARTEFACTS = ("report.md", "evaluation.json", "predictions.csv", "MODEL_CARD.md")


def split_files(directory: epath.Path, split: str, names: Sequence[str] = ARTEFACTS
                ) -> list[epath.Path]:
    """`names` in `directory`, suffixed ``_<split>`` for splits other than test."""
    suffix = "" if split == train.TEST_SPLIT else f"_{split}"
    return [directory / f"{stem}{suffix}{ext}" for stem, ext in map(os.path.splitext, names)]


def evaluation_head(workdir: str | os.PathLike, model: inference.TrainedModel, split: str,
                    dataset: str, detail: dict[str, Any], predictions_path: epath.Path,
                    **sections: Any) -> dict[str, Any]:
    """What every evaluation.json holds: the run, the split, the details, `sections`."""
    return {
        "workdir": str(paths.resolve_path(workdir)), "run_dir": str(model.run_dir),
        "split": split, "dataset": dataset,
        "model_name": model.config.model_name,
        "selection_metric": model.config.train.selection_metric,
        "seed": int(model.config.seed), "step": model.step, "epoch": model.epoch,
        "classes": list(model.spec.class_names), "detail": detail, **sections,
        "predictions_file": predictions_path.name,
    }


def _dataset_facts(model: inference.TrainedModel, split: str, data_dir: str | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model card's facts of the run's dataset, as built, and its paper comparison."""
    config = _with_data_dir(model.config, data_dir)
    builder_config = config.dataset.builder_config or None
    builder = datasets.load_builder(config.dataset.name, config.dataset.data_dir, builder_config)
    metadata = builder.info.metadata or {}
    synthetic = bool(metadata.get("synthetic")) or bool(
        config.dataset.synthetic_patients)
    comparable, reason = analysis.paper_comparison(config.dataset.name, builder_config, split,
                                                   synthetic)
    data = {"name": config.dataset.name, "builder_config": builder_config,
            "synthetic": synthetic,
            "split_examples": {name: int(info.num_examples)
                               for name, info in builder.info.splits.items()}}
    return data, {"comparable": comparable, "reason": reason}


def evaluate_workdir(workdir: str | os.PathLike, split: str = train.TEST_SPLIT, *,
                     seed: int | None = None, data_dir: str | None = None,
                     bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES
                     ) -> dict[str, Any]:
    """Evaluates a workdir, writes report.md, evaluation.json, predictions.csv and the
    model card (`bootstrap_resamples` = 0: no intervals); returns the JSON."""
    workdir = paths.resolve_path(workdir)
    seeds = inference.seed_run_dirs(workdir)
    model = inference.load(workdir, seed=seed)
    task = model.spec.task
    reports = task_reports.of(task)
    num_classes = model.num_classes
    predictions = split_predictions(model, split, data_dir)
    detail = reports.detail(predictions, num_classes, bootstrap_resamples,
                            list(model.spec.class_names))
    data, comparison = _dataset_facts(model, split, data_dir)
    report_path, json_path, predictions_path, card_path = split_files(workdir, split)
    evaluation = evaluation_head(
        workdir, model, split, reports.dataset_name(model.config, data), detail,
        predictions_path, training_results=_training_results(model.run_dir, split), data=data,
        paper_comparison=comparison)
    if seeds:
        runs = {s: predictions if int(model.config.seed) == s  # the detailed seed's, reused
                else split_predictions(inference.load(workdir, seed=s), split, data_dir)
                for s in seeds}
        per_seed = {s: task.metrics(p.probs, p.labels, num_classes) for s, p in runs.items()}
        evaluation["seeds"] = list(seeds)
        evaluation["per_seed"] = per_seed
        evaluation.update(reports.seed_results(per_seed, evaluation))
    if challenge_report.is_challenge_run(model.config):
        evaluation["challenge"] = _challenge_section(model, split, predictions, data_dir,
                                                     bootstrap_resamples)
    reports.write_artefacts(evaluation, predictions, workdir, {
        "report": report_path, "predictions": predictions_path, "card": card_path})
    logging_utils.write_json(json_path, evaluation)
    evaluation["report_path"] = str(report_path)
    return evaluation


def _challenge_section(model: inference.TrainedModel, split: str,
                       predictions: SplitPredictions, data_dir: str | None,
                       bootstrap_resamples: int) -> dict[str, Any]:
    """`challenge_report.evaluate` at thresholds chosen on validation (stored with the run)."""
    codes = challenge_report.class_codes(_with_data_dir(model.config, data_dir))

    def validation() -> tuple[np.ndarray, np.ndarray]:
        held_out = (predictions if split == train.VALIDATION_SPLIT
                    else split_predictions(model, train.VALIDATION_SPLIT, data_dir))
        return metrics.record_level(held_out.probs, held_out.labels, held_out.record_ids)[:2]

    chosen = challenge_report.thresholds(model.run_dir, model.step, codes, validation)
    probs, targets, _ = metrics.record_level(predictions.probs, predictions.labels,
                                             predictions.record_ids)
    return challenge_report.evaluate(probs, targets, codes, chosen, model.spec.class_names,
                                     bootstrap_resamples=bootstrap_resamples)


def run_cli(workdir: str | os.PathLike, split: str = train.TEST_SPLIT, *, seed: int | None = None,
            data_dir: str | None = None,
            bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
            dataset: str | None = None) -> int:
    """The command line: `evaluate_workdir` and a summary line; returns the exit status."""
    inference.quiet_orbax()
    try:
        if dataset:
            if not data_dir:
                raise ValueError("--dataset needs --data_dir (where that dataset is built)")
            from cardioformer_jax.evaluation import external

            evaluation = external.evaluate_external(
                workdir, dataset, data_dir, split=split, seed=seed,
                bootstrap_resamples=bootstrap_resamples)
        else:
            evaluation = evaluate_workdir(workdir, split, seed=seed, data_dir=data_dir,
                                          bootstrap_resamples=bootstrap_resamples)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    segment = evaluation["detail"]["segment"]
    where = evaluation["report_path"]
    if "fmax" in segment:  # multi-label or external: macro AUROC and Fmax
        label = "external " if evaluation.get("external") else ""
        print(f"{where}: {label}{evaluation['split']} macro AUROC {_pct(segment['auroc'])}, "
              f"Fmax {_pct(segment['fmax'])}")
        if "challenge" in evaluation:
            c = evaluation["challenge"]
            print(f"Challenge 2021: score {c['score']:.3f}, F-measure {c['f_measure']:.3f}, "
                  f"accuracy {c['accuracy']:.3f} ({c['num_recordings']} recordings)")
        return 0
    print(f"{where}: {evaluation['split']} AUROC {_pct(segment['auroc'])}, F1 "
          f"{_pct(segment['f1'])}, accuracy {_pct(segment['accuracy'])}, ECE "
          f"{evaluation['detail']['ece']:.4f}")
    for row in evaluation.get("seed_summary", ()):
        if row["metric"] == "auroc":
            print(f"AUROC over {len(evaluation['seeds'])} seeds: {row['formatted']} "
                  f"(paper: {row['paper'] or 'n/a'})")
    return 0
