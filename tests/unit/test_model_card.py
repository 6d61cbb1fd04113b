"""`report_render.render_model_card` on a constructed evaluation: its sections, and the numbers it
quotes are evaluation.json's."""

from __future__ import annotations

import json
import re

import numpy as np

from cardioformer_jax.core import logging_utils
from cardioformer_jax.evaluation import analysis, report, report_render, task_reports

CLASSES = ["NORM", "MI", "STTC"]


def _evaluation(with_groups: bool = True, synthetic: bool = True) -> dict:
    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 3, size=n // 4).repeat(4)  # a record's 4 segments share its label
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions = report.SplitPredictions(
        probs=probs, labels=labels,
        record_ids=np.asarray([f"r{i // 4}" for i in range(n)], dtype=object),
        subject_ids=np.arange(n) // 8,
        ages=rng.uniform(20, 90, size=n) if with_groups else np.full(n, -1.0),
        sexes=rng.integers(0, 2, size=n) if with_groups else np.full(n, -1),
        segments=np.arange(n) % 4)
    detail = task_reports.SINGLE_LABEL.detail(predictions, 3, bootstrap_resamples=200)
    evaluation = {
        "workdir": "runs/demo", "run_dir": "runs/demo", "split": "test", "dataset": "ptbxl",
        "model_name": "cardioformer", "seed": 0, "step": 40, "epoch": 2, "classes": CLASSES,
        "detail": detail,
        "data": {"name": "ptbxl", "builder_config": None, "synthetic": synthetic,
                 "split_examples": {"train": 600, "validation": 120, "test": 120}},
        "paper_comparison": {"comparable": not synthetic,
                             "reason": "the data is a synthetic twin, not the real dataset"},
        "predictions_file": "predictions.csv",
    }
    # As evaluation.json holds it.
    return json.loads(json.dumps(logging_utils.to_jsonable(evaluation)))


def test_sections_and_quoted_numbers_equal_the_evaluation():
    evaluation = _evaluation()
    card = report_render.render_model_card(evaluation, CLASSES)
    for section in ("## Intended use", "## Training data and split", "## Metrics (test split)",
                    "## Calibration", "## Subgroups", "## Known limitations"):
        assert card.count(section) == 1, section
    assert "Not a medical device" in card and "Synthetic demo data" in card
    detail = evaluation["detail"]
    boot = detail["bootstrap"]
    assert f"{boot['resamples']} resamples of subjects" in card
    for level in ("segment", "record"):
        for name in analysis.REPORTED_METRICS:
            value, interval = detail[level][name], boot[level][name]
            row = re.search(rf"^\| {level} \| {name} \| (\S+) \| (\S+)–(\S+) \|$", card,
                            re.MULTILINE)
            assert row, (level, name)
            quoted = [float(x) for x in row.groups()]
            assert quoted[0] == round(100 * value, 2)
            assert quoted[1:] == [round(100 * interval["lower"], 2),
                                  round(100 * interval["upper"], 2)]
    ece, ece_ci = detail["ece"], boot["segment"]["ece"]
    assert (f"{ece:.4f} (95% CI {ece_ci['lower']:.4f}–{ece_ci['upper']:.4f})") in card
    for name, values in detail["by_sex"].items():
        assert (f"| sex | {name} | {int(values['n'])} | {100 * values['accuracy']:.2f} | "
                f"{100 * values['auroc']:.2f} |") in card
    assert "train 600, validation 120, test 120" in card


def test_without_subgroups_real_data_or_bootstrap():
    evaluation = _evaluation(with_groups=False, synthetic=False)
    card = report_render.render_model_card(evaluation, CLASSES)
    assert "Not reported: the dataset records neither sex nor age" in card
    assert "Synthetic demo data" not in card and "synthetic twin" not in card
    del evaluation["detail"]["bootstrap"]
    card = report_render.render_model_card(evaluation, CLASSES)
    assert "No bootstrap confidence intervals" in card and "| segment | f1 |" in card
