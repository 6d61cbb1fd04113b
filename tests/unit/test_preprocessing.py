"""Signal preparation (docs/data.md): reading, resampling, standardisation, segments, beats."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardioformer_jax.data import preprocessing as pp
from tests.helpers import ecg_fixtures as fx

REAL = fx.REAL_PTB_RECORD


# --- resampling ------------------------------------------------------------------------


@pytest.mark.parametrize("fs,n", [(500, 5000), (1000, 38400), (360, 1000), (500, 4999)])
def test_resample_matches_np_interp_on_the_reference_grid(fs, n):
    rng = np.random.default_rng(n)
    t = np.arange(n) / fs
    x = np.stack([np.sin(2 * np.pi * 1.3 * t), rng.normal(size=n), t**2], axis=1)
    y = pp.resample_linear(x, fs)
    m = math.floor(n / fs * 250)
    assert y.shape == (m, 3)
    grid = np.linspace(0, n - 1, m)
    expected = np.stack([np.interp(grid, np.arange(n), x[:, c]) for c in range(3)], axis=1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    # Same first and last sample (the grid spans the whole record).
    np.testing.assert_allclose(y[[0, -1]], x[[0, -1]], atol=1e-12)


def test_resample_of_a_linear_ramp_is_exact():
    x = np.arange(1000, dtype=np.float64)[:, None] * 0.5  # 1000 samples at 1000 Hz
    y = pp.resample_linear(x, 1000)
    assert y.shape == (250, 1)
    np.testing.assert_allclose(y[:, 0], np.linspace(0, 999, 250) * 0.5, atol=1e-12)


def test_resample_rejects_too_few_samples():
    with pytest.raises(ValueError, match="too few"):
        pp.resample_linear(np.zeros((3, 2)), 500)


# --- standardisation and segments ------------------------------------------------------


def test_standardize_per_lead_population_std_and_constant_lead_zero():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(3, 2, 1000), np.full(1000, 0.1), rng.normal(-1, 5, 1000)], 1)
    z = pp.standardize(x, axis=0)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0)[[0, 2]], 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0, ddof=0)[[0, 2]], 1, atol=1e-5)
    assert np.all(z[:, 1] == 0)  # constant lead -> exactly zeros (no 0/0, no noise)
    np.testing.assert_allclose(z[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), atol=1e-5)


def test_standardize_per_segment_on_batches():
    rng = np.random.default_rng(1)
    batch = rng.normal(5, 3, size=(4, 250, 12))
    batch[2, :, 7] = -2.0
    z = pp.standardize(batch)  # default axis: time of (..., T, C)
    assert z.shape == batch.shape
    for k in range(4):
        for c in range(12):
            seg = batch[k, :, c]
            if np.ptp(seg) == 0:
                assert np.all(z[k, :, c] == 0)
            else:
                np.testing.assert_allclose(z[k, :, c], (seg - seg.mean()) / seg.std(), atol=1e-5)


def test_segment_drops_the_trailing_remainder():
    x = np.arange(2 * 1260, dtype=np.float32).reshape(1260, 2)
    seg = pp.segment(x, 250)
    assert seg.shape == (5, 250, 2)
    for k in range(5):
        np.testing.assert_array_equal(seg[k], x[k * 250 : (k + 1) * 250])


# --- reading ---------------------------------------------------------------------------


def test_read_real_ptb_record_has_15_leads_from_both_files():
    rec = pp.read_record(REAL, expected_fs=1000, expected_leads=15)
    assert rec.signal.shape == (38400, 15)
    assert rec.lead_names[-3:] == ("vx", "vy", "vz")
    assert rec.fs == 1000
    ref = wfdb.rdrecord(str(REAL))
    np.testing.assert_array_equal(rec.signal, ref.p_signal)
    assert "Reason for admission: Myocardial infarction" in rec.comments


def test_record_segments_of_a_ptbxl_like_record(tmp_path):
    sig = fx.ecg_like(5000, 500, 12, seed=3)
    path = fx.write_record(tmp_path, "00001_hr", sig, 500, leads=fx.LEADS_12)
    seg = pp.record_segments(path, expected_fs=500, expected_leads=12)
    assert seg.shape == (10, 250, 12) and seg.dtype == np.float32
    stored = wfdb.rdrecord(str(path)).p_signal  # 1 uV quantisation as written
    expected = pp.standardize(pp.resample_linear(stored, 500), axis=0)
    np.testing.assert_allclose(seg.reshape(2500, 12), expected, atol=1e-6)
    # 2500 samples, no remainder: the concatenated segments are standardised per lead.
    flat = seg.reshape(2500, 12).astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(0), 1, atol=1e-4)


# --- heartbeats ------------------------------------------------------------------------


def test_heartbeats_of_the_real_ptb_record():
    beats = pp.record_heartbeats(REAL, expected_fs=1000, expected_leads=15)
    assert beats.shape[1:] == (300, 15) and beats.dtype == np.float32
    assert 40 <= len(beats) <= 60  # 38.4 s at ~80 bpm
    # RR ~183 samples: every interior beat has 58 zeros left and 59 right (extra right).
    nonzero = np.flatnonzero(np.any(beats[5] != 0, axis=1))
    rr = nonzero[-1] - nonzero[0] + 1
    assert 150 <= rr <= 300
    assert nonzero[0] == (300 - rr) // 2
    assert 300 - 1 - nonzero[-1] == 300 - rr - (300 - rr) // 2


def test_heartbeat_cutting_with_known_peaks():
    n, leads = 1000, 3
    x = np.tile(np.arange(n, dtype=np.float32)[:, None], (1, leads))
    peaks = [
        np.array([100, 300, 500, 700, 900]),
        np.array([102, 302, 502, 702, 902]),
        np.array([98, 298, 498, 698]),  # one beat fewer: median count is still 5
    ]
    beats = pp.heartbeats(x, peaks=peaks, beat_length=300, max_rr=300)
    assert beats.shape == (5, 300, 3)
    # RR 200: beat k is [R-100, R+100) with R the median position, padded 50 | 50.
    for k, r in enumerate([100, 300, 500, 700]):
        np.testing.assert_array_equal(beats[k, 50:250, 0], np.arange(r - 100, r + 100))
        assert np.all(beats[k, :50] == 0) and np.all(beats[k, 250:] == 0)
    # Beat 4: R = median(900, 902) = 901; [801, 1001) clipped to [801, 1000): 199 samples,
    # padded 50 left and 51 right.
    np.testing.assert_array_equal(beats[4, 50:249, 0], np.arange(801, 1000))
    assert np.all(beats[4, 249:] == 0)


def _reference_beats_as_dataframes(x, peaks, max_duration=300):
    """The reference's cutting, stated with pandas frames as its code does: NaN-padded peak
    and interval tables whose medians skip missing values."""
    pd = pytest.importorskip("pandas")
    df_peaks = pd.DataFrame(  # rows: leads, columns: k
        {c: pd.Series(p, dtype=float) for c, p in enumerate(peaks)}).T
    intervals = pd.DataFrame(  # columns: leads
        {c: pd.Series(np.diff(p), dtype=float) for c, p in enumerate(peaks)})
    trial_med = intervals.median().median()
    beats = []
    for i in range(df_peaks.shape[1]):
        r = df_peaks.iloc[:, i].median()
        piece = x[max(0, int(r) - int(trial_med / 2)):min(int(r) + int(trial_med / 2), len(x))]
        left = int((max_duration - len(piece)) / 2)
        beats.append(np.concatenate([np.zeros((left, x.shape[1])), piece,
                                     np.zeros((max_duration - left - len(piece), x.shape[1]))]))
    return np.stack(beats)


@pytest.mark.parametrize("seed", range(6))
def test_reference_beat_rule_equals_the_reference_tables(seed):
    rng = np.random.default_rng(seed)
    n, leads = 3000, 5
    x = rng.standard_normal((n, leads)).astype(np.float32)
    true_r = np.cumsum(rng.integers(150, 260, size=16)) - 100
    true_r = true_r[(true_r > 0) & (true_r < n)]
    peaks = []
    for c in range(leads):
        p = true_r + rng.integers(-3, 4, size=len(true_r))
        if c == 1:  # a lead that misses beats, and one that adds a spurious peak
            p = np.delete(p, rng.choice(len(p), size=3, replace=False))
        if c == 2:
            p = np.sort(np.append(p, rng.integers(0, n)))
        peaks.append(np.clip(p, 0, n - 1))
    peaks.append(np.array([int(true_r[0])]))  # a lead with a single peak: no RR
    x = np.concatenate([x, rng.standard_normal((n, 1)).astype(np.float32)], axis=1)
    beats = pp.heartbeats(x, peaks=peaks, rule="reference")
    np.testing.assert_array_equal(beats, _reference_beats_as_dataframes(x, peaks))
    assert len(beats) == max(len(p) for p in peaks)
    # This port's rule refuses the record: a lead has fewer than two peaks.
    with pytest.raises(pp.RecordError, match="fewer than two R peaks"):
        pp.heartbeats(x, peaks=peaks, rule="port")


def test_the_two_beat_rules_on_the_real_ptb_record():
    prepared = pp.prepare_record(REAL, expected_fs=1000, expected_leads=15, min_seconds=1.0)
    peaks = [pp.detect_r_peaks(prepared[:, c]) for c in range(prepared.shape[1])]
    counts = [len(p) for p in peaks]
    rr = float(np.median([np.median(np.diff(p)) for p in peaks]))
    port = pp.heartbeats(prepared, peaks=peaks, rule="port")
    reference = pp.heartbeats(prepared, peaks=peaks, rule="reference")
    assert len(port) == int(np.median(counts)) and len(reference) == max(counts)
    # An interior beat spans round(RR) samples under this port's rule, 2*int(RR/2) under
    # the reference's.
    for beats, width in ((port, round(rr)), (reference, 2 * int(rr / 2))):
        nonzero = np.flatnonzero(np.any(beats[5] != 0, axis=1))
        assert nonzero[-1] - nonzero[0] + 1 == width
    with pytest.raises(ValueError, match="unknown heartbeat rule"):
        pp.heartbeats(prepared, peaks=peaks, rule="median")


def test_heartbeats_rejects_long_rr_and_failed_detection():
    x = np.zeros((2000, 2), dtype=np.float32)
    with pytest.raises(pp.RecordError) as err:
        pp.heartbeats(x, peaks=[np.array([100, 500, 900])] * 2, path="rec")
    assert err.value.kind == "rr_too_long"
    with pytest.raises(pp.RecordError) as err:
        pp.heartbeats(x, peaks=[np.array([100, 300]), np.array([50])], path="rec")
    assert err.value.kind == "beat_detection_failed"


# --- bad input -------------------------------------------------------------------------


def _good_record(directory: Path, fs: int = 500, seconds: float = 10, leads: int = 12) -> Path:
    sig = fx.ecg_like(int(fs * seconds), fs, leads, seed=1)
    return fx.write_record(directory, "rec", sig, fs, leads=[f"L{i}" for i in range(leads)])


def _edit_header(path: Path, fn) -> None:
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")


def _expect(path: Path, kind: str, **kwargs) -> pp.RecordError:
    with pytest.raises(pp.RecordError) as err:
        pp.read_record(path, **kwargs)
    assert err.value.kind == kind
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)
    return err.value


def test_missing_header_and_missing_dat(tmp_path):
    _expect(tmp_path / "nothing", "missing_record")
    path = _good_record(tmp_path)
    path.with_suffix(".dat").unlink()
    assert "does not exist" in _expect(path, "missing_file").reason


def test_missing_second_signal_file_of_a_ptb_record(tmp_path):
    for suffix in (".hea", ".dat"):
        shutil.copy(REAL.with_suffix(suffix), tmp_path)
    err = _expect(tmp_path / REAL.name, "missing_file")
    assert ".xyz" in err.reason


def test_truncated_dat(tmp_path):
    path = _good_record(tmp_path)
    dat = path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-1000])
    _expect(path, "truncated")


def test_header_disagreeing_with_data(tmp_path):
    path = _good_record(tmp_path)
    dat = path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes() + bytes(24))  # one frame more than the header says
    _expect(path, "header_mismatch")

    path = _good_record(tmp_path / "b")

    def bad_checksum(lines):
        fields = lines[1].split()
        fields[6] = str(int(fields[6]) + 1)  # the checksum of lead 0
        return [lines[0], " ".join(fields), *lines[2:]]

    _edit_header(path, bad_checksum)
    assert "checksum" in _expect(path, "header_mismatch").reason


def test_nan_and_flat_leads(tmp_path):
    sig = fx.ecg_like(5000, 500, 12, seed=2)
    sig[100:200, 4] = np.nan
    path = fx.write_record(tmp_path / "nan", "rec", sig, 500, leads=fx.LEADS_12)
    assert "AVL" in _expect(path, "nan_lead").reason
    sig = fx.ecg_like(5000, 500, 12, seed=2)
    sig[:, 7] = 0.25
    path = fx.write_record(tmp_path / "flat", "rec", sig, 500, leads=fx.LEADS_12)
    assert "V2" in _expect(path, "flat_lead").reason


def test_wrong_sampling_rate_lead_count_and_too_short(tmp_path):
    path = _good_record(tmp_path / "fs", fs=250)
    _expect(path, "wrong_fs", expected_fs=500)
    path = _good_record(tmp_path / "leads", leads=11)
    _expect(path, "wrong_lead_count", expected_leads=12)
    path = _good_record(tmp_path / "short", seconds=0.5)
    _expect(path, "too_short", min_seconds=1.0)
    with pytest.raises(pp.RecordError) as err:
        pp.record_segments(path)
    assert err.value.kind == "too_short"


# --- a real PTB-XL record ----------------------------------------------------------------


def test_real_ptbxl_record_at_100_hz_becomes_ten_standardised_segments():
    record = pp.read_record(fx.REAL_PTBXL_RECORD, expected_fs=100, expected_leads=12)
    assert record.signal.shape == (1000, 12) and record.fs == 100
    segments = pp.record_segments(fx.REAL_PTBXL_RECORD, expected_fs=100, expected_leads=12)
    # 10 s at 100 Hz -> floor(1000 / 100 * 250) = 2500 samples at 250 Hz -> 10 segments.
    assert segments.shape == (10, 250, 12) and segments.dtype == np.float32
    whole = segments.reshape(-1, 12)
    np.testing.assert_allclose(whole.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(whole.std(axis=0), 1.0, atol=1e-4)
    # The resampled record still runs through the original samples' values.
    np.testing.assert_allclose(
        pp.resample_linear(record.signal, 100)[[0, -1]], record.signal[[0, -1]], atol=1e-9
    )


def test_real_ptbxl_record_with_the_wrong_expected_rate_is_refused():
    with pytest.raises(pp.RecordError, match="100"):
        pp.read_record(fx.REAL_PTBXL_RECORD, expected_fs=500)
