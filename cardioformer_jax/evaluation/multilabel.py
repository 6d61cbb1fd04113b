"""Numbers and Markdown of a multi-label evaluation (PTB-XL benchmark, external validation).

docs/training.md, "Multi-label runs".
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from sklearn.metrics import average_precision_score

from cardioformer_jax.core import metrics, paths
from cardioformer_jax.evaluation import analysis, bootstrap
from cardioformer_jax.evaluation.markdown import bootstrap_note as _bootstrap_note
from cardioformer_jax.evaluation.markdown import ci as _ci
from cardioformer_jax.evaluation.markdown import pct as _pct
from cardioformer_jax.evaluation.markdown import table as _table

REPORTED = ("auroc", "fmax", "auprc", "f1", "precision", "recall")


def record_level(probs: np.ndarray, targets: np.ndarray, record_ids: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities averaged per record, the record's truth and the record ids (sorted);
    ValueError when the windows of one record disagree on the truth."""
    ids, first, inverse = np.unique(record_ids, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((ids.size, probs.shape[1]))
    np.add.at(sums, inverse, probs)
    record_targets = targets[first]
    if (record_targets[inverse] != targets).any():
        raise ValueError("windows of one record carry different labels")
    return sums / np.bincount(inverse, minlength=ids.size)[:, None], record_targets, ids


def bootstrap_intervals(probs: np.ndarray, targets: np.ndarray, *,
                        clusters: np.ndarray | None = None,
                        num_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
                        seed: int = analysis.BOOTSTRAP_SEED,
                        level: float = analysis.BOOTSTRAP_LEVEL) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap intervals of `metrics.MULTILABEL_KEYS`: the ``"intervals"`` of
    `bootstrap_analysis`."""
    return bootstrap_analysis(probs, targets, clusters=clusters, num_resamples=num_resamples,
                              seed=seed, level=level)["intervals"]


def bootstrap_analysis(probs: np.ndarray, targets: np.ndarray, *,
                       clusters: np.ndarray | None = None,
                       num_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
                       seed: int = analysis.BOOTSTRAP_SEED,
                       level: float = analysis.BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """Percentile bootstrap intervals of `metrics.MULTILABEL_KEYS` and of each class's
    AUROC, from `bootstrap.bootstrap_resamples` (examples, or whole `clusters`, drawn with
    replacement; resamples lacking a resamplable class redrawn). The result is that of
    `analysis.bootstrap_analysis`: macro AUROC/AUPRC intervals are over the resamplable
    classes, with their ``"point"`` over the same classes and the others in
    ``"too_rare"``."""
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    draws = bootstrap.bootstrap_resamples(targets, num_resamples, np.random.default_rng(seed),
                                        clusters=clusters)
    n = probs.shape[0]
    values: dict[str, list[np.ndarray]] = {}
    for weights in draws.blocks(max(1, 2_000_000 // max(1, n * probs.shape[1]))):
        for key, v in metrics.weighted_multilabel_metrics(
                probs, targets, weights, classes=draws.classes, per_class=True).items():
            values.setdefault(key, []).append(v)
    point = metrics.weighted_multilabel_metrics(probs, targets, np.ones((1, n)),
                                                classes=draws.classes)
    return analysis.resampled_summary(values, level, draws, point)


def analyse(probs: np.ndarray, targets: np.ndarray, expressible: np.ndarray, *,
            record_ids: np.ndarray, subject_ids: np.ndarray, ages: np.ndarray,
            sexes: np.ndarray, bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
            class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every number of a multi-label report (see the module docstring).

    `probs` ``(N, K)``, `targets` ``(N, K)`` 0/1 (ignored where not `expressible`),
    `expressible` ``(K,)`` bool; ids and demographics ``(N,)`` (-1 unknown);
    `class_names` name the too-rare classes of the bootstrap (default: the indices).
    """
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    expressible = np.asarray(expressible, bool)
    if not expressible.any():
        raise ValueError("none of the model's classes can be expressed by the evaluated data")
    if class_names is None:
        class_names = [str(c) for c in range(probs.shape[1])]
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"class_names has {len(class_names)} names for "
                         f"{probs.shape[1]} classes")
    p, y = probs[:, expressible], targets[:, expressible]
    record_probs, record_targets, ids = record_level(p, y, np.asarray(record_ids))
    per_class = []
    aurocs = metrics.per_class_auroc(probs, np.where(expressible, targets, 0))
    for k in range(probs.shape[1]):
        if not expressible[k]:
            per_class.append({"expressible": False, "support": None, "auroc": math.nan,
                              "ap": math.nan})
            continue
        support = int(targets[:, k].sum())
        ap = (float(average_precision_score(targets[:, k], probs[:, k]))
              if support else math.nan)
        per_class.append({"expressible": True, "support": support,
                          "auroc": float(aurocs[k]), "ap": ap})
    out: dict[str, Any] = {
        "num_examples": int(p.shape[0]),
        "num_records": int(ids.size),
        "num_subjects": int(np.unique(subject_ids).size),
        "segment": metrics.multilabel_metrics(p, y),
        "record": {"n": float(ids.size),
                   **metrics.multilabel_metrics(record_probs, record_targets)},
        "per_class": per_class,
    }
    for key, groups, order in (
            ("by_sex", analysis.sex_groups(sexes), list(analysis.SEX_NAMES.values())),
            ("by_age", analysis.age_bands(ages), [n for n, _, _ in analysis.AGE_BANDS])):
        rows = {}
        for name in order:
            mask = groups == name
            if mask.any():
                rows[name] = {"n": float(mask.sum()),
                              **metrics.multilabel_metrics(p[mask], y[mask])}
        if rows:
            out[key] = rows
    if bootstrap_resamples > 0:
        subject_ids = np.asarray(subject_ids)
        by_subject = bool((subject_ids >= 0).all())
        _, first = np.unique(record_ids, return_index=True)
        options = {"num_resamples": bootstrap_resamples}
        columns = np.flatnonzero(expressible)  # model class of each evaluated column
        boots = {
            "segment": bootstrap_analysis(p, y, clusters=subject_ids if by_subject else None,
                                          **options),
            "record": bootstrap_analysis(record_probs, record_targets,
                                         clusters=subject_ids[first] if by_subject else None,
                                         **options)}
        out["bootstrap"] = {
            "resamples": bootstrap_resamples, "seed": analysis.BOOTSTRAP_SEED,
            "level": analysis.BOOTSTRAP_LEVEL, "unit": "subject" if by_subject else "example",
            **{level: b["intervals"] for level, b in boots.items()},
            "redrawn": {level: b["redrawn"] for level, b in boots.items()},
            "too_rare": {level: {class_names[columns[c]]: reason
                                 for c, reason in b["too_rare"].items()}
                         for level, b in boots.items()},
        }
        for c, interval in zip(columns, boots["segment"]["per_class_auroc"], strict=True):
            per_class[c]["auroc_ci"] = interval
    return out


