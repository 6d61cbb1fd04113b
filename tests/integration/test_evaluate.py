"""The evaluation report of a real (tiny) two-seed training run; nothing mocked.

Its numbers are checked against direct computation: the model's probabilities on the
split's examples (read from the built dataset, standardised as the input pipeline does),
the training's own results.json, and `metrics` / `analysis` applied to them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cardioformer_jax.core import metrics
from cardioformer_jax.data import datasets, preprocessing
from cardioformer_jax.evaluation import analysis, inference, predictions, report
from cardioformer_jax.training import train
from tests.helpers import REPO, train_fixtures

# The module fixture trains a run first: slow lane.
pytestmark = pytest.mark.slow

SEEDS = (41, 42)


@pytest.fixture(scope="module")
def workdir(tiny_ptbxl, tmp_path_factory):
    config = train_fixtures.tiny_config(tiny_ptbxl[1])
    config.seeds = len(SEEDS)
    config.train.steps_per_epoch = 2
    workdir = tmp_path_factory.mktemp("two_seeds")
    train.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def evaluation(workdir):
    assert report.run_cli(workdir) == 0
    return json.loads((workdir / "evaluation.json").read_text())


def _direct(model: inference.TrainedModel, split: str) -> dict[str, np.ndarray]:
    """Probabilities of every example of `split`, computed without the evaluation code."""
    config = model.config
    source = datasets.data_source("ptbxl", config.dataset.data_dir, split)
    rows = [source[i] for i in range(len(source))]
    signals = preprocessing.standardize(np.stack([r["signal"] for r in rows]))
    return {
        "probs": model.probabilities(signals).astype(np.float64),
        "labels": np.array([int(r["label"]) for r in rows]),
        "records": np.array([r["record_id"].decode() for r in rows]),
        "sexes": np.array([int(r["sex"]) for r in rows]),
        "ages": np.array([float(r["age"]) for r in rows]),
    }


def _close(a: dict, b: dict, keys=analysis.REPORTED_METRICS, tol: float = 1e-6) -> None:
    for key in keys:
        assert a[key] == pytest.approx(b[key], abs=tol), key


def test_files_written(workdir, evaluation):
    text = (workdir / "report.md").read_text()
    for name in ("roc", "pr", "confusion", "reliability"):
        png = workdir / "plots" / f"test_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](plots/test_{name}.png)" in text
    for section in ("## Segment level", "## Record level", "## Per class", "## By sex",
                    "## By age band", "## Calibration", f"## Mean ± std over {len(SEEDS)}"):
        assert section in text
    assert evaluation["seeds"] == list(SEEDS) and evaluation["split"] == "test"


def test_report_numbers_equal_direct_computation(workdir, evaluation):
    seed = evaluation["seed"]
    model = inference.load(workdir, seed=seed)
    direct = _direct(model, "test")
    p, y = direct["probs"], direct["labels"]
    detail = evaluation["detail"]

    # The detailed seed is the one with the best validation F1.
    f1 = {s: json.loads((workdir / f"seed_{s}" / "results.json").read_text())["validation"]["f1"]
          for s in SEEDS}
    assert seed == max(SEEDS, key=lambda s: (f1[s], -s))

    _close(detail["segment"], metrics.classification_metrics(p, y, num_classes=5))
    assert detail["ece"] == pytest.approx(analysis.expected_calibration_error(p, y), abs=1e-6)
    record_probs, record_labels, ids = metrics.record_level(p, y, direct["records"])
    assert detail["record"]["n"] == len(ids) == 10
    _close(detail["record"], metrics.classification_metrics(record_probs, record_labels,
                                                            num_classes=5))
    for code, name in analysis.SEX_NAMES.items():
        mask = direct["sexes"] == code
        assert detail["by_sex"][name]["n"] == mask.sum()
        _close(detail["by_sex"][name],
               metrics.classification_metrics(p[mask], y[mask], num_classes=5),
               keys=("accuracy", "f1"))
    bands = analysis.age_bands(direct["ages"])
    for band, values in detail["by_age"].items():
        assert values["n"] == (bands == band).sum()
    assert np.sum(detail["confusion"]) == len(y)
    assert np.array_equal(np.sum(detail["confusion"], axis=1), np.bincount(y, minlength=5))

    # The report prints these numbers.
    text = (workdir / "report.md").read_text()
    assert f"bins): **{analysis.expected_calibration_error(p, y):.4f}**" in text
    auroc = metrics.classification_metrics(p, y, num_classes=5)["auroc"]
    segment = text.split("## Segment level")[1]
    assert re.search(rf"\| auroc \| {100 * auroc:.2f} \|", segment)


def test_predictions_csv(workdir, evaluation):
    """One row per example of the detailed seed, probabilities equal to direct computation."""
    model = inference.load(workdir, seed=evaluation["seed"])
    direct = _direct(model, "test")
    table = pd.read_csv(workdir / "predictions.csv", dtype={"record_id": str})
    classes = evaluation["classes"]
    assert len(table) == len(direct["labels"]) == evaluation["detail"]["num_examples"]
    assert list(table.columns) == ["record_id", "subject_id", "segment", "label", "label_index",
                                   *classes, "predicted", "predicted_index"]
    probs = table[classes].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (table["record_id"].str.len() > 0).all() and (table["subject_id"] >= 0).all()
    assert (table["segment"] >= 0).all()
    assert table["subject_id"].nunique() == evaluation["detail"]["num_subjects"]
    # Rows are in split order: the same examples, labels and probabilities as read directly.
    assert table["record_id"].tolist() == direct["records"].tolist()
    assert table["label_index"].tolist() == direct["labels"].tolist()
    assert table["label"].tolist() == [classes[i] for i in direct["labels"]]
    np.testing.assert_allclose(probs, direct["probs"], atol=1e-6)
    assert table["predicted_index"].tolist() == direct["probs"].argmax(axis=1).tolist()


def test_confidence_intervals_and_model_card(workdir, evaluation):
    detail = evaluation["detail"]
    boot = detail["bootstrap"]
    assert boot["resamples"] == analysis.BOOTSTRAP_RESAMPLES and boot["unit"] == "subject"
    for level in ("segment", "record"):
        points = {**detail[level], "ece": detail["ece"]}
        for name, interval in boot[level].items():
            if name == "ece" and level == "record":
                continue  # the record-level ECE has no point estimate in the report
            # Macro AUROC/AUPRC: the interval is over the resamplable classes, as its
            # "point" is (the full macro mean when no class is too rare).
            point = interval.get("point", points[name])
            if not interval.get("too_rare"):
                assert point == pytest.approx(points[name]), (level, name)
            assert interval["lower"] <= point <= interval["upper"], (level, name)
            assert interval["resamples"] + interval["skipped"] == boot["resamples"]
            assert interval["redrawn"] == boot["redrawn"][level]
    report_text = (workdir / "report.md").read_text()
    auroc_ci = boot["segment"]["auroc"]
    ci = f"{100 * auroc_ci['lower']:.2f}–{100 * auroc_ci['upper']:.2f}"
    assert f"| auroc | {100 * detail['segment']['auroc']:.2f} | {ci}" in report_text
    assert f"redrawn (segment {boot['redrawn']['segment']}, record" in report_text

    card = (workdir / "MODEL_CARD.md").read_text()
    for section in ("## Intended use", "## Training data and split", "## Metrics (test split)",
                    "## Calibration", "## Subgroups", "## Known limitations"):
        assert section in card
    for name in analysis.REPORTED_METRICS:
        interval = boot["segment"][name]
        cell = f"{100 * interval['lower']:.2f}–{100 * interval['upper']:.2f}"
        if interval.get("too_rare"):  # the interval names its own classes and point
            cell += (f" (over {interval['classes']} resamplable classes, whose mean is "
                     f"{100 * interval['point']:.2f})")
        assert f"| segment | {name} | {100 * detail['segment'][name]:.2f} | {cell} |" in card
    assert f"{detail['ece']:.4f}" in card and "Not a medical device" in card
    assert "Synthetic demo data" in card


def test_seed_table_equals_training_results(workdir, evaluation):
    results = json.loads((workdir / "results.json").read_text())
    for seed in SEEDS:  # each seed's best checkpoint gives the test metrics training recorded
        _close(evaluation["per_seed"][str(seed)], results["per_seed"][str(seed)]["test"])
    rows = {r["metric"]: r for r in evaluation["seed_summary"]}
    tests = [results["per_seed"][str(s)]["test"] for s in SEEDS]
    expected = metrics.aggregate_seeds([{k: t[k] for k in analysis.REPORTED_METRICS}
                                        for t in tests])
    for name in analysis.REPORTED_METRICS:
        assert rows[name]["formatted"] == metrics.format_mean_std(expected[name])
        assert rows[name]["formatted"] == results["test_formatted"][name]
    text = (workdir / "report.md").read_text()
    # The tiny run trained on a synthetic twin: never set beside the paper's PTB-XL figure.
    assert f"| auroc | {rows['auroc']['formatted']} | – |" in text
    assert "89.99" not in text
    assert "Not set beside the paper's results: the data is a synthetic twin" in text
    assert evaluation["paper_comparison"]["comparable"] is False


def test_validation_split_report(workdir, evaluation):
    # The command itself (absl flags), in a subprocess.
    proc = subprocess.run([sys.executable, "-m", "cardioformer_jax.evaluate",
                           f"--workdir={workdir}", "--split=validation", "--seed", "42"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{workdir / 'report_validation.md'}: validation AUROC")
    text = (workdir / "report_validation.md").read_text()
    assert "(validation split)" in text and "seed 42" in text
    saved = json.loads((workdir / "evaluation_validation.json").read_text())
    recorded = json.loads((workdir / "seed_42" / "results.json").read_text())["validation"]
    _close(saved["detail"]["segment"], recorded)
    assert (workdir / "plots" / "validation_roc.png").is_file()
    assert (workdir / "predictions_validation.csv").is_file()
    assert (workdir / "MODEL_CARD_validation.md").is_file()


def test_predict_on_a_raw_record_matches_the_evaluation(tiny_ptbxl, workdir, evaluation,
                                                        capsys):
    """A test record predicted from its raw files = the mean of its evaluated segments."""
    manual_dir, _ = tiny_ptbxl
    model = inference.load(workdir, seed=evaluation["seed"])
    direct = _direct(model, "test")
    record = direct["records"][0]
    assert predictions.run_cli(workdir, [manual_dir / record], seed=evaluation["seed"],
                               as_json=True) == 0
    (result,) = json.loads(capsys.readouterr().out)["records"]
    expected = direct["probs"][direct["records"] == record].mean(axis=0)
    assert result["num_samples"] == 10
    np.testing.assert_allclose(list(result["probabilities"].values()), expected, atol=1e-6)


def test_unusable_workdir_and_bad_split(tmp_path):
    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardioformer_jax.evaluate", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    proc = command(f"--workdir={tmp_path}")
    assert proc.returncode == 1 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = command(f"--workdir={tmp_path}", "--split=holdout")
    assert proc.returncode == 1 and "--split" in proc.stderr and "holdout" in proc.stderr
