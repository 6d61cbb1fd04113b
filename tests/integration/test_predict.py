"""Prediction on raw WFDB records and export, with a PTB-shaped run; nothing mocked.

The run is a tiny PTB-config model saved by the training code's own epoch-end path
(`tests.helpers.run_fixtures.save_epoch_end_run`); the records are the real PTB record and records
written with wfdb from it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import signal as sps

from cardioformer_jax.data import dataset_inputs, datasets
from cardioformer_jax.data import preprocessing as pp
from cardioformer_jax.data.preprocessing import RecordError
from cardioformer_jax.evaluation import export, inference, predictions
from configs import ptb
from tests.helpers import REPO, run_fixtures
from tests.helpers import ecg_fixtures as fx
from tests.helpers.tiny_models import tiny_model

# The tiny PTB-shaped model is this module's own, and each test runs its programs once or
# twice: compiling is the cost.

REAL = fx.REAL_PTB_RECORD


@pytest.fixture(scope="module")
def ptb_run(tmp_path_factory) -> Path:
    config = tiny_model(ptb.get_config(), patch_lens=(32,))
    return run_fixtures.save_epoch_end_run(config, tmp_path_factory.mktemp("ptb_run"))


@pytest.fixture(scope="module")
def ptb_model(ptb_run) -> inference.TrainedModel:
    return inference.load(ptb_run)


@pytest.fixture(scope="module")
def real_signal() -> np.ndarray:
    """The first 10 s of the real PTB record (physical units, 1 kHz, 15 leads)."""
    return pp.read_record(REAL).signal[:10_000]


def _run_cli(capsys, workdir, paths, **kwargs) -> tuple[int, str, str]:
    """The predict command's behaviour in this process (`predictions.run_cli`)."""
    code = predictions.run_cli(workdir, paths, **kwargs)
    out, err = capsys.readouterr()
    return code, out, err


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m cardioformer_jax.<module> args...`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", f"cardioformer_jax.{module}", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


# --- preparation ----------------------------------------------------------------------------


def _order(names: list[str], expected: tuple[str, ...]) -> list[int]:
    return dataset_inputs.match_leads(names, expected).tolist()


def test_leads_matched_ignoring_case_and_reordered():
    expected = ("I", "II", "aVR", "V1")
    assert _order(["v1", "AVR", "i", "ii"], expected) == [2, 3, 1, 0]
    assert _order(["I", "II", "aVR", "V1", "V9"], expected) == [0, 1, 2, 3]  # extra
    with pytest.raises(RecordError, match=r"missing leads \['aVR', 'V1'\]") as err:
        _order(["I", "II", "V2"], expected)
    assert err.value.kind == "lead_mismatch"
    with pytest.raises(RecordError, match="more than once"):
        _order(["I", "i", "II", "aVR", "V1"], expected)


def test_real_ptb_record_prepared_as_the_builder_does(ptb_model):
    samples = dataset_inputs.prepare_record(REAL, ptb_model.spec).samples
    # The PTB builder's samples of this record, standardised as the input pipeline does.
    built = pp.record_heartbeats(REAL, expected_fs=1000, expected_leads=15)
    np.testing.assert_array_equal(samples, pp.standardize(built))
    assert samples.shape == (len(built), 300, 15) and samples.dtype == np.float32


def test_ptbxl_segments_equal_the_built_dataset(tiny_ptbxl):
    manual_dir, data_dir = tiny_ptbxl
    source = datasets.data_source("ptbxl", data_dir, "test")
    record_id = source[0]["record_id"].decode()
    built = sorted((int(source[i]["segment"]), source[i]["signal"]) for i in range(len(source))
                   if source[i]["record_id"].decode() == record_id)
    samples = dataset_inputs.prepare_record(manual_dir / record_id,
                                            dataset_inputs.record_preparation("ptbxl")).samples
    np.testing.assert_array_equal(samples, pp.standardize(np.stack([s for _, s in built])))


# --- predict --------------------------------------------------------------------------------


def test_real_record_probabilities(ptb_run, ptb_model, capsys):
    code, out, _ = _run_cli(capsys, ptb_run, [REAL], as_json=True)
    assert code == 0
    result = json.loads(out)
    assert result["classes"] == ["healthy control", "myocardial infarction"]
    (record,) = result["records"]
    assert record["ok"] and record["record"] == str(REAL)
    probabilities = np.array(list(record["probabilities"].values()))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    # The mean over the record's heartbeats of the model's own probabilities.
    samples = dataset_inputs.prepare_record(REAL, ptb_model.spec).samples
    assert record["num_samples"] == len(samples)
    np.testing.assert_allclose(probabilities, ptb_model.probabilities(samples).mean(0),
                               rtol=1e-6)
    assert record["predicted"] == result["classes"][int(probabilities.argmax())]


def test_inputs_run_in_power_of_two_batches_compiled_once(ptb_model):
    samples = np.random.default_rng(0).standard_normal((11, *ptb_model.input_shape))
    # Padding rows never reach the result: each sample's logits are its own.
    together = ptb_model.logits(samples, batch_size=8)
    np.testing.assert_allclose(together[9:], ptb_model.logits(samples[9:], batch_size=8),
                               rtol=1e-5, atol=1e-5)
    # 11 samples in batches of 8 run as 8 + 4 (3 padded), one sample as a batch of one;
    # calling again traces and compiles nothing new.
    ptb_model.logits(samples[:1], batch_size=8)
    compiled = ptb_model.programs.logits._cache_size()
    ptb_model.logits(samples, batch_size=8)
    ptb_model.logits(samples[:1], batch_size=8)
    assert ptb_model.programs.logits._cache_size() == compiled
    assert [inference.padded_rows(n, 8) for n in (1, 3, 4, 5, 8)] == [1, 4, 4, 8, 8]


def test_same_record_twice_same_answer(ptb_model, tmp_path):
    for suffix in (".hea", ".dat", ".xyz"):
        shutil.copy(REAL.with_suffix(suffix), tmp_path)
    first, again, copy = predictions.predict_records(
        ptb_model, [str(REAL), str(REAL), str(tmp_path / REAL.name)])
    np.testing.assert_array_equal(first.probabilities, again.probabilities)
    np.testing.assert_array_equal(first.probabilities, copy.probabilities)


@pytest.mark.parametrize("fs", [360, 500])
def test_other_sampling_rates_are_resampled(ptb_model, real_signal, tmp_path, fs):
    resampled = sps.resample_poly(real_signal, fs, 1000, axis=0)
    # Upper-case names in another order: matched and put back in PTB's order.
    order = np.random.default_rng(fs).permutation(15)
    names = [fx.LEADS_15[i].upper() for i in order]
    path = fx.write_record(tmp_path, f"rec{fs}", resampled[:, order], fs, leads=names)
    reference = fx.write_record(tmp_path, "rec1000", real_signal, 1000, leads=fx.LEADS_15)

    samples = dataset_inputs.prepare_record(path, ptb_model.spec).samples
    expected = dataset_inputs.prepare_record(reference, ptb_model.spec).samples
    # Same heartbeats, up to the anti-aliasing filter of the test's own resampling.
    assert abs(len(samples) - len(expected)) <= 1
    n = min(len(samples), len(expected))
    corr = np.corrcoef(samples[:n].ravel(), expected[:n].ravel())[0, 1]
    assert corr > 0.95

    (result,) = predictions.predict_records(ptb_model, [str(path)])
    assert isinstance(result, predictions.Prediction) and result.num_samples == len(samples)
    assert result.source_fs == fs and result.ignored_leads == ()
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_reordered_and_extra_leads_give_identical_samples(ptb_model, real_signal, tmp_path):
    order = np.arange(15)[::-1]
    extra = real_signal[:, :1] * 0.5 + 0.1  # a 16th lead the model does not use
    shuffled = fx.write_record(tmp_path, "shuffled",
                               np.concatenate([real_signal[:, order], extra], axis=1), 1000,
                               leads=[*(fx.LEADS_15[i].upper() for i in order), "EXTRA"])
    plain = fx.write_record(tmp_path, "plain", real_signal, 1000, leads=fx.LEADS_15)
    prepared = dataset_inputs.prepare_record(shuffled, ptb_model.spec)
    np.testing.assert_array_equal(prepared.samples,
                                  dataset_inputs.prepare_record(plain, ptb_model.spec).samples)
    assert prepared.ignored_leads == ("EXTRA",) and prepared.source_fs == 1000


def test_bad_records_reported_while_others_succeed(ptb_run, real_signal, tmp_path, capsys):
    folder = tmp_path / "records"
    good = fx.write_record(folder, "a_good", real_signal, 1000, leads=fx.LEADS_15)
    fx.write_record(folder, "b_missing_lead", real_signal[:, :14], 1000, leads=fx.LEADS_15[:14])
    fx.write_record(folder, "c_short", real_signal[:500], 1000, leads=fx.LEADS_15)
    truncated = fx.write_record(folder, "d_truncated", real_signal, 1000, leads=fx.LEADS_15)
    dat = truncated.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:3000])
    (folder / "e_garbage.hea").write_text("this is not a WFDB header\n")

    code, out, err = _run_cli(capsys, ptb_run, [folder], as_json=True)
    assert code == 0
    records = {Path(r["record"]).name: r for r in json.loads(out)["records"]}
    assert list(records) == ["a_good", "b_missing_lead", "c_short", "d_truncated", "e_garbage"]
    assert records["a_good"]["ok"] and records["a_good"]["num_samples"] > 5
    kinds = {name: r.get("error") for name, r in records.items() if not r["ok"]}
    assert kinds == {"b_missing_lead": "lead_mismatch", "c_short": "too_short",
                     "d_truncated": "truncated", "e_garbage": "bad_header"}
    assert "missing leads ['vz']" in records["b_missing_lead"]["message"]
    for name in kinds:  # one readable line per bad record on stderr
        assert sum(name in line for line in err.splitlines()) == 1
    assert "1 of 5 records predicted" in err

    # The table form, and exit status 1 when no record succeeds.
    code, out, _ = _run_cli(capsys, ptb_run, [good])
    assert code == 0
    header, row = out.splitlines()[1:3]
    assert header.split()[:2] == ["record", "beats"] and "predicted" in header
    assert row.startswith(str(good)) and row.split()[-2:] in (
        ["healthy", "control"], ["myocardial", "infarction"])
    code, _, err = _run_cli(capsys, ptb_run, [folder / "c_short"])
    assert code == 1 and "too_short" in err


def test_unusable_workdir_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run_cli(capsys, tmp_path, [REAL])
    assert code == 2 and "not a training workdir" in err


# Four commands in subprocesses (~15 s) around what the in-process tests above check through
# `predictions.run_cli`: slow lane.
@pytest.mark.slow
def test_command_line(ptb_run, real_signal, tmp_path):
    """The command itself: flags before and after the records, exit statuses, usage errors."""
    good = fx.write_record(tmp_path, "good", real_signal, 1000, leads=fx.LEADS_15)
    short = fx.write_record(tmp_path, "short", real_signal[:500], 1000, leads=fx.LEADS_15)
    proc = _command("predict", f"--workdir={ptb_run}", str(good), str(short), "--json",
                    "--batch_size=7")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert [(Path(r["record"]).name, r["ok"]) for r in records] == [("good", True),
                                                                   ("short", False)]
    assert "1 of 2 records predicted" in proc.stderr
    # Every record unusable: 1; a workdir that is no run: 2; no record given: a usage error.
    proc = _command("predict", "--workdir", str(ptb_run), str(short))
    assert proc.returncode == 1 and "too_short" in proc.stderr
    proc = _command("predict", f"--workdir={tmp_path}", str(good))
    assert proc.returncode == 2 and "not a training workdir" in proc.stderr
    proc = _command("predict", f"--workdir={ptb_run}")
    assert proc.returncode == 1 and "give at least one RECORD_OR_FOLDER" in proc.stderr


# --- export ---------------------------------------------------------------------------------


def test_export_round_trip(ptb_run, ptb_model, tmp_path, capsys):
    out = tmp_path / "served" / "model.jax_exported"
    assert export.run_cli(ptb_run, out) == 0
    assert "model.json" in capsys.readouterr().out
    exported, meta = export.load(out)
    assert meta["input"]["shape"] == [None, 300, 15] and meta["output"]["shape"] == [None, 2]
    assert meta["lead_names"] == list(ptb_model.spec.lead_names)
    assert meta["class_names"] == ["healthy control", "myocardial infarction"]
    assert meta["preparation"]["mode"] == "beats" and meta["platforms"] == ["cpu"]

    samples = dataset_inputs.prepare_record(REAL, ptb_model.spec).samples
    forward = jax.jit(export.model_function(ptb_model))
    for batch in (samples[:1], samples):  # the batch size is symbolic
        # Round-off only: in process an even batch runs as parallel chains, the exported
        # (symbolic-batch) program as one.
        np.testing.assert_allclose(export.run(exported, batch), np.asarray(forward(batch)),
                                   rtol=1e-5, atol=1e-6)
    # The in-process model takes the parameters as arguments: equal up to round-off.
    np.testing.assert_allclose(export.run(exported, samples), ptb_model.logits(samples),
                               rtol=1e-5, atol=1e-5)


# The command's flags around `test_export_round_trip` (`export.run_cli`): slow lane.
@pytest.mark.slow
def test_export_command_line(ptb_run, tmp_path):
    out = tmp_path / "fixed.jax_exported"
    proc = _command("export", f"--workdir={ptb_run}", f"--out={out}", "--platforms=cpu",
                    "--batch_size=3")
    assert proc.returncode == 0, proc.stderr
    exported, meta = export.load(out)
    assert meta["input"]["shape"] == [3, 300, 15] and meta["platforms"] == ["cpu"]
    assert exported.in_avals[0].shape == (3, 300, 15)
    proc = _command("export", f"--workdir={tmp_path}", f"--out={tmp_path / 'x'}")
    assert proc.returncode == 1 and "not a training workdir" in proc.stderr