def write_predictions_csv(path: str | os.PathLike, class_names: Sequence[str],
                          probs: np.ndarray, targets: np.ndarray, expressible: np.ndarray,
                          record_ids: np.ndarray, subject_ids: np.ndarray,
                          segments: np.ndarray, sources: np.ndarray | None = None
                          ) -> epath.Path:
    """One row per example: ids, ``true_<class>`` (0/1, empty where the data cannot
    express the class) and ``p_<class>`` per class; with `sources`, a ``source`` column
    (the example's source database, external validation). Local or a URL."""
    path = paths.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    source_column = ["source"] if sources is not None else []
    writer.writerow(["record_id", "subject_id", "segment", *source_column,
                     *(f"true_{c}" for c in class_names), *(f"p_{c}" for c in class_names)])
    for i in range(probs.shape[0]):
        truth = [int(t) if e else "" for t, e in zip(targets[i], expressible, strict=True)]
        source = [sources[i]] if sources is not None else []
        writer.writerow([record_ids[i], int(subject_ids[i]), int(segments[i]), *source,
                         *truth, *(repr(float(v)) for v in probs[i])])
    path.write_text(buffer.getvalue())
    return path


def _header(evaluation: Mapping[str, Any]) -> list[str]:
    detail = evaluation["detail"]
    lines = [f"- dataset: {evaluation['dataset']}; {detail['num_examples']} examples from "
             f"{detail['num_records']} records of {detail['num_subjects']} subjects",
             f"- model: {evaluation['model_name']}, run `{evaluation['run_dir']}`, checkpoint "
             f"step {evaluation['step']} (epoch {evaluation['epoch']}, the best validation "
             f"{evaluation.get('selection_metric', 'f1')}), SWA parameters",
             "- multi-label: one probability per class; macro AUROC over the classes with "
             "positives and negatives; Fmax sample-centric (docs/benchmarks.md); "
             "F1/precision/recall macro at threshold 0.5; percentages = metrics x 100"]
    external = evaluation.get("external")
    if external:
        lines.insert(0, f"- **external validation**: trained on `{external['trained_on']}`, "
                        f"evaluated on `{external['evaluated_on']}` ({external['mapping']})")
        missing = [c for c, ok in zip(evaluation["classes"], external["expressible"],
                                      strict=True) if not ok]
        if missing:
            lines.append(f"- classes the evaluated data cannot express (left out of every "
                         f"metric): {', '.join(missing)}")
        for reason, count in sorted(external.get("skipped", {}).items()):
            lines.append(f"- examples not evaluated: {count} ({reason})")
        trained = external.get("training_databases")
        if trained:
            left_out = external.get("excluded_training_records") or {}
            counts = ", ".join(f"{n} {db} record{'s' if n != 1 else ''}"
                               for db, n in left_out.items()) or "none in this split"
            lines.append(f"- left out, from the databases the run was trained on "
                         f"({', '.join(trained)}): {counts}")
    return lines


