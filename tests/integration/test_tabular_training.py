"""A tiny run that fuses age and sex (`model.tabular='late'`), end to end: input pipeline,
training, evaluation, prediction on a raw record with age/sex comments, export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cardioformer_jax.core import sharding
from cardioformer_jax.data import datasets, eval_input, preprocessing
from cardioformer_jax.data.tabular import tabular_features
from cardioformer_jax.evaluation import export, inference, predictions, report
from cardioformer_jax.training import train
from tests.helpers import ecg_fixtures, run_fixtures, train_fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_ptbxl, tmp_path_factory):
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
    config.model.tabular = "late"
    workdir = tmp_path_factory.mktemp("tabular_run")
    train.train_and_evaluate(config, workdir)
    return workdir


def test_batches_carry_the_examples_age_and_sex(tiny_ptbxl):
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
    config.model.tabular = "late"
    mesh = sharding.create_mesh((1, 1))
    batch = next(iter(eval_input.eval_batches(config, "test", mesh)))
    source = datasets.data_source("ptbxl", tiny_ptbxl[1], "test")
    index = batch.host["index"][batch.host["mask"] == 1]
    rows = [source[int(i)] for i in index]
    expected = tabular_features([r["age"] for r in rows], [r["sex"] for r in rows])
    got = np.asarray(batch.device["tabular"])[: len(rows)]
    np.testing.assert_allclose(got, expected)


def test_training_evaluation_prediction_and_export(run, tmp_path, capsys):
    results = json.loads((run / "results.json").read_text())
    assert np.isfinite(results["test"]["auroc"])
    model = inference.load(run)
    assert model.uses_tabular
    # The evaluation (pipeline + training program) equals direct calls with the features.
    assert report.run_cli(run, bootstrap_resamples=0) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    source = datasets.data_source("ptbxl", model.config.dataset.data_dir, "test")
    rows = [source[i] for i in range(len(source))]
    signals = preprocessing.standardize(np.stack([r["signal"] for r in rows]))
    features = tabular_features([r["age"] for r in rows], [r["sex"] for r in rows])
    direct = model.probabilities(signals, tabular_inputs=features)
    from cardioformer_jax.core import metrics
    assert evaluation["detail"]["segment"]["auroc"] == pytest.approx(
        metrics.classification_metrics(direct, [int(r["label"]) for r in rows])["auroc"],
        abs=1e-6)
    # predict reads age and sex from the header's comments.
    record = tmp_path / ecg_fixtures.REAL_PTBXL_RECORD.name  # the header names its .dat
    for suffix in (".hea", ".dat"):
        shutil.copy(f"{ecg_fixtures.REAL_PTBXL_RECORD}{suffix}", f"{record}{suffix}")
    with open(f"{record}.hea", "a") as f:
        f.write("# age: 71\n# sex: female\n")
    capsys.readouterr()
    assert predictions.run_cli(str(run), [str(record)], as_json=True) == 0
    predicted = json.loads(capsys.readouterr().out)["records"][0]["probabilities"]
    from cardioformer_jax.data import dataset_inputs
    prepared = dataset_inputs.prepare_record(record, model.spec)
    assert (prepared.age, prepared.sex) == (71.0, 1)
    expected = model.probabilities(
        prepared.samples, tabular_inputs=model.tabular_inputs(len(prepared.samples), 71, 1))
    assert list(predicted.values()) == pytest.approx(expected.mean(axis=0).tolist(), abs=1e-6)
    # The exported function takes the features as a second input.
    assert export.run_cli(run, tmp_path / "model.jax_exported") == 0
    exported, meta = export.load(tmp_path / "model.jax_exported")
    assert meta["tabular_input"]["features"] == ["age", "age_known", "male", "female"]
    np.testing.assert_allclose(export.run(exported, signals[:4], features[:4]),
                               model.logits(signals[:4], tabular_inputs=features[:4]),
                               atol=1e-5)
