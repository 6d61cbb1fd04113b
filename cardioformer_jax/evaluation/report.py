"""A report on a trained run's best checkpoint: the library of ``cardioformer_jax.evaluate``.

docs/training.md, "Evaluation artefacts".
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from cardioformer_jax.core import logging_utils, metrics, paths
from cardioformer_jax.data import datasets
from cardioformer_jax.evaluation import (
    analysis,
    challenge_report,
    inference,
    multilabel,
    report_render,
)
from cardioformer_jax.evaluation.markdown import pct as _pct
from cardioformer_jax.evaluation.markdown import table as _table
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


def split_predictions(model: inference.TrainedModel, split: str, data_dir: str | None = None
                      ) -> SplitPredictions:
    """Probabilities of every example of `split` (`steps.predict`, the evaluation the
    training loop runs) with the examples' record, subject, age and sex."""
    config = _with_data_dir(model.config, data_dir)
    programs = steps.programs(config, model.mesh)
    out = steps.predict(programs.eval, model.params, model.rngs, config, split, model.mesh,
                        progress=True)
    source = datasets.data_source(config.dataset.name, config.dataset.data_dir, split,
                                  config.dataset.builder_config or None)
    rows = [source[int(i)] for i in out["index"]]

    def field(name: str, default: float, dtype: Any) -> np.ndarray:
        return np.asarray([row.get(name, default) for row in rows], dtype=dtype)

    record_ids = np.asarray([r["record_id"].decode() if isinstance(r["record_id"], bytes)
                             else str(r["record_id"]) for r in rows], dtype=object)
    return SplitPredictions(
        probs=np.asarray(out["probs"], np.float64), labels=np.asarray(out["label"], np.int64),
        record_ids=record_ids, subject_ids=field("subject_id", -1, np.int64),
        ages=field("age", -1.0, np.float64), sexes=field("sex", -1, np.int64),
        segments=field("segment", -1, np.int64))


def _record_subjects(predictions: SplitPredictions) -> np.ndarray:
    """The subject of each record, in the sorted record order of `metrics.record_level`."""
    _, first = np.unique(predictions.record_ids, return_index=True)
    return predictions.subject_ids[first]