def _source_table(detail: Mapping[str, Any]) -> list[str]:
    """Per source database: records, examples, example-level AUROC / Fmax, record-level
    AUROC (external validation)."""
    rows = [[db, v["records"], v["examples"], _pct(v["segment"]["auroc"]),
             _pct(v["segment"]["fmax"]), _pct(v["record"]["auroc"])]
            for db, v in detail["by_source"].items()]
    return ["## By source database", "",
            "The pooled figures above mix these databases; a class a database lacks has no "
            "AUROC there (macro means over the classes it has).", "",
            *_table(["source", "records", "examples", "auroc", "fmax", "record auroc"], rows),
            ""]


def render_report(evaluation: Mapping[str, Any], title: str) -> str:
    """The Markdown report of a multi-label evaluation (`report.evaluate_workdir`,
    `external.evaluate_external`)."""
    detail = evaluation["detail"]
    boot = detail.get("bootstrap") or {}
    lines = [f"# {title}", "", *_header(evaluation), ""]
    training = evaluation.get("training_results")
    for level, heading in (("segment", "Example level"), ("record", "Record level")):
        lines += [f"## {heading}", ""]
        if level == "record":
            lines += [f"Probabilities averaged per record ({int(detail['record']['n'])} "
                      "records).", ""]
        headers = ["metric", "value", "95% CI"]
        with_training = training and level == "segment"
        if with_training:
            headers.append("training (results.json)")
        rows = []
        for name in REPORTED:
            row = [name, _pct(detail[level][name]), _ci(boot.get(level), name)]
            if with_training:
                row.append(_pct(training.get(name)))
            rows.append(row)
        lines += _table(headers, rows)
        lines.append("")
    lines += [_bootstrap_note(detail), ""]
    if detail.get("by_source"):
        lines += _source_table(detail)
    single = evaluation.get("single_label")
    if single:
        lines += ["## Single-label view", "",
                  f"The model is single-label (softmax): on the {single['n']} examples "
                  "with exactly one expressible class.", ""]
        lines += _table(["metric", "value"],
                        [[m, _pct(single["metrics"][m])] for m in analysis.REPORTED_METRICS])
        lines.append("")
    lines += ["## Per class", ""]
    lines += _table(["class", "support", "auroc", "auroc 95% CI", "ap"],
                    [[name, "not expressible" if not r["expressible"] else r["support"],
                      _pct(r["auroc"]), _ci(r, "auroc_ci"), _pct(r["ap"])]
                     for name, r in zip(evaluation["classes"], detail["per_class"],
                                        strict=True)])
    lines.append("")
    for key, heading in (("by_sex", "By sex"), ("by_age", "By age band (years)")):
        if detail.get(key):
            lines += [f"## {heading}", "", "Unknown values are left out.", ""]
            lines += _table(["group", "n", "auroc", "fmax"],
                            [[g, int(v["n"]), _pct(v["auroc"]), _pct(v["fmax"])]
                             for g, v in detail[key].items()])
            lines.append("")
    return "\n".join(lines)


