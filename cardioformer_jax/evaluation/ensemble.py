"""Ensembles of trained runs on one split (docs/training.md, "Ensembles")."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from cardioformer_jax.core import logging_utils, metrics, paths, tasks
from cardioformer_jax.evaluation import analysis, inference, report, task_reports
from cardioformer_jax.evaluation.markdown import ci, pct, redraw_note, table
from cardioformer_jax.training import train


def _features(probs: Sequence[np.ndarray]) -> np.ndarray:
    # Log-probabilities: the members' evidence adds up linearly in the regression.
    return np.log(np.clip(np.concatenate(probs, axis=1), metrics.PROB_EPS, 1.0))


def stacked_probabilities(val_probs: Sequence[np.ndarray], val_labels: np.ndarray,
                          test_probs: Sequence[np.ndarray], task: tasks.Task) -> np.ndarray:
    """The task's meta-learner (`task_reports`), fitted on validation, on the split."""
    return task_reports.of(task).stacked(_features(val_probs), val_labels,
                                         _features(test_probs), test_probs)


def _auroc_by_subgroup(probs: np.ndarray, labels: np.ndarray,
                       predictions: report.SplitPredictions, task: tasks.Task
                       ) -> dict[str, float]:
    """Macro AUROC per sex and age band (`analysis.by_subgroup`)."""
    groups = analysis.by_subgroup(predictions.sexes, predictions.ages, lambda m: task.metrics(
        probs[m], labels[m], probs.shape[1])["auroc"])
    return {name: auroc for rows in groups.values() for name, auroc in rows.items()}


def evaluate_ensemble(workdirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                      split: str = train.TEST_SPLIT, data_dir: str | None = None,
                      bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES
                      ) -> dict[str, Any]:
    """Evaluates the runs together on `split`; returns the JSON it writes. ValueError for
    fewer than two runs, different label spaces, or the validation split (the meta-learner's)."""
    if len(workdirs) < 2:
        raise ValueError("an ensemble needs at least two --workdir runs")
    if split == train.VALIDATION_SPLIT:
        raise ValueError("the stacked meta-learner is fitted on the validation split; "
                         "evaluate the ensemble on another split")
    models = [inference.load(w) for w in workdirs]
    identities = {(m.config.dataset.name, m.config.dataset.builder_config or "default",
                   tuple(m.spec.class_names), m.spec.task.name) for m in models}
    if len(identities) > 1:
        raise ValueError(f"the runs were trained on different datasets or classes: "
                         f"{sorted(identities)}; an ensemble needs one label space")
    task = models[0].spec.task
    reports = task_reports.of(task)
    names = [f"{i + 1}: {m.config.model_name} seed "
             f"{int(m.config.seed)} ({m.run_dir})" for i, m in enumerate(models)]
    val = [report.split_predictions(m, train.VALIDATION_SPLIT, data_dir) for m in models]
    test = [report.split_predictions(m, split, data_dir) for m in models]
    for other in test[1:]:
        if not np.array_equal(other.record_ids, test[0].record_ids):
            raise ValueError("the runs read different examples (another data_dir or "
                             "build?); an ensemble needs the same split")
    labels, val_labels = test[0].labels, val[0].labels
    candidates = {name: p.probs for name, p in zip(names, test, strict=True)}
    candidates["mean of the members"] = np.mean([p.probs for p in test], axis=0)
    candidates["stacked (logistic regression fitted on validation)"] = stacked_probabilities(
        [p.probs for p in val], val_labels, [p.probs for p in test], task)

    k = len(models[0].spec.class_names)
    clusters = test[0].subject_ids if (test[0].subject_ids >= 0).all() else None
    results = {}
    for name, probs in candidates.items():
        intervals = (reports.intervals(probs, labels, k, clusters, bootstrap_resamples)
                     if bootstrap_resamples else {})
        results[name] = {"metrics": task.metrics(probs, labels, k), "intervals": intervals,
                         "auroc_by_subgroup": _auroc_by_subgroup(probs, labels, test[0], task)}

    out_dir = paths.resolve_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, json_path = report.split_files(out_dir, split,
                                                ("ensemble_report.md", "ensemble.json"))
    evaluation = {
        "split": split, "members": [str(m.run_dir) for m in models],
        "dataset": f"{models[0].config.dataset.name}/"
                   f"{models[0].config.dataset.builder_config or 'default'}",
        "classes": list(models[0].spec.class_names), "multilabel": task.multilabel,
        "num_examples": int(labels.shape[0]), "meta_learner_fit_examples":
            int(val_labels.shape[0]), "results": results,
    }
    shown = reports.reported
    lines = [f"# Ensemble of {len(models)} runs ({split} split)", "",
             f"- dataset: {evaluation['dataset']}; {labels.shape[0]} examples",
             f"- stacked: logistic regression on the members' log-probabilities, fitted on "
             f"the {val_labels.shape[0]} validation examples",
             "- percentages: metrics x 100, 95% bootstrap intervals in brackets", ""]
    rows = [[name, *(f"{pct(r['metrics'][m])} [{ci(r['intervals'], m)}]" for m in shown)]
            for name, r in results.items()]
    lines += table(["model", *shown], rows)
    auroc_ci = next(iter(results.values()))["intervals"].get("auroc")
    if auroc_ci and "redrawn" in auroc_ci:
        # Every model is resampled alike: the draws depend on the truth and subjects only.
        classes = evaluation["classes"]
        lines += ["", redraw_note({f"{split} split": auroc_ci["redrawn"]},
                                  {f"{split} split": [classes[c] for c in auroc_ci["too_rare"]]})]
    groups = list(next(iter(results.values()))["auroc_by_subgroup"])
    if groups:
        lines += ["", "Macro AUROC by subgroup (unknown sex or age left out): where a "
                  "change, e.g. age and sex fusion (`model.tabular`), gains or loses.", ""]
        lines += table(["model", *groups],
                       [[name, *(pct(r["auroc_by_subgroup"][g]) for g in groups)]
                        for name, r in results.items()])
    lines.append("")
    report_path.write_text("\n".join(lines))
    logging_utils.write_json(json_path, evaluation)
    evaluation["report_path"] = str(report_path)
    return evaluation


def run_cli(workdirs: Sequence[str], out_dir: str | None, split: str, *,
            data_dir: str | None = None,
            bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES) -> int:
    """The command line of an ensemble: one line per candidate; returns the exit status."""
    inference.quiet_orbax()
    try:
        if not out_dir:
            raise ValueError("several --workdir runs are evaluated as an ensemble: give "
                             "--out=DIR for its report")
        evaluation = evaluate_ensemble(workdirs, out_dir, split=split, data_dir=data_dir,
                                       bootstrap_resamples=bootstrap_resamples)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(evaluation["report_path"])
    for name, result in evaluation["results"].items():
        print(f"  {name}: AUROC {pct(result['metrics']['auroc'])}, F1 "
              f"{pct(result['metrics']['f1'])}")
    return 0