def bootstrap(predictions: SplitPredictions, num_classes: int,
              num_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
              seed: int = analysis.BOOTSTRAP_SEED,
              class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Bootstrap confidence intervals of the segment- and record-level metrics (and ECE),
    resampling subjects when the dataset records them, else examples (records); resamples
    lacking a resamplable class are redrawn (`bootstrap.bootstrap_resamples`). Besides the
    intervals: ``"redrawn"`` and ``"too_rare"`` (``{class name: reason}``) per level, and
    ``"per_class_auroc"`` (segment level, one interval or None per class)."""
    p, y = predictions.probs, predictions.labels
    names = (list(class_names) if class_names is not None
             else [str(c) for c in range(num_classes)])
    by_subject = bool((predictions.subject_ids >= 0).all())
    record_probs, record_labels, _ = metrics.record_level(p, y, predictions.record_ids)
    options = {"num_resamples": num_resamples, "seed": seed}
    boots = {
        "segment": analysis.bootstrap_analysis(
            p, y, num_classes, clusters=predictions.subject_ids if by_subject else None,
            **options),
        "record": analysis.bootstrap_analysis(
            record_probs, record_labels, num_classes,
            clusters=_record_subjects(predictions) if by_subject else None, **options),
    }
    return {
        "resamples": num_resamples, "seed": seed, "level": analysis.BOOTSTRAP_LEVEL,
        "unit": "subject" if by_subject else "example",
        **{level: b["intervals"] for level, b in boots.items()},
        "redrawn": {level: b["redrawn"] for level, b in boots.items()},
        "too_rare": {level: {names[c]: reason for c, reason in b["too_rare"].items()}
                     for level, b in boots.items()},
        "per_class_auroc": boots["segment"]["per_class_auroc"],
    }


def analyse(predictions: SplitPredictions, num_classes: int,
            bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
            class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every number of the report's detailed sections (see `analysis`); with
    `bootstrap_resamples` > 0 also their bootstrap confidence intervals (`bootstrap`),
    each per-class row then carrying its AUROC interval (``"auroc_ci"``)."""
    p, y = predictions.probs, predictions.labels
    out: dict[str, Any] = {
        "num_examples": int(y.size),
        "num_records": int(np.unique(predictions.record_ids).size),
        "num_subjects": int(np.unique(predictions.subject_ids).size),
        "segment": metrics.classification_metrics(p, y, num_classes=num_classes),
        "record": analysis.record_level_metrics(p, y, predictions.record_ids, num_classes),
        "ece": analysis.expected_calibration_error(p, y),
        "reliability": {k: v.tolist() for k, v in analysis.reliability_bins(p, y).items()},
        "confusion": analysis.confusion_matrix(p, y).tolist(),
        "per_class": analysis.per_class_metrics(p, y),
    }
    sex = analysis.sex_groups(predictions.sexes)
    if (sex != analysis.UNKNOWN).any():
        out["by_sex"] = analysis.metrics_by_group(p, y, sex, num_classes,
                                                  order=list(analysis.SEX_NAMES.values()))
    age = analysis.age_bands(predictions.ages)
    if (age != analysis.UNKNOWN).any():
        out["by_age"] = analysis.metrics_by_group(
            p, y, age, num_classes, order=[name for name, _, _ in analysis.AGE_BANDS])
    if bootstrap_resamples > 0:
        out["bootstrap"] = bootstrap(predictions, num_classes, bootstrap_resamples,
                                     class_names=class_names)
        for row, interval in zip(out["per_class"], out["bootstrap"]["per_class_auroc"],
                                 strict=True):
            row["auroc_ci"] = interval
    return out


def write_predictions_csv(predictions: SplitPredictions, class_names: Sequence[str],
                          path: str | os.PathLike) -> epath.Path:
    """One row per example: ids, true class (name and index), one probability column per
    class (named by the class) and the predicted (argmax) class. Local or a URL."""
    path = paths.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    predicted = predictions.probs.argmax(axis=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["record_id", "subject_id", "segment", "label", "label_index",
                     *class_names, "predicted", "predicted_index"])
    for i in range(predictions.labels.shape[0]):
        label, guess = int(predictions.labels[i]), int(predicted[i])
        writer.writerow([predictions.record_ids[i], int(predictions.subject_ids[i]),
                         int(predictions.segments[i]), class_names[label], label,
                         *(repr(float(v)) for v in predictions.probs[i]),
                         class_names[guess], guess])
    path.write_text(buffer.getvalue())
    return path


# --- the whole evaluation -------------------------------------------------------------------


def _training_results(run_dir: epath.Path, split: str) -> dict[str, float] | None:
    try:
        return json.loads((run_dir / train.RESULTS_FILE).read_text())[split]
    except (OSError, KeyError, ValueError):
        return None


def report_paths(workdir: str | os.PathLike, split: str) -> tuple[epath.Path, epath.Path]:
    """``(report.md, evaluation.json)`` of `split` (suffixed for splits other than test)."""
    workdir = paths.resolve_path(workdir)
    suffix = "" if split == train.TEST_SPLIT else f"_{split}"
    return workdir / f"report{suffix}.md", workdir / f"evaluation{suffix}.json"


def artefact_paths(workdir: str | os.PathLike, split: str) -> tuple[epath.Path, epath.Path]:
    """``(predictions.csv, MODEL_CARD.md)`` of `split`, beside evaluation.json and
    report.md (suffixed for splits other than test)."""
    workdir = paths.resolve_path(workdir)
    suffix = "" if split == train.TEST_SPLIT else f"_{split}"
    return workdir / f"predictions{suffix}.csv", workdir / f"MODEL_CARD{suffix}.md"


def _evaluation_head(workdir: epath.Path, detail_dir: epath.Path, split: str,
                     model: inference.TrainedModel, dataset: str, detail: dict[str, Any],
                     data: dict[str, Any], comparison: dict[str, Any],
                     predictions_path: epath.Path) -> dict[str, Any]:
    """What every evaluation.json starts with: the run, the split, the data, the details."""
    return {
        "workdir": str(workdir), "run_dir": str(detail_dir), "split": split,
        "dataset": dataset,
        "model_name": model.config.model_name,
        "selection_metric": model.config.train.selection_metric,
        "seed": int(model.config.seed), "step": model.step, "epoch": model.epoch,
        "classes": list(model.spec.class_names), "detail": detail,
        "training_results": _training_results(detail_dir, split),
        "data": data, "paper_comparison": comparison,
        "predictions_file": predictions_path.name,
    }


def _per_seed_metrics(workdir: epath.Path, seeds: Mapping[int, epath.Path],
                      model: inference.TrainedModel, predictions: SplitPredictions,
                      split: str, data_dir: str | None,
                      score: Callable[[SplitPredictions], dict[str, float]]
                      ) -> dict[int, dict[str, float]]:
    """`score` of every seed's run on `split` (the detailed seed's predictions reused)."""
    per_seed = {}
    for s in seeds:
        if int(model.config.seed) == s:
            per_seed[s] = score(predictions)
        else:
            per_seed[s] = score(split_predictions(inference.load(workdir, seed=s), split,
                                                  data_dir))
    return per_seed


def _dataset_facts(model: inference.TrainedModel, split: str, data_dir: str | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the model card says of the dataset the run was trained on, as built, and
    `analysis.paper_comparison` for it."""
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
    """Evaluates a training workdir, writes the report, plots, JSON, per-example
    predictions and model card; returns the JSON. `bootstrap_resamples` = 0: no
    confidence intervals."""
    workdir = paths.resolve_path(workdir)
    seeds = inference.seed_run_dirs(workdir)
    detail_dir = inference.resolve_run_dir(workdir, seed)
    model = inference.load(workdir, seed=seed)
    if model.spec.task.multilabel:
        return _evaluate_multilabel(workdir, split, model, detail_dir, seeds, data_dir,
                                    bootstrap_resamples)
    class_names = list(model.spec.class_names)
    num_classes = model.num_classes
    predictions = split_predictions(model, split, data_dir)
    detail = analyse(predictions, num_classes, bootstrap_resamples, class_names)
    data, comparison = _dataset_facts(model, split, data_dir)
    predictions_path, card_path = artefact_paths(workdir, split)

    evaluation = _evaluation_head(workdir, detail_dir, split, model,
                                  model.config.dataset.name, detail, data, comparison,
                                  predictions_path)
    if seeds:
        per_seed = _per_seed_metrics(
            workdir, seeds, model, predictions, split, data_dir,
            lambda p: metrics.classification_metrics(p.probs, p.labels,
                                                     num_classes=num_classes))
        evaluation["seeds"] = list(seeds)
        evaluation["per_seed"] = per_seed
        evaluation["seed_summary"] = analysis.seed_summary(
            per_seed, evaluation["dataset"],
            compare_with_paper=evaluation["paper_comparison"]["comparable"])

    report_path, json_path = report_paths(workdir, split)
    plots = report_render.write_plots(predictions, detail, class_names,
                                      workdir / report_render.PLOTS_DIR, split)
    report_path.write_text(report_render.render_report(evaluation, class_names, plots, workdir))
    write_predictions_csv(predictions, class_names, predictions_path)
    card_path.write_text(report_render.render_model_card(evaluation, class_names))
    logging_utils.write_json(json_path, evaluation)
    return evaluation


def _evaluate_multilabel(workdir: epath.Path, split: str, model: inference.TrainedModel,
                         detail_dir: epath.Path, seeds: Mapping[int, epath.Path],
                         data_dir: str | None, bootstrap_resamples: int) -> dict[str, Any]:
    """`evaluate_workdir` for a multi-label run (the PTB-XL benchmark): the report of
    `multilabel`, per-seed macro AUROC / Fmax for a multi-seed workdir."""
    class_names = list(model.spec.class_names)
    predictions = split_predictions(model, split, data_dir)
    expressible = np.ones(len(class_names), bool)
    detail = multilabel.analyse(
        predictions.probs, predictions.labels, expressible,
        record_ids=predictions.record_ids, subject_ids=predictions.subject_ids,
        ages=predictions.ages, sexes=predictions.sexes,
        bootstrap_resamples=bootstrap_resamples, class_names=class_names)
    data, comparison = _dataset_facts(model, split, data_dir)
    predictions_path, card_path = artefact_paths(workdir, split)
    evaluation = _evaluation_head(
        workdir, detail_dir, split, model,
        f"{model.config.dataset.name}/{data['builder_config'] or 'default'}", detail, data,
        comparison, predictions_path)
    if seeds:
        per_seed = _per_seed_metrics(
            workdir, seeds, model, predictions, split, data_dir,
            lambda p: metrics.multilabel_metrics(p.probs, p.labels))
        evaluation["seeds"] = list(seeds)
        evaluation["per_seed"] = per_seed
        evaluation["seed_aggregate"] = metrics.aggregate_seeds(list(per_seed.values()))
    if challenge_report.is_challenge_run(model.config):
        evaluation["challenge"] = _challenge_section(model, detail_dir, split, predictions,
                                                     data_dir, bootstrap_resamples)
    report_path, json_path = report_paths(workdir, split)
    text = multilabel.render_report(
        evaluation, f"Evaluation of `{workdir}` ({split} split)")
    if "challenge" in evaluation:
        text += "\n" + "\n".join(challenge_report.render(evaluation["challenge"]))
    if seeds:
        aggregate = evaluation["seed_aggregate"]
        text += "\n" + "\n".join(
            [f"## Mean ± std over {len(seeds)} seeds ({split})", "",
             *_table(["metric", "mean ± std (%)"],
                                [[m, metrics.format_mean_std(aggregate[m])]
                                 for m in multilabel.REPORTED]), ""])
    report_path.write_text(text)
    multilabel.write_predictions_csv(predictions_path, class_names, predictions.probs,
                                     predictions.labels, expressible, predictions.record_ids,
                                     predictions.subject_ids, predictions.segments)
    card_path.write_text(multilabel.render_model_card(evaluation, report_path.name))
    logging_utils.write_json(json_path, evaluation)
    return evaluation


def _challenge_section(model: inference.TrainedModel, run_dir: epath.Path, split: str,
                       predictions: SplitPredictions, data_dir: str | None,
                       bootstrap_resamples: int) -> dict[str, Any]:
    """`challenge_report.evaluate` of a cinc2021 run on `split`, at thresholds chosen on
    validation (stored with the run)."""
    codes = challenge_report.class_codes(_with_data_dir(model.config, data_dir))

    def validation() -> tuple[np.ndarray, np.ndarray]:
        held_out = (predictions if split == challenge_report.VALIDATION_SPLIT
                    else split_predictions(model, challenge_report.VALIDATION_SPLIT, data_dir))
        return challenge_report.record_level(held_out.probs, held_out.labels,
                                             held_out.record_ids)

    chosen = challenge_report.thresholds(run_dir, model.step, codes, validation)
    probs, targets = challenge_report.record_level(predictions.probs, predictions.labels,
                                                   predictions.record_ids)
    return challenge_report.evaluate(probs, targets, codes, chosen, model.spec.class_names,
                                     bootstrap_resamples=bootstrap_resamples)


def run_cli(workdir: str | os.PathLike, split: str = train.TEST_SPLIT, *, seed: int | None = None,
            data_dir: str | None = None,
            bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
            dataset: str | None = None) -> int:
    """The command line: `evaluate_workdir` and a one-line summary on stdout (an unusable
    workdir or dataset: ``error: ...`` on stderr); returns the exit status."""
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
    if "fmax" in segment:  # multi-label or external: macro AUROC and Fmax
        where = evaluation.get("report_path") or report_paths(workdir, split)[0]
        label = "external " if evaluation.get("external") else ""
        print(f"{where}: {label}{evaluation['split']} macro AUROC {_pct(segment['auroc'])}, "
              f"Fmax {_pct(segment['fmax'])}")
        if "challenge" in evaluation:
            c = evaluation["challenge"]
            print(f"Challenge 2021: score {c['score']:.3f}, F-measure {c['f_measure']:.3f}, "
                  f"accuracy {c['accuracy']:.3f} ({c['num_recordings']} recordings)")
        return 0
    report, _ = report_paths(workdir, split)
    print(f"{report}: {evaluation['split']} AUROC {_pct(segment['auroc'])}, F1 "
          f"{_pct(segment['f1'])}, accuracy {_pct(segment['accuracy'])}, ECE "
          f"{evaluation['detail']['ece']:.4f}")
    for row in evaluation.get("seed_summary", ()):
        if row["metric"] == "auroc":
            print(f"AUROC over {len(evaluation['seeds'])} seeds: {row['formatted']} "
                  f"(paper: {row['paper'] or 'n/a'})")
    return 0