def render_model_card(evaluation: Mapping[str, Any], report_name: str) -> str:
    """``MODEL_CARD.md`` of a multi-label or external evaluation."""
    detail = evaluation["detail"]
    data = evaluation["data"]
    boot = detail.get("bootstrap") or {}
    classes = evaluation["classes"]
    lines = [f"# Model card: {evaluation['model_name']} on {data['name']}", "",
             f"Generated by `python -m cardioformer_jax.evaluate` from run "
             f"`{evaluation['run_dir']}` (checkpoint step {evaluation['step']}, epoch "
             f"{evaluation['epoch']}; SWA parameters). Details: `{report_name}`; "
             f"per-example predictions: `{evaluation['predictions_file']}`.", "",
             "## Intended use", "",
             "Research on ECG classification. **Not a medical device**: not validated for "
             "clinical use, diagnosis or treatment decisions, and not to be used on "
             "patients.", "",
             "## Data and split", "",
             f"- evaluated: `{data['name']}`, builder config "
             f"`{data['builder_config'] or 'default'}`, {evaluation['split']} split"
             + (" — a **synthetic twin**" if data.get("synthetic") else ""),
             f"- classes ({len(classes)}): {', '.join(classes)}; multi-label truth",
             *_header(evaluation), "",
             f"## Metrics ({evaluation['split']} split)", "", _bootstrap_note(detail), ""]
    rows = [[level, name, _pct(detail[level][name]), _ci(boot.get(level), name)]
            for level in ("segment", "record") for name in REPORTED]
    lines += _table(["level", "metric", "value (%)", "95% CI (%)"], rows)
    lines += ["", "## Calibration", "",
              f"Mean binary cross-entropy per class: {detail['segment']['loss']:.4f} "
              "(no top-label ECE: the classes are not exclusive).", "", "## Subgroups", ""]
    groups = [(k, t) for k, t in (("by_sex", "sex"), ("by_age", "age band")) if detail.get(k)]
    if groups:
        lines += _table(["subgroup", "group", "n", "AUROC (%)", "Fmax (%)"],
                        [[t, g, int(v["n"]), _pct(v["auroc"]), _pct(v["fmax"])]
                         for k, t in groups for g, v in detail[k].items()])
        lines.append("")
    else:
        lines += ["Not reported: the data records neither sex nor age.", ""]
    lines += ["## Known limitations", "",
              "- Confidence intervals resample the evaluated split only; they do not cover "
              "variation over training seeds.",
              "- Fmax picks its threshold on the evaluated data itself (the benchmark's "
              "definition), so it is optimistic for a deployed threshold."]
    if evaluation.get("external"):
        lines.append("- External labels come from another dataset's coding, mapped to this "
                     "model's classes (docs/data.md); the mapping is approximate.")
    if data.get("synthetic"):
        lines.append("- **Synthetic demo data**: the numbers say nothing about real ECGs.")
    lines.append("")
    return "\n".join(lines)
