"""The reports' rendering: plots, ``report.md`` and ``MODEL_CARD.md`` of an evaluation,
single- or multi-label (docs/training.md, "Evaluation artefacts")."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from etils import epath

from cardioformer_jax.core import paths
from cardioformer_jax.evaluation import analysis
from cardioformer_jax.evaluation.markdown import bootstrap_note as _bootstrap_note
from cardioformer_jax.evaluation.markdown import ci as _ci
from cardioformer_jax.evaluation.markdown import pct as _pct
from cardioformer_jax.evaluation.markdown import table as _table
from cardioformer_jax.training import train

if TYPE_CHECKING:
    from cardioformer_jax.evaluation.report import SplitPredictions

PLOTS_DIR = "plots"
MULTILABEL_REPORTED = ("auroc", "fmax", "auprc", "f1", "precision", "recall")


def _metrics_table(names: Sequence[str], values: Mapping[str, float],
                   intervals: Mapping[str, Mapping[str, float]] | None,
                   training: Mapping[str, float] | None = None) -> list[str]:
    """metric | value | 95% CI, and the training loop's value when `training` is given."""
    extra = ["training (results.json)"] if training else []
    return _table(["metric", "value", "95% CI", *extra],
                  [[name, _pct(values[name]), _ci(intervals, name),
                    *([_pct(training.get(name))] if training else [])] for name in names])


