"""Tests for cardioformer_jax.core.logging_utils (real tensorboardX files, read back)."""

import json
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging as absl_logging
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from cardioformer_jax.core.logging_utils import (
    MetricWriter,
    format_duration,
    format_progress,
    format_run_summary,
    format_scalars,
    format_seeds_summary,
    log_scalars,
    write_json,
)


def _read_events(path):
    """Parses a TFRecord event file (length, crc, payload, crc), checking both CRCs.

    The `tensorboard` package is not a dependency, so this is the reader instead of its
    EventAccumulator; the format is the one TensorBoard reads.
    """
    events = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert header_crc == masked_crc32c(header)
        payload = data[pos + 12:pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert payload_crc == masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        pos += 16 + length
    return events


def _scalars_from_events(workdir):
    files = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
    assert len(files) == 1
    path = os.path.join(workdir, files[0])
    assert os.path.getsize(path) > 0
    out = {}
    for event in _read_events(path):
        for value in event.summary.value:
            out[(value.tag, event.step)] = value.simple_value
    return out


def test_writer_writes_jsonl_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as writer:
        writer.write_scalars(0, {"loss": 1.5, "f1": np.float32(0.25)}, split="train")
        writer.write_scalars(1, {"f1": jnp.asarray(0.5), "auroc": float("nan")}, split="val")
        writer.write_scalars(2, {"lr": 1e-4})

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # strict: NaN would not parse as null
    assert "NaN" not in lines[1]
    for r in records:
        assert isinstance(r.pop("wall_time"), float)
    assert records == [
        {"step": 0, "split": "train", "loss": 1.5, "f1": 0.25},
        {"step": 1, "split": "val", "f1": 0.5, "auroc": None},
        {"step": 2, "split": None, "lr": pytest.approx(1e-4)},
    ]

    scalars = _scalars_from_events(tmp_path)
    assert scalars[("train/loss", 0)] == pytest.approx(1.5)
    assert scalars[("train/f1", 0)] == pytest.approx(0.25)
    assert scalars[("val/f1", 1)] == pytest.approx(0.5)
    assert math.isnan(scalars[("val/auroc", 1)])
    assert scalars[("lr", 2)] == pytest.approx(1e-4)


def test_jsonl_is_appended_on_resume(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as w:
        w.write_scalars(0, {"a": 1.0}, split="train")
    with MetricWriter(tmp_path, enabled=True) as w:
        w.write_scalars(1, {"a": 2.0}, split="train")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["a"] for line in lines] == [1.0, 2.0]


def test_default_is_enabled_on_process_zero(tmp_path):
    w = MetricWriter(tmp_path / "run")
    assert w.enabled  # single-process test run: jax.process_index() == 0
    w.close()
    w.close()  # idempotent
    with pytest.raises(RuntimeError):
        w.write_scalars(0, {"a": 1.0})


def test_disabled_writer_is_a_no_op(tmp_path):
    workdir = tmp_path / "other_process"
    with MetricWriter(workdir, enabled=False) as w:
        w.write_scalars(0, {"a": 1.0}, split="train")
        w.flush()
    assert not workdir.exists()


def test_reserved_and_non_scalar_values_rejected(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as w:
        with pytest.raises(ValueError, match="reserved"):
            w.write_scalars(0, {"step": 1.0})
        with pytest.raises(ValueError, match="scalar"):
            w.write_scalars(0, {"a": np.ones(3)})


def test_separate_tensorboard_dir(tmp_path):
    with MetricWriter(tmp_path / "wd", tensorboard_dir=tmp_path / "tb", enabled=True) as w:
        w.write_scalars(3, {"x": 2.0}, split="test")
    assert _scalars_from_events(tmp_path / "tb") == {("test/x", 3): 2.0}
    assert (tmp_path / "wd" / "metrics.jsonl").exists()


def test_format_and_log_scalars(caplog):
    line = format_scalars({"f1": 0.81234, "loss": np.float32(0.41)}, step=3, split="val")
    assert line == "[val] step 3 | f1=0.8123 | loss=0.4100"
    assert format_scalars({"a": 1.0}) == "a=1.0000"
    absl_logging.set_verbosity(absl_logging.INFO)
    with caplog.at_level("INFO", logger="absl"):
        log_scalars({"f1": 0.5}, step=1, split="train")
    assert "[train] step 1 | f1=0.5000" in caplog.messages


def test_counters_are_written_as_integers(tmp_path):
    scalars = {"loss": 0.5, "epoch": 3, "nonfinite_steps": np.int32(0),
               "num_examples": jnp.asarray(1360), "whole_float": 2.0}
    assert format_scalars(scalars, split="train", progress="step 12/40 (30.0%)") == (
        "[train] step 12/40 (30.0%) | loss=0.5000 | epoch=3 | nonfinite_steps=0 | "
        "num_examples=1360 | whole_float=2.0000")
    with MetricWriter(tmp_path, enabled=True) as w:
        w.write_scalars(12, scalars, split="train")
    line = (tmp_path / "metrics.jsonl").read_text()
    assert '"epoch": 3,' in line and '"num_examples": 1360,' in line
    assert '"whole_float": 2.0' in line


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.4, "0s"), (0.5, "1s"), (12.3, "12s"), (59.4, "59s"), (59.5, "1m00s"),
    (185, "3m05s"), (3599.4, "59m59s"), (3599.5, "1h00m"), (3720, "1h02m"),
    (3749, "1h02m"), (3750, "1h03m"), (26 * 3600 + 5 * 60, "26h05m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_format_duration_refuses_negative_and_non_finite(seconds):
    with pytest.raises(ValueError, match="duration"):
        format_duration(seconds)


@pytest.mark.parametrize("args, text", [
    # 120 steps in 60 s: 2 steps/s, 520 left.
    ((120, 640, 60.0), "step 120/640 (18.7%, ETA 4m20s)"),
    # The clock started after the first step: 119 steps timed.
    ((120, 640, 59.5, 119), "step 120/640 (18.7%, ETA 4m20s)"),
    # A resumed run: 100 steps timed since step 500 of 6400 at 0.5 s/step.
    ((600, 6400, 50.0, 100), "step 600/6400 (9.3%, ETA 48m20s)"),
    ((1, 1000, 0.0), "step 1/1000 (0.1%)"),  # the clock just started: no rate
    ((1, 1000, 5.0, 0), "step 1/1000 (0.1%)"),
    ((0, 640, 0.0), "step 0/640 (0.0%)"),  # step 0: no rate
    ((0, 640, 10.0), "step 0/640 (0.0%)"),
    ((6399, 6400, 6399.0), "step 6399/6400 (99.9%, ETA 1s)"),  # rounded down
    ((640, 640, 320.0), "step 640/640 (100.0%, ETA 0s)"),
    ((700, 640, 350.0), "step 700/640 (100.0%, ETA 0s)"),  # beyond the total: capped
    ((10, 100, 1.0), "step 10/100 (10.0%, ETA 9s)"),
    ((10, 100_000, 36.0), "step 10/100000 (0.0%, ETA 99h59m)"),
    ((12, 0, 5.0), "step 12"),  # total unknown
    ((12, -1, 5.0), "step 12"),
    ((12, None, 5.0), "step 12"),
    ((12, 40, float("inf")), "step 12/40 (30.0%)"),
])
def test_format_progress(args, text):
    assert format_progress(*args) == text


def test_run_summary_lines():
    test = {"accuracy": 0.85961, "precision": 0.88, "f1": 0.84118, "auroc": 0.96062,
            "loss": 0.47, "num_examples": 1360}
    assert format_run_summary(7, test, "runs/a/results.json") == (
        "best epoch 7: test accuracy=0.8596, f1=0.8412, auroc=0.9606; "
        "results: runs/a/results.json")
    assert format_run_summary(2, {"f1": float("nan")}, "r.json") == (
        "best epoch 2: test f1=nan; results: r.json")
    assert format_run_summary(None, None, "r.json") == "no evaluated epoch; results: r.json"
    formatted = {"accuracy": "85.96 ± 1.00", "f1": "84.12 ± 0.50", "auroc": "96.06 ± 0.11",
                 "loss": "47.00 ± 2.00"}
    assert format_seeds_summary([41, 42, 43], formatted, "runs/b/results.json") == (
        "3 seeds (41-43): test accuracy=85.96 ± 1.00, f1=84.12 ± 0.50, auroc=96.06 ± 0.11 "
        "(mean ± std, %); results: runs/b/results.json")
    assert format_seeds_summary([41, 45], {"f1": "1.00 ± 0.10"}, "r.json") == (
        "2 seeds (41, 45): test f1=1.00 ± 0.10 (mean ± std, %); results: r.json")


def test_write_json_atomic_and_strict(tmp_path):
    path = tmp_path / "sub" / "results.json"
    obj = {
        "f1": {"mean": np.float64(0.9), "std": float("nan")},
        "seeds": (41, 42),
        "probs": np.array([0.25, 0.75], np.float32),
        "inf": np.inf,
        "n": np.int64(5),
        "ok": True,
    }
    write_json(path, obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "f1": {"mean": 0.9, "std": None},
        "seeds": [41, 42],
        "probs": [0.25, 0.75],
        "inf": None,
        "n": 5,
        "ok": True,
    }
    write_json(path, {"v": 2})  # overwrite in place
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp left
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"v": 2}  # failed write kept the old file


def _jsonl_values(path):
    return [json.loads(line)["a"] for line in path.read_text().splitlines()]


def test_rewrite_mode_uploads_whole_files_and_continues_on_resume(tmp_path):
    # The mode a gs:// workdir gets (objects cannot be appended to), on a local directory.
    path = tmp_path / "metrics.jsonl"
    with MetricWriter(tmp_path, enabled=True, jsonl_mode="rewrite", sync_seconds=0) as w:
        w.write_scalars(0, {"a": 1.0})
        assert _jsonl_values(path) == [1.0]  # written before close
        w.write_scalars(1, {"a": 2.0})
        assert _jsonl_values(path) == [1.0, 2.0]
    with MetricWriter(tmp_path, enabled=True, jsonl_mode="rewrite", sync_seconds=0) as w:
        w.write_scalars(2, {"a": 3.0})
    assert _jsonl_values(path) == [1.0, 2.0, 3.0]  # a resumed run continues the file
    assert not [p.name for p in tmp_path.iterdir() if ".tmp." in p.name]  # no temp left
    with MetricWriter(tmp_path, enabled=True) as w:  # and append mode continues it too
        w.write_scalars(3, {"a": 4.0})
    assert _jsonl_values(path) == [1.0, 2.0, 3.0, 4.0]


def test_rewrite_mode_uploads_at_most_every_sync_seconds(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricWriter(tmp_path, enabled=True, jsonl_mode="rewrite", sync_seconds=3600)
    w.write_scalars(0, {"a": 1.0})
    assert _jsonl_values(path) == [1.0]  # the first write uploads at once
    w.write_scalars(1, {"a": 2.0})
    w.write_scalars(2, {"a": 3.0})
    assert _jsonl_values(path) == [1.0]  # within the interval: kept in memory
    w.flush()
    assert _jsonl_values(path) == [1.0, 2.0, 3.0]
    w.write_scalars(3, {"a": 4.0})
    w.close()
    assert _jsonl_values(path) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(RuntimeError, match="closed"):
        w.write_scalars(4, {"a": 5.0})
    with pytest.raises(ValueError, match="jsonl_mode"):
        MetricWriter(tmp_path, enabled=False, jsonl_mode="overwrite")
