"""The PTB-XL benchmark protocol end to end on the tiny synthetic twin; nothing mocked.

Builds the `benchmark_<task>_<rate>hz` configs with the real builder, trains a tiny
multi-label model with the real loop, evaluates it (multi-label report) and validates a
single-label run externally on the benchmark build (leads by name, resampling, windows).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from cardioformer_jax import config_lib
from cardioformer_jax.core import metrics
from cardioformer_jax.data import datasets, input_pipeline, preprocessing
from cardioformer_jax.evaluation import external, inference, predictions, report
from cardioformer_jax.training import train
from configs import demo, ptbxl_benchmark
from tests.helpers import run_fixtures, tiny_models, train_fixtures
from tfds_builders import labels

CONFIG_100 = "benchmark_superdiagnostic_100hz"


@pytest.fixture(scope="module")
def benchmark_data(tiny_ptbxl, tmp_path_factory):
    manual_dir, _ = tiny_ptbxl
    data_dir = tmp_path_factory.mktemp("benchmark_tfds")
    datasets.build("ptbxl", manual_dir, data_dir, CONFIG_100, num_workers=0, progress=False)
    return manual_dir, data_dir


def _rows(data_dir, split, config=CONFIG_100):
    source = datasets.data_source("ptbxl", data_dir, split, config)
    return [source[i] for i in range(len(source))]


def test_benchmark_build_keeps_whole_records_with_the_suites_labels(benchmark_data):
    manual_dir, data_dir = benchmark_data
    database = pd.read_csv(manual_dir / "ptbxl_database.csv").set_index("filename_lr")
    statements = pd.read_csv(manual_dir / "scp_statements.csv", index_col=0)
    code_map = labels.ptbxl_task_code_map(
        {str(c): r for c, r in statements.iterrows()}, "superdiagnostic")
    folds = {"train": set(range(1, 9)), "validation": {9}, "test": {10}}
    seen = 0
    for split, allowed in folds.items():
        for row in _rows(data_dir, split):
            record = row["record_id"].decode()
            meta = database.loc[record]
            assert int(meta["strat_fold"]) in allowed
            assert row["signal"].shape == (1000, 12) and int(row["segment"]) == 0
            expected = labels.ptbxl_task_labels(labels.parse_scp_codes(meta["scp_codes"]),
                                                code_map, labels.PTBXL_CLASSES)
            assert tuple(row["labels"].tolist()) == expected and any(expected)
            seen += 1
    # Every record with a superdiagnostic statement is kept (one example each).
    hot = [any(labels.ptbxl_task_labels(labels.parse_scp_codes(c), code_map,
                                        labels.PTBXL_CLASSES))
           for c in database["scp_codes"]]
    assert seen == sum(hot)
    builder = datasets.load_builder("ptbxl", data_dir, CONFIG_100)
    assert builder.info.metadata["multilabel_names"] == list(labels.PTBXL_CLASSES)
    assert builder.info.metadata["config"]["sample_rate"] == 100
    skipped = builder.info.metadata["skipped_records"]
    assert skipped.get("no_superdiagnostic_label", 0) == len(hot) - sum(hot)


def test_benchmark_record_at_100_hz_is_the_distributed_records100_file(benchmark_data):
    manual_dir, data_dir = benchmark_data
    row = _rows(data_dir, "train")[0]
    record = row["record_id"].decode()
    assert "records100/" in record and record.endswith("_lr")
    expected = preprocessing.record_segments(manual_dir / record, expected_fs=100,
                                             target_fs=100, length=1000)
    np.testing.assert_allclose(row["signal"], expected[0], atol=1e-6)


def test_benchmark_at_500_hz_and_another_task(tiny_ptbxl, tmp_path):
    manual_dir, _ = tiny_ptbxl
    builder = datasets.build("ptbxl", manual_dir, tmp_path, "benchmark_rhythm_500hz",
                             num_workers=0, progress=False)
    assert builder.info.features["signal"].shape == (5000, 12)
    assert builder.info.features["labels"].shape == (12,)
    row = _rows(tmp_path, "train", "benchmark_rhythm_500hz")[0]
    assert row["record_id"].decode().startswith("records500/")
    assert set(np.unique(row["labels"]).tolist()) <= {0, 1} and row["labels"].sum() >= 1


def test_another_table_release_is_refused(tiny_ptbxl, tmp_path):
    manual_dir, _ = tiny_ptbxl
    copy = tmp_path / "raw"
    copy.mkdir()
    for item in manual_dir.iterdir():
        if item.name != "scp_statements.csv":
            (copy / item.name).symlink_to(item)
    table = pd.read_csv(manual_dir / "scp_statements.csv", index_col=0)
    table.loc["SR", "rhythm"] = np.nan  # a release without the SR rhythm class
    table.to_csv(copy / "scp_statements.csv")
    with pytest.raises(ValueError, match="rhythm.*expects PTB-XL 1.0.3"):
        datasets.build("ptbxl", copy, tmp_path / "tfds", "benchmark_rhythm_100hz",
                       num_workers=0, progress=False)


def test_configs_for_every_task_rate_and_model():
    for task in labels.PTBXL_BENCHMARK_TASKS:
        for suffix, rate, model in (("", 100, "cardioformer"), (",resnet,500hz", 500,
                                                                "resnet1d")):
            config = ptbxl_benchmark.get_config(task + suffix)
            config_lib.validate_config(config)
            assert config.dataset.builder_config == f"benchmark_{task}_{rate}hz"
            assert config.input.seq_len == 10 * rate and config.model_name == model
            assert config.dataset.num_classes == len(labels.PTBXL_TASK_CLASSES[task])
            assert config.dataset.multilabel and config.train.selection_metric == "auroc"
            # As many patches per granularity as the paper's 250-sample input.
            scale = config.input.seq_len // 250
            assert [config.input.seq_len // p for p in config.model.patch_lens] == [
                250 // (p // scale) for p in config.model.patch_lens]
    for bad in ("", "everything", "all,fast", "all,250hz"):
        with pytest.raises(ValueError):
            ptbxl_benchmark.get_config(bad)
    config_lib.validate_config(demo.get_config("superdiagnostic"))
    with pytest.raises(ValueError, match="variant"):
        demo.get_config("nope")


def test_selection_metric_must_suit_the_labels():
    config = ptbxl_benchmark.get_config("superdiagnostic")
    config.train.selection_metric = "accuracy"
    with pytest.raises(ValueError, match="selection_metric"):
        config_lib.validate_config(config)
    single = train_fixtures.tiny_config()
    single.train.selection_metric = "fmax"
    with pytest.raises(ValueError, match="single-label"):
        config_lib.validate_config(single)


def test_multilabel_training_needs_multi_hot_labels(tiny_ptbxl, benchmark_data):
    multi_on_single = train_fixtures.tiny_config(tiny_ptbxl[1])
    multi_on_single.dataset.multilabel = True
    with pytest.raises(ValueError, match="no multi-hot"):
        input_pipeline.check_dataset(multi_on_single)
    too_few = _tiny_benchmark_config(benchmark_data[1])
    too_few.dataset.num_classes = 4
    with pytest.raises(ValueError, match="5 multi-hot classes"):
        input_pipeline.check_dataset(too_few)


def _tiny_benchmark_config(data_dir):
    config = tiny_models.tiny_model(ptbxl_benchmark.get_config("superdiagnostic"),
                                    patch_lens=(100, 200))
    config = run_fixtures.tiny_training(config, data_dir, steps_per_epoch=2)
    config.train.num_epochs = 2
    return config


@pytest.mark.slow
def test_multilabel_training_and_report(benchmark_data, tmp_path):
    config = _tiny_benchmark_config(benchmark_data[1])
    result = train.train_and_evaluate(config, tmp_path / "run")
    assert set(metrics.MULTILABEL_KEYS) <= set(result["test"])
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    validation = {h["step"]: h["auroc"] for h in history if h.get("split") == "validation"}
    best = max(validation.values())
    assert result["validation"]["auroc"] == pytest.approx(best)

    model = inference.load(tmp_path / "run")
    assert model.spec.task.multilabel and model.spec.sample_rate == 100
    rows = _rows(benchmark_data[1], "test")
    probs = model.probabilities(preprocessing.standardize(np.stack([r["signal"] for r in rows])))
    truth = np.stack([r["labels"] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1) != 1.0, True)  # sigmoids, not a softmax
    direct = metrics.multilabel_metrics(probs, truth)
    assert result["test"]["auroc"] == pytest.approx(direct["auroc"], abs=1e-5)
    assert result["test"]["fmax"] == pytest.approx(direct["fmax"], abs=1e-5)

    assert report.run_cli(tmp_path / "run", bootstrap_resamples=50) == 0
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    segment = evaluation["detail"]["segment"]
    assert segment["fmax"] == pytest.approx(direct["fmax"], abs=1e-5)
    ci = evaluation["detail"]["bootstrap"]["segment"]["fmax"]
    assert ci["lower"] <= ci["upper"] and ci["resamples"] == 50
    with open(tmp_path / "run" / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert [float(table[0][f"p_{c}"]) for c in labels.PTBXL_CLASSES] == pytest.approx(
        probs[0].tolist(), abs=1e-5)
    assert [int(table[0][f"true_{c}"]) for c in labels.PTBXL_CLASSES] == truth[0].tolist()
    text = (tmp_path / "run" / "report.md").read_text()
    assert "fmax" in text and "multi-label" in text
    assert "Not a medical device" in (tmp_path / "run" / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_crops_protocol_trains_and_scores_records_by_their_max_window(benchmark_data,
                                                                      tmp_path):
    manual_dir, data_dir = benchmark_data
    config = tiny_models.tiny_model(ptbxl_benchmark.get_config("superdiagnostic,crops"),
                                    patch_lens=(25, 50))
    config = run_fixtures.tiny_training(config, data_dir, steps_per_epoch=2)
    config.train.num_epochs = 1
    result = train.train_and_evaluate(config, tmp_path / "run")

    model = inference.load(tmp_path / "run")
    assert model.input_shape == (250, 12) and model.windowing.starts(1000) == tuple(
        range(0, 751, 125))
    rows = _rows(data_dir, "test")
    records = preprocessing.standardize(np.stack([r["signal"] for r in rows]))
    # Reference: the model on each 2.5 s window, the max of the sigmoids over the 7.
    cut = np.stack([records[:, s:s + 250] for s in range(0, 751, 125)], axis=1)
    window_probs = 1 / (1 + np.exp(-model.logits(cut.reshape(-1, 250, 12))))
    expected = window_probs.reshape(len(rows), 7, -1).max(axis=1)
    assert not np.allclose(expected, window_probs.reshape(len(rows), 7, -1).mean(axis=1))
    np.testing.assert_allclose(model.probabilities(records), expected, atol=1e-5)
    # The training loop's test evaluation and the report's predictions aggregate alike.
    truth = np.stack([r["labels"] for r in rows])
    assert result["test"]["auroc"] == pytest.approx(
        metrics.multilabel_metrics(expected, truth)["auroc"], abs=1e-5)
    split = report.split_predictions(model, "test")
    np.testing.assert_allclose(split.probs, expected, atol=1e-5)
    # predict on the raw WFDB record picks the protocol up from the saved config.
    record = str(manual_dir / rows[0]["record_id"].decode())
    (prediction,) = predictions.predict_records(model, [record])
    assert prediction.num_samples == 1
    np.testing.assert_allclose(prediction.probabilities, expected[0], atol=1e-4)


def test_model_windows_match_leads_resample_and_cut():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(1000, 12))  # 10 s at 100 Hz
    order = np.arange(12)[::-1].copy()
    windows = external.model_windows(signal, order, 100.0, 250.0, 250)
    assert windows.shape == (10, 250, 12)
    expected = preprocessing.standardize(preprocessing.segment(
        preprocessing.resample_linear(signal[:, order], 100.0, 250.0), 250))
    np.testing.assert_allclose(windows, expected)
    assert external.model_windows(signal[:200], order, 100.0, 250.0, 1000).shape[0] == 0


def test_external_validation_refuses_what_it_cannot_map(tiny_ptbxl, tmp_path):
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
    run = run_fixtures.save_epoch_end_run(config, tmp_path / "run")
    with pytest.raises(ValueError, match="unknown dataset"):
        external.evaluate_external(run, "nosuch/x", tiny_ptbxl[1])
    with pytest.raises(ValueError, match="no split"):
        external.evaluate_external(run, "ptbxl", tiny_ptbxl[1], split="holdout")
    ptb_classes = tuple(labels.PTB_CLASSES)
    builder = datasets.load_builder("ptbxl", tiny_ptbxl[1])
    with pytest.raises(ValueError, match="no mapping"):
        external.class_mapping(ptb_classes, builder)
    assert report.run_cli(run, dataset="ptbxl") == 1  # --dataset without --data_dir


def test_external_validation_refuses_the_training_database(tiny_ptbxl, benchmark_data,
                                                           tmp_path):
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
    run = run_fixtures.save_epoch_end_run(config, tmp_path / "run")
    # Every record of a PTB-XL build is a PTB-XL record: nothing external is left.
    with pytest.raises(ValueError, match="not external validation"):
        external.evaluate_external(run, f"ptbxl/{CONFIG_100}", benchmark_data[1],
                                   progress=False)
    assert not external.external_dir(run, "ptbxl", CONFIG_100).exists()


@pytest.mark.slow
def test_external_validation_on_challenge_records_leaves_out_the_training_database(
        tiny_ptbxl, tmp_path):
    from tests.helpers import challenge_fixtures as cx

    # Real Challenge records of Georgia, Ningbo and PTB-XL (HR*), and the real PTB record
    # in the Challenge's layout (S0001, 1000 Hz, 38 s).
    source_dir = tmp_path / "challenge"
    for name in cx.RECORDS:
        cx.copy_record(name, source_dir / name[:2])
    cx.write_ptb_record(source_dir / "ptb", "S0001")
    data_dir = tmp_path / "tfds"
    datasets.build("cinc2021", source_dir, data_dir, num_workers=0, progress=False)
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), tiny_ptbxl[1])
    run = run_fixtures.save_epoch_end_run(config, tmp_path / "run")
    assert report.run_cli(run, "train", dataset="cinc2021/default", data_dir=str(data_dir),
                          bootstrap_resamples=20) == 0
    out = external.external_dir(run, "cinc2021", None)
    evaluation = json.loads((out / "evaluation_train.json").read_text())
    source = datasets.data_source("cinc2021", data_dir, "train")
    rows = [source[i] for i in range(len(source))]
    by_database = {}
    for r in rows:
        by_database.setdefault(r["source_database"].decode(), set()).add(r["record_id"])
    # The PTB-XL run never sees its own database: the HR* records are left out, counted.
    assert by_database.get("PTB-XL") and by_database.get("PTB")
    ext = evaluation["external"]
    assert ext["training_databases"] == ["PTB-XL"]
    assert ext["excluded_training_records"] == {"PTB-XL": len(by_database["PTB-XL"])}
    kept = [r for r in rows if r["source_database"].decode() != "PTB-XL"]
    assert evaluation["detail"]["num_examples"] == len(kept)  # 1 s windows at 250 Hz
    assert ext["evaluated_records_by_source"] == {
        db: len(ids) for db, ids in sorted(by_database.items()) if db != "PTB-XL"}
    assert ext["mapping"].startswith("SNOMED CT codes")
    assert ext["expressible"] == [True] * 5
    # The pooled figure is the metric of the kept examples' probabilities.
    model = inference.load(run)
    columns = preprocessing.match_leads(datasets.builder_class("cinc2021").LEAD_NAMES,
                                        model.spec.lead_names, "cinc2021")
    probs = model.probabilities(np.concatenate(
        [external.model_windows(r["signal"], columns, 250.0, 250.0, 250) for r in kept]))
    truth = np.stack([r["superclasses"] for r in kept])
    direct = metrics.multilabel_metrics(probs, truth)
    assert evaluation["detail"]["segment"]["auroc"] == pytest.approx(direct["auroc"], abs=1e-6)
    ptb = [i for i, r in enumerate(kept) if r["source_database"].decode() == "PTB"]
    assert evaluation["detail"]["by_source"]["PTB"]["examples"] == len(ptb)
    assert evaluation["detail"]["by_source"]["PTB"]["segment"]["loss"] == pytest.approx(
        metrics.multilabel_metrics(probs[ptb], truth[ptb])["loss"], rel=1e-6)
    with open(out / "predictions_train.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(kept)
    assert not any(line["record_id"].rsplit("/", 1)[-1].startswith("HR") for line in table)
    by_key = {(r["record_id"].decode(), int(r["segment"])): r for r in kept}
    for line in table:
        example = by_key[(line["record_id"], int(line["segment"]))]
        assert line["source"] == example["source_database"].decode()
        assert [int(line[f"true_{c}"]) for c in labels.PTBXL_CLASSES] == \
            example["superclasses"].tolist()
    text = (out / "report_train.md").read_text()
    assert "external validation" in text
    assert f"{len(by_database['PTB-XL'])} PTB-XL record" in text
    assert "| PTB |" in text
