"""Ensembles of real (tiny) run folders: members, mean and stacked meta-learner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cardioformer_jax.core import metrics, tasks
from cardioformer_jax.evaluation import ensemble, inference, report
from tests.helpers import run_fixtures, train_fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tiny_ptbxl, tmp_path_factory):
    folders = []
    for seed in (41, 42):
        config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
        config.seed = seed
        folders.append(run_fixtures.save_epoch_end_run(
            config, tmp_path_factory.mktemp(f"run{seed}")))
    return folders


def test_ensemble_report_compares_members_mean_and_stacking(runs, tmp_path):
    assert ensemble.run_cli([str(r) for r in runs], str(tmp_path / "ens"), "test",
                            bootstrap_resamples=20) == 0
    evaluation = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    models = [inference.load(r) for r in runs]
    test = [report.split_predictions(m, "test") for m in models]
    val = [report.split_predictions(m, "validation") for m in models]
    results = evaluation["results"]
    names = list(results)
    assert len(names) == 4 and names[2] == "mean of the members"
    labels = test[0].labels
    for name, member in zip(names[:2], test, strict=True):
        assert results[name]["metrics"]["auroc"] == pytest.approx(
            metrics.classification_metrics(member.probs, labels)["auroc"])
    mean = np.mean([t.probs for t in test], axis=0)
    assert results[names[2]]["metrics"]["f1"] == pytest.approx(
        metrics.classification_metrics(mean, labels)["f1"])
    # The meta-learner: a multinomial logistic regression on validation log-probabilities.
    features = [np.log(np.clip(np.concatenate([p.probs for p in s], axis=1), 1e-7, 1))
                for s in (val, test)]
    learner = LogisticRegression(max_iter=2000).fit(features[0], val[0].labels)
    stacked = np.zeros_like(mean)
    stacked[:, learner.classes_] = learner.predict_proba(features[1])
    assert results[names[3]]["metrics"]["accuracy"] == pytest.approx(
        metrics.classification_metrics(stacked, labels)["accuracy"])
    assert results[names[3]]["intervals"]["auroc"]["resamples"] <= 20
    text = (tmp_path / "ens" / "ensemble_report.md").read_text()
    assert "mean of the members" in text and "stacked" in text
    by_sex = results[names[2]]["auroc_by_subgroup"]
    female = test[0].sexes == 1
    assert by_sex["female"] == pytest.approx(
        metrics.classification_metrics(mean[female], labels[female], num_classes=5)["auroc"])
    assert "by subgroup" in text


def test_ensemble_refuses_what_it_cannot_combine(runs, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        ensemble.evaluate_ensemble(runs[:1], tmp_path)
    with pytest.raises(ValueError, match="validation split"):
        ensemble.evaluate_ensemble(runs, tmp_path, split="validation")
    assert ensemble.run_cli([str(r) for r in runs], None, "test") == 1  # no --out


def test_multilabel_stacking_keeps_the_mean_for_a_constant_class():
    rng = np.random.default_rng(0)
    val = [rng.random((40, 3)) for _ in range(2)]
    test = [rng.random((10, 3)) for _ in range(2)]
    targets = (rng.random((40, 3)) < 0.5).astype(int)
    targets[:, 1] = 0
    out = ensemble.stacked_probabilities(val, targets, test, task=tasks.MULTI_LABEL)
    np.testing.assert_allclose(out[:, 1], np.mean(test, axis=0)[:, 1])
    assert ((out >= 0) & (out <= 1)).all()


def test_predict_with_several_runs_averages_their_probabilities(runs, capsys):
    from cardioformer_jax.evaluation import predictions
    from tests.helpers import ecg_fixtures

    record = str(ecg_fixtures.REAL_PTBXL_RECORD)
    assert predictions.run_cli([str(r) for r in runs], [record], as_json=True) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["ensemble"] == [str(inference.load(r).run_dir) for r in runs]
    singles = []
    for run in runs:
        assert predictions.run_cli(str(run), [record], as_json=True) == 0
        singles.append(json.loads(capsys.readouterr().out)["records"][0]["probabilities"])
    mean = output["records"][0]["probabilities"]
    for name in mean:
        assert mean[name] == pytest.approx(np.mean([s[name] for s in singles]), abs=1e-6)