def _group_sections(detail: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The report's By sex / By age band sections (when the data has them)."""
    lines = []
    for key, title in (("by_sex", "By sex"), ("by_age", "By age band (years)")):
        if detail.get(key):
            lines += [f"## {title}", "", "Unknown values are left out.", ""]
            lines += _table(["group", "n", *names],
                            [[g, int(v["n"]), *(_pct(v[m]) for m in names)]
                             for g, v in detail[key].items()])
            lines.append("")
    return lines


def _subgroup_rows(detail: Mapping[str, Any], names: Sequence[str]) -> list[list[Any]]:
    """The model card's subgroup rows: subgroup, group, n and `names` in percent."""
    return [[title, g, int(v["n"]), *(_pct(v[m]) for m in names)]
            for key, title in (("by_sex", "sex"), ("by_age", "age band")) if detail.get(key)
            for g, v in detail[key].items()]


def _level_table(detail: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The model card's metrics of both levels with their intervals."""
    boot = detail.get("bootstrap") or {}
    return _table(["level", "metric", "value (%)", "95% CI (%)"],
                  [[level, name, _pct(detail[level][name]), _ci(boot.get(level), name)]
                   for level in ("segment", "record") for name in names])


def _run_lines(evaluation: Mapping[str, Any], unit: str) -> list[str]:
    """The report header's dataset and model lines."""
    detail = evaluation["detail"]
    return [f"- dataset: {evaluation['dataset']}; {detail['num_examples']} {unit} from "
            f"{detail['num_records']} records of {detail['num_subjects']} subjects",
            f"- model: {evaluation['model_name']}, run `{evaluation['run_dir']}`, checkpoint "
            f"step {evaluation['step']} (epoch {evaluation['epoch']}, the best validation "
            f"{evaluation.get('selection_metric', 'f1')}), SWA parameters"]


def _ece_ci(detail: Mapping[str, Any]) -> str:
    interval = ((detail.get("bootstrap") or {}).get("segment") or {}).get("ece")
    return f" (95% CI {interval['lower']:.4f}–{interval['upper']:.4f})" if interval else ""


def write_plots(predictions: SplitPredictions, result: Mapping[str, Any],
                class_names: Sequence[str], directory: str | os.PathLike, prefix: str
                ) -> dict[str, epath.Path]:
    """ROC, PR, confusion and reliability PNGs in `directory` (or a URL); their paths."""
    # The object-oriented API with the Agg canvas: no pyplot, no global backend state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = paths.as_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / f"{prefix}_{name}.png"
             for name in ("roc", "pr", "confusion", "reliability")}
    curves = analysis.per_class_curves(predictions.probs, predictions.labels)

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        # Through the epath file object: matplotlib opens a path itself, locally only.
        with files[name].open("wb") as f:
            fig.savefig(f, format="png", dpi=110)

    for plot, x, y, score, style, axes in (
            ("roc", "fpr", "tpr", "auroc", {}, ("false positive rate", "true positive rate",
                                                 "ROC, one vs rest", "lower right")),
            ("pr", "recall", "precision", "ap", {"drawstyle": "steps-post"},
             ("recall", "precision", "Precision-recall, one vs rest", "lower left"))):
        fig = Figure(figsize=(5.5, 5))
        ax = fig.add_subplot()
        for name, curve in zip(class_names, curves, strict=True):
            if curve is not None:
                ax.plot(curve[x], curve[y], **style,
                        label=f"{name} ({score.upper()} {_pct(curve[score])})")
        if plot == "roc":
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=axes[0], ylabel=axes[1], title=axes[2], xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc=axes[3], fontsize=8)
        save(fig, plot)

    confusion = np.asarray(result["confusion"], dtype=np.float64)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 * len(class_names) + 2.5, 1.1 * len(class_names) + 2))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{int(confusion[i, j])}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, list(class_names), rotation=30, ha="right")
    ax.set_yticks(ticks, list(class_names))
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: row share)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    save(fig, "confusion")

    bins = result["reliability"]
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    accuracy, count = np.asarray(bins["accuracy"], float), np.asarray(bins["count"])
    fig = Figure(figsize=(5.5, 6))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres, width = (lower + upper) / 2, upper - lower
    ax.bar(centres, np.nan_to_num(accuracy), width=width, edgecolor="black", alpha=0.7,
           label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (top label), ECE {result['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(centres, count, width=width, edgecolor="black", color="grey")
    ax_count.set(xlabel="confidence (largest probability)", ylabel="samples")
    save(fig, "reliability")
    return files


def render_report(evaluation: Mapping[str, Any], class_names: Sequence[str],
                  plots: Mapping[str, epath.Path], report_dir: epath.Path) -> str:
    """The Markdown report of an `evaluate_workdir` result."""
    split = evaluation["split"]
    detail = evaluation["detail"]
    lines = [f"# Evaluation of `{evaluation['workdir']}` ({split} split)", "",
             *_run_lines(evaluation, "samples")]
    if evaluation.get("seeds"):
        lines.append(f"- seeds: {', '.join(map(str, evaluation['seeds']))}; the detailed "
                     f"sections and plots are of seed {evaluation['seed']}")
    lines.append("- percentages: metrics x 100; AUROC one-vs-rest macro, AUPRC macro average "
                 "precision, precision/recall/F1 macro")
    lines.append("")

    training = evaluation.get("training_results")
    lines += ["## Segment level", ""]
    boot = detail.get("bootstrap") or {}
    lines += _metrics_table(analysis.REPORTED_METRICS, detail["segment"], boot.get("segment"),
                            training)
    lines += ["", f"Expected calibration error (top label, {analysis.ECE_BINS} equal-width "
              f"bins): **{detail['ece']:.4f}**" + _ece_ci(detail),
              "", _bootstrap_note(detail), ""]

    comparison = evaluation["paper_comparison"]
    if evaluation.get("seed_summary"):
        n = len(evaluation["seeds"])
        lines += [f"## Mean ± std over {n} seeds ({split})", ""]
        lines += _table(["metric", f"this work ({n} seeds)", "paper (5 seeds)"],
                        [[r["metric"], r["formatted"], r["paper"] or "–"]
                         for r in evaluation["seed_summary"]])
        lines += ["", "Per seed:", ""]
        lines += _table(["seed", *analysis.REPORTED_METRICS],
                        [[seed, *(_pct(v[m]) for m in analysis.REPORTED_METRICS)]
                         for seed, v in evaluation["per_seed"].items()])
        lines.append("")
    elif comparison["comparable"]:
        mean, std = analysis.PAPER_AUROC[evaluation["dataset"]]
        lines += [f"Paper AUROC on {evaluation['dataset']} (5 seeds): {mean:.2f} ± {std:.2f}; "
                  f"this run: {_pct(detail['segment']['auroc'])}.", ""]
    if not comparison["comparable"]:
        lines += [f"Not set beside the paper's results: {comparison['reason']}.", ""]

    record = detail["record"]
    lines += ["## Record level", "",
              f"Segment probabilities averaged per record ({int(record['n'])} records).", ""]
    lines += _metrics_table(analysis.REPORTED_METRICS, record, boot.get("record"))
    lines.append("")

    lines += ["## Per class", ""]
    lines += _table(["class", "support", "precision", "recall", "f1", "auroc",
                     "auroc 95% CI", "ap"],
                    [[name, r["support"], _pct(r["precision"]), _pct(r["recall"]),
                      _pct(r["f1"]), _pct(r["auroc"]), _ci(r, "auroc_ci"), _pct(r["ap"])]
                     for name, r in zip(class_names, detail["per_class"], strict=True)])
    lines += ["", *_group_sections(detail, analysis.REPORTED_METRICS)]

    bins = detail["reliability"]
    lines += ["## Calibration", "", f"ECE {detail['ece']:.4f}.", ""]
    lines += _table(["confidence bin", "samples", "mean confidence", "accuracy"],
                    [[f"({lo:.3f}, {hi:.3f}]", c, "–" if c == 0 else f"{conf:.4f}",
                      "–" if c == 0 else f"{acc:.4f}"]
                     for lo, hi, c, conf, acc in zip(bins["lower"], bins["upper"],
                                                     bins["count"], bins["confidence"],
                                                     bins["accuracy"], strict=True)])
    lines.append("")
    lines += ["## Plots", ""]
    titles = {"roc": "ROC curves", "pr": "Precision-recall curves",
              "confusion": "Confusion matrix", "reliability": "Reliability diagram"}
    for name, path in plots.items():
        lines += [f"![{titles[name]}]({path.relative_to(report_dir).as_posix()})", ""]
    return "\n".join(lines)


def render_model_card(evaluation: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """``MODEL_CARD.md``: intended use, data, metrics with their confidence intervals,
    calibration, subgroups and limitations of an `evaluate_workdir` result; every number
    is quoted from `evaluation` (as evaluation.json holds it)."""
    detail = evaluation["detail"]
    data = evaluation["data"]
    split = evaluation["split"]
    report_name = "report.md" if split == train.TEST_SPLIT else f"report_{split}.md"
    lines = [f"# Model card: {evaluation['model_name']} on {data['name']}", "",
             f"Generated by `python -m cardioformer_jax.evaluate` from run "
             f"`{evaluation['run_dir']}` (checkpoint step {evaluation['step']}, epoch "
             f"{evaluation['epoch']}, the best validation "
             f"{evaluation.get('selection_metric', 'f1')}; SWA parameters). Details: "
             f"`{report_name}`; per-example predictions: `{evaluation['predictions_file']}`.",
             "", "## Intended use", "",
             "Research on ECG classification: reproducing and studying the Cardioformer "
             "architecture. **Not a medical device**: not validated for clinical use, "
             "diagnosis or treatment decisions, and not to be used on patients.", "",
             "## Training data and split", "",
             f"- dataset: `{data['name']}`, builder config "
             f"`{data['builder_config'] or 'default'}`"
             + (" — a **synthetic twin** (generated signals, not recorded patients)"
                if data["synthetic"] else ""),
             f"- classes ({len(class_names)}): {', '.join(class_names)}; one label per "
             "example (single-label protocol)",
             "- split: subject-independent (every example of a subject in one split; "
             "docs/data.md)"]
    if data.get("split_examples"):
        lines.append("- examples per split: " + ", ".join(
            f"{name} {count}" for name, count in data["split_examples"].items()))
    lines += [f"- evaluated: the {split} split, {detail['num_examples']} examples from "
              f"{detail['num_records']} records of {detail['num_subjects']} subjects", ""]

    lines += [f"## Metrics ({split} split)", "", _bootstrap_note(detail), ""]
    lines += _level_table(detail, analysis.REPORTED_METRICS)
    lines += ["", "Segment level: every example; record level: segment probabilities "
              "averaged per record. Macro averages over the classes.", ""]

    lines += ["## Calibration", "",
              f"Expected calibration error (top label, {analysis.ECE_BINS} equal-width bins): "
              f"{detail['ece']:.4f}" + _ece_ci(detail)
              + f". Reliability table in `{report_name}` (Calibration) and diagram "
              f"`{PLOTS_DIR}/{split}_reliability.png`.", ""]

    lines += ["## Subgroups", ""]
    rows = _subgroup_rows(detail, ("accuracy", "auroc"))
    if rows:
        lines += _table(["subgroup", "group", "n", "accuracy (%)", "AUROC (%)"], rows)
        lines += ["", "Examples of unknown sex or age are left out; no intervals (small "
                  "groups).", ""]
    else:
        lines += ["Not reported: the dataset records neither sex nor age per example.", ""]

    lines += ["## Known limitations", "",
              "- Single-label superclass protocol: each example gets one class; records with "
              "several diagnoses are labelled or dropped by the builder's rules "
              "(docs/data.md), so co-occurring conditions are not predicted.",
              "- Fixed-length segments of a record are scored separately; the record-level "
              "figures average them.",
              "- Confidence intervals resample the evaluated split only; they do not cover "
              "variation over training seeds or other hospitals and devices."]
    if data["synthetic"]:
        lines.append("- **Synthetic demo data**: the numbers say nothing about performance "
                     "on real ECGs.")
    if not evaluation["paper_comparison"]["comparable"]:
        lines.append(f"- Not comparable with the paper's results: "
                     f"{evaluation['paper_comparison']['reason']}.")
    lines.append("")
    return "\n".join(lines)


def _multilabel_header(evaluation: Mapping[str, Any]) -> list[str]:
    lines = [*_run_lines(evaluation, "examples"),
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
    """Per source database (external validation): records, examples, AUROC, Fmax."""
    rows = [[db, v["records"], v["examples"], _pct(v["segment"]["auroc"]),
             _pct(v["segment"]["fmax"]), _pct(v["record"]["auroc"])]
            for db, v in detail["by_source"].items()]
    return ["## By source database", "",
            "The pooled figures above mix these databases; a class a database lacks has no "
            "AUROC there (macro means over the classes it has).", "",
            *_table(["source", "records", "examples", "auroc", "fmax", "record auroc"], rows),
            ""]


def render_multilabel_report(evaluation: Mapping[str, Any], title: str) -> str:
    """The Markdown report of a multi-label or external evaluation."""
    detail = evaluation["detail"]
    boot = detail.get("bootstrap") or {}
    lines = [f"# {title}", "", *_multilabel_header(evaluation), ""]
    training = evaluation.get("training_results")
    for level, heading in (("segment", "Example level"), ("record", "Record level")):
        lines += [f"## {heading}", ""]
        if level == "record":
            lines += [f"Probabilities averaged per record ({int(detail['record']['n'])} "
                      "records).", ""]
        lines += _metrics_table(MULTILABEL_REPORTED, detail[level], boot.get(level),
                                training if level == "segment" else None)
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
    lines += ["", *_group_sections(detail, ("auroc", "fmax"))]
    return "\n".join(lines)


def render_multilabel_card(evaluation: Mapping[str, Any], report_name: str) -> str:
    """``MODEL_CARD.md`` of a multi-label or external evaluation."""
    detail = evaluation["detail"]
    data = evaluation["data"]
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
             *_multilabel_header(evaluation), "",
             f"## Metrics ({evaluation['split']} split)", "", _bootstrap_note(detail), ""]
    lines += _level_table(detail, MULTILABEL_REPORTED)
    lines += ["", "## Calibration", "",
              f"Mean binary cross-entropy per class: {detail['segment']['loss']:.4f} "
              "(no top-label ECE: the classes are not exclusive).", "", "## Subgroups", ""]
    rows = _subgroup_rows(detail, ("auroc", "fmax"))
    if rows:
        lines += _table(["subgroup", "group", "n", "AUROC (%)", "Fmax (%)"], rows)
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
