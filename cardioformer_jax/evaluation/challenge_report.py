"""The Challenge 2021 section of a `cinc2021` run's evaluation (docs/training.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from cardioformer_jax.core import logging_utils, metrics, tasks
from cardioformer_jax.data import datasets
from cardioformer_jax.evaluation import analysis, bootstrap, challenge
from cardioformer_jax.evaluation.markdown import table as _table

THRESHOLDS_FILE = "challenge_thresholds.json"
REPORTED = ("score", "f_measure", "accuracy", "auroc", "auprc")


def is_challenge_run(config: Any) -> bool:
    """A multi-label run on the cinc2021 builder's scored classes."""
    return config.dataset.name == "cinc2021" and tasks.from_config(config).multilabel


def class_codes(config: Any) -> tuple[str, ...]:
    """The run's classes' SNOMED CT codes (``a|b`` a pair) from the build's metadata."""
    builder = datasets.load_builder(config.dataset.name, config.dataset.data_dir,
                                    config.dataset.builder_config or None)
    codes = tuple((builder.info.metadata or {}).get("multilabel_codes") or ())
    if len(codes) != int(config.dataset.num_classes):
        raise ValueError(f"the cinc2021 build in {config.dataset.data_dir} names "
                         f"{len(codes)} class codes; the run has {config.dataset.num_classes} "
                         "classes")
    return codes


def thresholds(run_dir: epath.Path, step: int, codes: Sequence[str],
               validation: Callable[[], tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """The stored thresholds of checkpoint `step`, or new ones chosen on `validation()`
    (record-level probabilities and truth) and stored in ``run_dir/THRESHOLDS_FILE``."""
    path = run_dir / THRESHOLDS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("step") == step and stored.get("codes") == list(codes):
            return stored
    probs, targets = validation()
    chosen = challenge.choose_thresholds(probs, targets)
    stored = {"step": int(step), "codes": list(codes),
              "thresholds": [float(t) for t in chosen],
              "rule": "per class, the threshold of challenge.DEFAULT_GRID with the best "
                      "validation F-measure (ties: fewer errors, then the smaller)",
              "validation_recordings": int(probs.shape[0])}
    logging_utils.write_json(path, stored)
    return stored


def evaluate(probs: np.ndarray, targets: np.ndarray, codes: Sequence[str],
             chosen: Mapping[str, Any], names: Sequence[str], *,
             bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
             seed: int = analysis.BOOTSTRAP_SEED,
             level: float = analysis.BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """The Challenge section of record-level `probs` / `targets` ``(N, K)`` (columns in the
    run's order, named by `codes` and `names`) at the `thresholds` result `chosen`."""
    values = challenge.challenge_metrics(probs, targets, chosen["thresholds"], codes)
    ranking = metrics.multilabel_metrics(probs, targets)
    order = challenge.class_order(codes)  # table position -> the run's column
    out: dict[str, Any] = {
        **{k: values[k] for k in ("score", "f_measure", "accuracy", "observed", "correct",
                                  "inactive", "num_recordings", "num_no_output")},
        "auroc": ranking["auroc"], "auprc": ranking["auprc"],
        # In the Challenge table's order.
        "per_class": [{"code": table_code, "name": names[column],
                       "threshold": float(chosen["thresholds"][column]),
                       "positives": int(np.asarray(targets)[:, column].sum()),
                       "f_measure": values["f_measure_per_class"][table_code]}
                      for table_code, column in zip(values["classes"], order, strict=True)],
        "thresholds_step": chosen["step"],
        "threshold_rule": chosen["rule"],
        "validation_recordings": chosen["validation_recordings"],
    }
    if bootstrap_resamples > 0:
        outputs = challenge.apply_thresholds(probs, chosen["thresholds"])[:, order]
        truth = np.asarray(targets)[:, order]
        rng = np.random.default_rng(seed)
        weights = bootstrap.bootstrap_weights(probs.shape[0], bootstrap_resamples, rng)
        resampled = {k: [v] for k, v in challenge.weighted_metrics(truth, outputs,
                                                                    weights).items()}
        ranked = metrics.weighted_multilabel_metrics(probs, targets, weights)
        resampled.update(auroc=[ranked["auroc"]], auprc=[ranked["auprc"]])
        out["bootstrap"] = {"resamples": bootstrap_resamples, "seed": seed, "level": level,
                            "unit": "recording",
                            "intervals": analysis.percentile_intervals(resampled, level)}
    return out


def render(section: Mapping[str, Any]) -> list[str]:
    """The report's Markdown lines of a Challenge section."""
    intervals = (section.get("bootstrap") or {}).get("intervals", {})

    def ci(name: str) -> str:
        bounds = intervals.get(name)
        if not bounds or not np.isfinite(bounds["lower"]):
            return "n/a"
        return f"{bounds['lower']:.3f}–{bounds['upper']:.3f}"

    lines = ["## PhysioNet/CinC Challenge 2021 metrics", "",
             f"{section['num_recordings']} recordings (probabilities averaged over each "
             "recording's windows); binary outputs from per-class thresholds chosen on "
             f"{section['validation_recordings']} validation recordings "
             f"(`challenge_thresholds.json`, checkpoint step {section['thresholds_step']}; "
             f"{section['threshold_rule']}); {section['num_no_output']} recordings have no "
             "class over its threshold. The score is the Challenge's normalised weighted "
             "score (1: the labels, 0: sinus rhythm for every recording).", ""]
    lines += _table(["metric", "value", "95% CI"],
                    [[name, f"{section[name]:.3f}", ci(name)] for name in REPORTED])
    lines += ["", "Per class, in the Challenge's weights-table order (F-measure n/a: nothing "
              "true and nothing output):", ""]
    lines += _table(["class", "SNOMED CT", "positives", "threshold", "F-measure"],
                    [[c["name"], c["code"], c["positives"], f"{c['threshold']:.2f}",
                      "n/a" if not np.isfinite(c["f_measure"]) else f"{c['f_measure']:.3f}"]
                     for c in section["per_class"]])
    lines.append("")
    return lines
