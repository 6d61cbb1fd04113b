"""configs/cinc2021.py end to end on real Challenge records: build, one epoch of training
with a reduced-lead setting, and the evaluation's Challenge 2021 metrics; nothing mocked."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cardioformer_jax import config_lib
from cardioformer_jax.core import metrics
from cardioformer_jax.data import datasets, input_pipeline
from cardioformer_jax.evaluation import challenge, challenge_report, inference, report
from cardioformer_jax.training import train
from configs import cinc2021
from tests.helpers import challenge_fixtures as cx
from tests.helpers import run_fixtures, tiny_models

BUILDER_CONFIG = "records_100hz"


@pytest.fixture(scope="module")
def challenge_data(tmp_path_factory):
    """The 13 real Challenge records of the fixtures and the real PTB record as S0001,
    built as 10 s windows at 100 Hz (splits by record-name hash: 7 / 3 / 4 records)."""
    root = tmp_path_factory.mktemp("challenge")
    source = root / "source"
    for name in cx.RECORDS:
        cx.copy_record(name, source / name[:2])
    cx.write_ptb_record(source / "ptb", "S0001")
    data_dir = root / "tfds"
    datasets.build("cinc2021", source, data_dir, BUILDER_CONFIG, num_workers=0,
                   progress=False)
    return data_dir


def test_configs_for_models_rates_and_lead_sets():
    for argument, model, leads, rate in (("", "cardioformer", "12", 100),
                                         ("resnet,leads=2", "resnet1d", "2", 100),
                                         ("leads=6,500hz", "cardioformer", "6", 500)):
        config = cinc2021.get_config(argument)
        config_lib.validate_config(config)
        assert (config.model_name, config.dataset.leads, config.input.num_channels) == (
            model, leads, int(leads))
        assert config.dataset.builder_config == f"records_{rate}hz"
        assert config.input.seq_len == 10 * rate and config.dataset.num_classes == 26
        assert config.dataset.multilabel and config.train.selection_metric == "auroc"
    for bad in ("leads=5", "resnet,fast", "250hz"):
        with pytest.raises(ValueError):
            cinc2021.get_config(bad)
    config = cinc2021.get_config("leads=3")
    config.input.num_channels = 12
    with pytest.raises(ValueError, match="keeps 3 leads but input.num_channels=12"):
        config_lib.validate_config(config)


def test_reduced_leads_read_the_challenges_leads(challenge_data):
    config = cinc2021.get_config("leads=4")
    config.dataset.data_dir = str(challenge_data)
    spec = input_pipeline.DataSpec.from_config(config)
    source = input_pipeline.open_split(spec, "train")
    example = source[0]
    signal = input_pipeline.TrainTransform(spec, "train").map(example)["signal"]
    # I, II, III, V2 of the builder's order (I II III AVR AVL AVF V1 V2 ...).
    expected = example["signal"][:, [0, 1, 2, 7]]
    np.testing.assert_allclose(
        signal, (expected - expected.mean(0)) / expected.std(0), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_one_epoch_reports_the_challenge_metrics(challenge_data, tmp_path):
    config = tiny_models.tiny_model(cinc2021.get_config("leads=6"), patch_lens=(100, 200))
    config = run_fixtures.tiny_training(config, challenge_data, steps_per_epoch=2)
    config.train.num_epochs = 1
    config.train.batch_size = 4  # 8 training windows
    run = tmp_path / "run"
    train.train_and_evaluate(config, run)
    model = inference.load(run)
    assert model.spec.lead_names == ("I", "II", "III", "AVR", "AVL", "AVF")
    assert model.input_shape == (1000, 6)

    assert report.run_cli(run, "validation", bootstrap_resamples=0) == 0
    assert report.run_cli(run, bootstrap_resamples=50) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    section = evaluation["challenge"]
    codes = datasets.load_builder("cinc2021", challenge_data, BUILDER_CONFIG).info.metadata[
        "multilabel_codes"]

    def record_level(split_suffix: str) -> tuple[np.ndarray, np.ndarray]:
        with open(run / f"predictions{split_suffix}.csv") as f:
            table = list(csv.DictReader(f))
        names = model.spec.class_names
        probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in table])
        truth = np.array([[int(r[f"true_{c}"]) for c in names] for r in table])
        ids = np.array([r["record_id"] for r in table], dtype=object)
        return metrics.record_level(probs, truth, ids)[:2]

    # The thresholds stored with the run are those chosen on the validation recordings.
    stored = json.loads((run / challenge_report.THRESHOLDS_FILE).read_text())
    assert stored["step"] == model.step and stored["codes"] == list(codes)
    val_probs, val_truth = record_level("_validation")
    np.testing.assert_allclose(stored["thresholds"],
                               challenge.choose_thresholds(val_probs, val_truth))
    # The test split's Challenge numbers follow the definition on the run's own predictions.
    probs, truth = record_level("")
    order = challenge.class_order(codes)
    outputs = (probs >= np.asarray(stored["thresholds"]))[:, order]
    labels = truth[:, order].astype(bool)
    assert section["num_recordings"] == len(probs) == 4
    assert section["score"] == pytest.approx(
        challenge.challenge_score_parts(labels, outputs)["score"])
    assert section["f_measure"] == pytest.approx(challenge.f_measure(labels, outputs)[0],
                                                 nan_ok=True)
    assert section["accuracy"] == pytest.approx(challenge.accuracy(labels, outputs))
    interval = section["bootstrap"]["intervals"]["score"]
    assert interval["lower"] <= interval["upper"] and interval["resamples"] <= 50
    text = (run / "report.md").read_text()
    assert "Challenge 2021 metrics" in text and f"{section['score']:.3f}" in text
