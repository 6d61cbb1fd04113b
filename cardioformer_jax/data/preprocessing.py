"""Raw WFDB record -> model-ready arrays: the one place signals are prepared (docs/data.md),
for the TFDS builders and inference on raw records alike."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import wfdb

TARGET_FS = 250
"""Sampling rate (Hz) every signal is resampled to."""

SEGMENT_LENGTH = TARGET_FS
"""Samples per segment for PTB-XL and MIMIC-IV-ECG: 1 s at 250 Hz."""

BEAT_LENGTH = 300
"""Samples per (zero-padded) PTB heartbeat."""

MAX_RR = 300
"""PTB records whose RR interval exceeds this many samples at 250 Hz (1.2 s) are dropped."""

# Bytes per sample of the WFDB formats whose file size follows from the header. The
# compressed FLAC formats (508/516/524) are absent: their size cannot be predicted.
_BYTES_PER_SAMPLE = {
    "8": 1.0,
    "16": 2.0,
    "24": 3.0,
    "32": 4.0,
    "61": 2.0,
    "80": 1.0,
    "160": 2.0,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}


class RecordError(ValueError):
    """A record that cannot be used; `kind` is the short reason skipped records are counted
    by (e.g. "truncated", "nan_lead", "too_short")."""

    def __init__(self, path: str | os.PathLike[str], kind: str, reason: str):
        self.path = os.fspath(path)
        self.kind = kind
        self.reason = reason
        super().__init__(f"{self.path}: {reason} [{kind}]")


@dataclasses.dataclass(frozen=True)
class WfdbRecord:
    """A record read in physical units (float64, shape (n_samples, n_leads))."""

    path: str
    signal: np.ndarray
    fs: float
    lead_names: tuple[str, ...]
    units: tuple[str, ...]
    comments: tuple[str, ...]


def strip_extension(path: str | os.PathLike[str], extensions: tuple[str, ...]) -> str:
    """`path` without its extension when that is one of `extensions` (4 characters each)."""
    path = os.fspath(path)
    return path[:-4] if path.endswith(extensions) else path


def check_signal_file(path: str, file_name: str, expected: int | None = None, detail: str = "",
                      exact: bool = True) -> str:
    """The path of the record's signal file `file_name`; `RecordError` ``missing_file`` when
    it does not exist, ``truncated`` when shorter than `expected` bytes, ``header_mismatch``
    when longer and `exact` (wfdb ignores trailing bytes and calls a short file only "Samples
    were not loaded correctly"). `detail` ends the size messages."""
    file_path = os.path.join(os.path.dirname(path), file_name)
    if not os.path.isfile(file_path):
        raise RecordError(path, "missing_file", f"signal file {file_path} does not exist")
    actual = os.path.getsize(file_path)
    if expected is not None and actual < expected:
        raise RecordError(path, "truncated",
                          f"{file_name} has {actual} bytes, the header implies {expected}{detail}")
    if expected is not None and exact and actual > expected:
        raise RecordError(path, "header_mismatch", f"{file_name} has {actual} bytes but the "
                          f"header implies only {expected}{detail}")
    return file_path


def check_duration(path: str | os.PathLike[str], n_samples: int, fs: float,
                   min_seconds: float | None) -> None:
    """`RecordError` ``too_short`` when `n_samples` at `fs` Hz last less than `min_seconds`."""
    if min_seconds is not None and n_samples < min_seconds * fs:
        raise RecordError(path, "too_short",
                          f"{n_samples / fs:.3f} s long, at least {min_seconds} s needed")


def check_header_samples(path: str, names: Sequence[str], digital: np.ndarray,
                         init_values: Sequence[int | None],
                         checksums: Sequence[int | None]) -> None:
    """`RecordError` ``header_mismatch`` when a lead's first digital sample or checksum (sum
    modulo 65536) is not the one its header states (None: not stated)."""
    for c, (name, init, checksum) in enumerate(zip(names, init_values, checksums, strict=True)):
        first = int(digital[0, c])
        if init is not None and first != int(init):
            raise RecordError(path, "header_mismatch",
                              f"lead {name}: first sample {first}, the header says {init}")
        actual = int(np.sum(digital[:, c], dtype=np.int64) % 65536)
        if checksum is not None and actual != int(checksum) % 65536:
            raise RecordError(path, "header_mismatch", f"lead {name}: the data's checksum "
                              f"{actual} is not the header's {checksum}")


def checked_leads(path: str, signal: np.ndarray, names: Sequence[str],
                  order: np.ndarray | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The columns `order` (None: all) of a physical `(n, C)` signal and their `names`;
    `RecordError` ``nan_lead`` when one holds a NaN / invalid sample, ``flat_lead`` when one
    is constant."""
    if order is not None:
        signal, names = signal[:, order], [names[i] for i in order]
    nan_leads = [names[c] for c in np.flatnonzero(~np.isfinite(signal).all(axis=0))]
    if nan_leads:
        raise RecordError(path, "nan_lead", f"NaN / invalid samples in leads {nan_leads}")
    flat = [names[c] for c in np.flatnonzero(np.ptp(signal, axis=0) == 0)]
    if flat:
        raise RecordError(path, "flat_lead", f"flat-line (constant) leads {flat}")
    return signal, tuple(names)


def _check_signal_files(path: str, header: wfdb.Record) -> None:
    """`check_signal_file` on each file the header names, sizes by `_BYTES_PER_SAMPLE`."""
    by_file: dict[str, list[int]] = {}
    for index, file_name in enumerate(header.file_name):
        by_file.setdefault(file_name, []).append(index)
    for file_name, channels in by_file.items():
        formats = {header.fmt[c] for c in channels}
        if len(formats) != 1 or (fmt := formats.pop()) not in _BYTES_PER_SAMPLE:
            check_signal_file(path, file_name)
            continue
        frame = sum((header.samps_per_frame[c] or 1) for c in channels)
        offset = header.byte_offset[channels[0]] or 0
        expected = offset + math.ceil(header.sig_len * frame * _BYTES_PER_SAMPLE[fmt])
        check_signal_file(path, file_name, expected,
                          f" ({header.sig_len} samples x {frame} signals in format {fmt})")


def _diagnose_read_failure(path: str, err: Exception) -> RecordError:
    """Names why wfdb could not read a record (see `_check_signal_files`)."""
    try:
        header = wfdb.rdheader(path)
    except Exception as header_err:
        return RecordError(path, "bad_header", f"cannot parse header: {header_err}")
    try:
        _check_signal_files(path, header)
    except RecordError as specific:
        return specific
    return RecordError(path, "unreadable", f"wfdb cannot read the samples: {err}")


def match_leads(names: Sequence[str], expected: Sequence[str],
                path: str | os.PathLike[str] = "<record>") -> np.ndarray:
    """Column indices that take a record's leads `names` (matched ignoring case and spaces;
    extras left out) to the order `expected`; `RecordError` ``lead_mismatch`` otherwise."""
    found: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        found.setdefault(name.strip().lower(), []).append(index)
    missing = [lead for lead in expected if lead.lower() not in found]
    duplicated = [lead for lead in expected if len(found.get(lead.lower(), ())) > 1]
    if missing or duplicated:
        problems = []
        if missing:
            problems.append(f"missing leads {missing}")
        if duplicated:
            problems.append(f"leads named more than once {duplicated}")
        raise RecordError(
            path, "lead_mismatch",
            f"{'; '.join(problems)}: the record has {list(names)}, the model expects "
            f"{list(expected)} (names are matched ignoring case)")
    return np.asarray([found[lead.lower()][0] for lead in expected], dtype=np.int64)


def read_record(
    path: str | os.PathLike[str],
    *,
    expected_fs: float | None = None,
    expected_leads: int | None = None,
    min_seconds: float | None = None,
    lead_names: Sequence[str] | None = None,
) -> WfdbRecord:
    """Reads a WFDB record (path without extension) in physical units, verified as
    docs/data.md, "Common steps" says; every signal file the header names is read (PTB:
    `.dat` and `.xyz`). With `lead_names`, leads are taken by name (`match_leads`) and the
    lead count is not checked. Raises `RecordError`.
    """
    path = strip_extension(path, (".hea", ".dat"))
    if not os.path.isfile(path + ".hea"):
        raise RecordError(path, "missing_record", f"header {path}.hea does not exist")
    # The header is parsed once, by rdrecord: wfdb's header parser costs ~5 ms (pandas),
    # more than reading and preparing the samples. Only a failed read is diagnosed further.
    try:
        record = wfdb.rdrecord(path, physical=False)
    except Exception as err:  # wfdb raises many types for malformed headers / files
        raise _diagnose_read_failure(path, err) from err
    if not isinstance(record, wfdb.Record):
        raise RecordError(path, "unsupported", "multi-segment records are not supported")
    if not record.n_sig or not record.sig_len or record.d_signal is None:
        raise RecordError(path, "too_short", "header declares no signals or no samples")
    if expected_fs is not None and not math.isclose(record.fs, expected_fs):
        raise RecordError(path, "wrong_fs", f"sampling rate {record.fs} Hz, expected {expected_fs}")
    order = None
    if lead_names is not None:
        order = match_leads(record.sig_name, lead_names, path)
    elif expected_leads is not None and record.n_sig != expected_leads:
        raise RecordError(
            path, "wrong_lead_count", f"{record.n_sig} leads, expected {expected_leads}"
        )
    if any((s or 1) != 1 for s in record.samps_per_frame):
        raise RecordError(path, "unsupported", "multi-frequency records are not supported")
    check_duration(path, record.sig_len, record.fs, min_seconds)
    _check_signal_files(path, record)
    if record.d_signal.shape != (record.sig_len, record.n_sig):
        raise RecordError(path, "header_mismatch", "sample array does not match the header")
    unstated = [None] * record.n_sig
    check_header_samples(path, record.sig_name, record.d_signal,
                         record.init_value or unstated, record.checksum or unstated)
    # dac() maps each format's "invalid sample" code to NaN, so gaps surface as NaN here.
    signal = np.asarray(record.dac(return_res=64), dtype=np.float64)
    signal, names = checked_leads(path, signal, record.sig_name, order)
    return WfdbRecord(
        path=path,
        signal=signal,
        fs=float(record.fs),
        lead_names=names,
        units=tuple(record.units[i] for i in order) if order is not None else tuple(record.units),
        comments=tuple(record.comments or ()),
    )


def resampled_length(n_samples: int, fs: float, target_fs: float = TARGET_FS) -> int:
    """`floor(n / fs * target_fs)`: the number of samples after resampling (docs/data.md)."""
    return math.floor(n_samples / fs * target_fs)


def resample_linear(signal: np.ndarray, fs: float, target_fs: float = TARGET_FS) -> np.ndarray:
    """Resamples along axis 0 by linear interpolation (docs/data.md, "Common steps"): the
    arithmetic of `np.interp` per lead, for all leads at once."""
    signal = np.asarray(signal, dtype=np.float64)
    n = signal.shape[0]
    m = resampled_length(n, fs, target_fs)
    if m < 2 or n < 2:
        raise ValueError(f"{n} samples at {fs} Hz are too few to resample to {target_fs} Hz")
    grid = np.linspace(0.0, n - 1, m)
    left = np.minimum(np.floor(grid).astype(np.int64), n - 2)
    frac = (grid - left)[:, None]
    lo = signal[left]
    hi = signal[left + 1]
    # np.interp's formula: slope * (x - xp[j]) + fp[j]; keeps the endpoints exact.
    return (hi - lo) * frac + lo


def standardize(x: np.ndarray, axis: int = -2) -> np.ndarray:
    """Per-lead standardisation over the time `axis` (docs/data.md per record, docs/model.md
    per sample): mean 0, population std 1, a constant lead zeros; float32."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    # Exact constancy (max == min) rather than a std threshold: round-off makes the std of
    # a constant lead tiny but non-zero, and dividing by it would amplify noise.
    constant = np.ptp(x, axis=axis, keepdims=True) == 0
    out = np.divide(centred, std, out=np.zeros_like(centred), where=~constant)
    return out.astype(np.float32)


def segment(signal: np.ndarray, length: int = SEGMENT_LENGTH) -> np.ndarray:
    """Cuts `(T, C)` into `(T // length, length, C)` consecutive segments (remainder dropped)."""
    k = signal.shape[0] // length
    return np.ascontiguousarray(signal[: k * length].reshape(k, length, *signal.shape[1:]))


def prepare_signal(signal: np.ndarray, fs: float, target_fs: float = TARGET_FS) -> np.ndarray:
    """The common steps of docs/data.md on a physical `(n, C)` signal: resample + standardise."""
    return standardize(resample_linear(signal, fs, target_fs), axis=0)


def prepare_record(
    path: str | os.PathLike[str],
    *,
    expected_fs: float | None = None,
    expected_leads: int | None = None,
    min_seconds: float | None = 1.0,
    lead_names: Sequence[str] | None = None,
    target_fs: float = TARGET_FS,
) -> np.ndarray:
    """Reads a record and returns it at `target_fs` (default 250 Hz), standardised per lead:
    `(n', C)` float32."""
    record = read_record(
        path, expected_fs=expected_fs, expected_leads=expected_leads, min_seconds=min_seconds,
        lead_names=lead_names,
    )
    return prepare_signal(record.signal, record.fs, target_fs)


def record_segments(
    path: str | os.PathLike[str],
    *,
    expected_fs: float | None = None,
    expected_leads: int | None = None,
    lead_names: Sequence[str] | None = None,
    target_fs: float = TARGET_FS,
    length: int = SEGMENT_LENGTH,
) -> np.ndarray:
    """Windows of a record at `target_fs`: `(k, length, C)` float32 (docs/data.md; the PTB-XL
    benchmark's are whole 10 s records). Records shorter than one window are refused."""
    record = read_record(
        path, expected_fs=expected_fs, expected_leads=expected_leads,
        min_seconds=length / target_fs, lead_names=lead_names,
    )
    return signal_segments(record.signal, record.fs, path=path, target_fs=target_fs,
                           length=length)


def signal_segments(
    signal: np.ndarray,
    fs: float,
    *,
    path: str | os.PathLike[str] = "<signal>",
    target_fs: float = TARGET_FS,
    length: int = SEGMENT_LENGTH,
) -> np.ndarray:
    """`record_segments` for a signal already read in physical units `(n, C)` at `fs`
    (e.g. by `challenge_format`): windows `(k, length, C)` float32; a signal shorter than
    one window is a ``too_short`` `RecordError`."""
    check_duration(path, signal.shape[0], fs, length / target_fs)
    segments = segment(prepare_signal(signal, fs, target_fs), length)
    if len(segments) == 0:
        # A record of exactly one window's duration can lose its last sample to the
        # floor() of the resampled length.
        raise RecordError(path, "too_short",
                          f"shorter than one window of {length} samples at {target_fs} Hz")
    return segments


def detect_r_peaks(lead: np.ndarray, fs: int = TARGET_FS) -> np.ndarray:
    """R-peak sample indices of one lead: neurokit2 `ecg_clean` + `ecg_peaks` ("neurokit")."""
    import neurokit2 as nk  # imported lazily: ~2 s, and only PTB heartbeats need it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neurokit warns about short / odd signals
        cleaned = nk.ecg_clean(lead, sampling_rate=fs, method="neurokit")
        _, info = nk.ecg_peaks(cleaned, sampling_rate=fs, method="neurokit")
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


BEAT_RULES = ("port", "reference")
"""How heartbeats are cut (docs/data.md, PTB): this port's rule (default) or the reference's."""


def heartbeats(
    signal: np.ndarray,
    *,
    path: str | os.PathLike[str] = "<signal>",
    fs: int = TARGET_FS,
    max_rr: int = MAX_RR,
    beat_length: int = BEAT_LENGTH,
    peaks: Sequence[np.ndarray] | None = None,
    rule: str = "port",
) -> np.ndarray:
    """Cuts a resampled, standardised `(T, C)` record into heartbeats ``(k, beat_length, C)``
    by `rule` (docs/data.md, "PTB"). Raises `RecordError` when detection fails or the RR
    interval exceeds `max_rr`. `peaks` (one index array per lead) bypasses detection."""
    if rule not in BEAT_RULES:
        raise ValueError(f"unknown heartbeat rule {rule!r}; use one of {BEAT_RULES}")
    signal = np.asarray(signal, dtype=np.float32)
    n, n_leads = signal.shape
    if peaks is None:
        try:
            peaks = [detect_r_peaks(signal[:, c], fs) for c in range(n_leads)]
        except Exception as err:  # neurokit2 raises assorted errors on degenerate input
            raise RecordError(path, "beat_detection_failed", f"neurokit2 failed: {err}") from err
    counts = [len(p) for p in peaks]
    if rule == "port":
        if min(counts) < 2:
            raise RecordError(path, "beat_detection_failed",
                              f"a lead has fewer than two R peaks (counts {counts})")
        rr = float(np.median([np.median(np.diff(p)) for p in peaks]))
        n_beats = int(np.median(counts))
        rr_int = int(round(rr))
        half_before, half_after = rr_int // 2, rr_int - rr_int // 2
    else:
        lead_rr = [float(np.median(np.diff(p))) for p in peaks if len(p) >= 2]
        if not lead_rr:
            raise RecordError(path, "beat_detection_failed",
                              f"no lead has two R peaks (counts {counts})")
        rr = float(np.median(lead_rr))
        n_beats = max(counts)
        half_before = half_after = int(rr / 2)
    if rr > max_rr:
        raise RecordError(path, "rr_too_long", f"RR interval {rr:g} samples exceeds {max_rr}")
    beats = np.zeros((n_beats, beat_length, n_leads), dtype=np.float32)
    for k in range(n_beats):
        r = int(np.median([p[k] for p in peaks if len(p) > k]))
        piece = signal[max(r - half_before, 0) : min(r + half_after, n)]
        left = (beat_length - len(piece)) // 2
        beats[k, left : left + len(piece)] = piece
    return beats


def record_heartbeats(
    path: str | os.PathLike[str],
    *,
    expected_fs: float | None = None,
    expected_leads: int | None = None,
    lead_names: Sequence[str] | None = None,
    rule: str = "port",
) -> np.ndarray:
    """PTB samples of a record: heartbeats `(k, 300, C)` float32 (docs/data.md, PTB)."""
    prepared = prepare_record(
        path, expected_fs=expected_fs, expected_leads=expected_leads, min_seconds=1.0,
        lead_names=lead_names,
    )
    return heartbeats(prepared, path=path, rule=rule)
