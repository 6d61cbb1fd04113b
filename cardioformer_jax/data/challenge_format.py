"""Records in the PhysioNet/CinC Challenge 2020/2021 layout: WFDB header + MATLAB ``.mat``,
parsed here, not by wfdb, for the 2020 release's quirks (docs/data.md, "CinC 2021"). No
TFDS import: builder workers and inference on raw records both use it."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from cardioformer_jax.data import preprocessing
from cardioformer_jax.data.preprocessing import RecordError, match_leads

LEADS_12: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

KNOWN_BOGUS_GAINS: tuple[float, ...] = (4880.0, 2000000.0)
"""ADC gains (adu/mV) that headers of the Challenge's 2020 release state for data that are
stored at `TRUE_GAIN`; no device of the source databases records at these gains."""

TRUE_GAIN = 1000.0
"""adu/mV of every Challenge database's `.mat` data."""

PLAUSIBLE_AMPLITUDE_MV: tuple[float, float] = (0.02, 20.0)
"""Bounds on a record's amplitude (`record_amplitude`, mV) that a real 12-lead ECG keeps.

The amplitude is the median over leads of each lead's 1st-99th percentile range: 0.46 to
1.72 mV on 50 real Challenge records; a gain off by a factor 2000 (2000000/mV read as such)
gives about 0.001 mV, a 16-bit lead at 1000/mV cannot exceed 65 mV."""

GAIN_RULE = (
    "Physical value = (digital - baseline) / gain per lead, in mV. A lead whose header gain "
    "is one of KNOWN_BOGUS_GAINS (4880, 2000000 adu/mV) is read at 1000 adu/mV instead "
    "(noted 'gain_corrected' and 'gain_corrected_<gain>'). Every record's amplitude (median "
    "over leads of the 1st-99th percentile range) must then lie within "
    "PLAUSIBLE_AMPLITUDE_MV (0.02-20 mV), else the record is skipped as "
    "'implausible_amplitude'; no other gain is ever guessed."
)
"""The rule turning digital samples into mV (in the builds' metadata and fingerprint)."""

_GAIN_RE = re.compile(
    r"^(?P<gain>[-+]?[0-9.eE+-]+)?(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>.*))?$")
_FORMAT_RE = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::\S+)?(?:\+(?P<offset>\d+))?$")
_WFDB_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?$")
_WFDB_DATE_RE = re.compile(r"^\d{1,2}/\d{1,2}/\d{4}$")
_UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nu": 1.0, "": 1.0}
_INVALID_16 = -32768  # WFDB's "invalid sample" code of 16-bit formats


@dataclasses.dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header."""

    file_name: str
    fmt: str
    byte_offset: int | None
    gain: float
    baseline: int
    units: str
    init_value: int | None
    checksum: int | None
    name: str


@dataclasses.dataclass(frozen=True)
class ChallengeHeader:
    """A parsed Challenge header. `quirks` names the 2020-release deviations it has."""

    path: str
    record_name: str
    fs: float
    n_samples: int
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...]
    quirks: tuple[str, ...] = ()

    @property
    def lead_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    def comment(self, key: str) -> str | None:
        """The value of the first ``# Key: value`` comment (key matched ignoring case)."""
        wanted = key.strip().lower()
        for line in self.comments:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == wanted:
                return value.strip()
        return None

    @property
    def dx(self) -> tuple[str, ...]:
        """The ``# Dx:`` tokens (codes or abbreviations), empty when absent."""
        value = self.comment("Dx") or ""
        return tuple(t for t in re.split(r"[,;\s]+", value) if t)


@dataclasses.dataclass(frozen=True)
class ChallengeRecord:
    """A record read in mV: `signal` (n_samples, n_leads) float64, leads `lead_names`;
    `notes` names what was corrected (e.g. ``gain_corrected``)."""

    path: str
    signal: np.ndarray
    fs: float
    lead_names: tuple[str, ...]
    header: ChallengeHeader
    notes: tuple[str, ...] = ()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):  # None, or not an integer
        return None


def _parse_record_line(path: str, line: str) -> tuple[str, int, float, int, list[str]]:
    fields = line.split()
    if len(fields) < 2:
        raise RecordError(path, "bad_header", f"record line {line!r} has no signal count")
    name = fields[0]
    if "/" in name:
        raise RecordError(path, "unsupported", "multi-segment records are not supported")
    quirk_2020 = name.endswith((".mat", ".hea", ".dat"))
    if quirk_2020:
        name = name[:-4]
    try:
        n_sig = int(fields[1])
        fs = float(re.split(r"[/(]", fields[2])[0]) if len(fields) > 2 else 250.0
        n_samples = int(fields[3]) if len(fields) > 3 else -1
    except ValueError as err:
        raise RecordError(path, "bad_header", f"record line {line!r}: {err}") from err
    if n_sig < 1 or not math.isfinite(fs) or fs <= 0:
        raise RecordError(path, "bad_header",
                          f"record line {line!r}: {n_sig} signals at {fs} Hz")
    rest = fields[4:]
    wfdb_like = (not rest or (_WFDB_TIME_RE.match(rest[0]) and (
        len(rest) == 1 or (len(rest) == 2 and _WFDB_DATE_RE.match(rest[1])))))
    return name, n_sig, fs, n_samples, ["record_line_2020"] if quirk_2020 or not wfdb_like else []


def _parse_signal_line(path: str, line: str) -> SignalSpec:
    fields = line.split()
    if len(fields) < 2:
        raise RecordError(path, "bad_header", f"signal line {line!r} has no format")
    fmt_match = _FORMAT_RE.match(fields[1])
    if fmt_match is None:
        raise RecordError(path, "bad_header", f"signal line {line!r}: format {fields[1]!r}")
    gain, baseline, units = 0.0, None, "mV"
    if len(fields) > 2:
        match = _GAIN_RE.match(fields[2])
        if match is None:
            raise RecordError(path, "bad_header", f"signal line {line!r}: gain {fields[2]!r}")
        try:
            gain = float(match.group("gain") or 0.0)
        except ValueError as err:
            raise RecordError(path, "bad_header",
                              f"signal line {line!r}: gain {fields[2]!r}") from err
        baseline = _int_or_none(match.group("baseline"))
        units = (match.group("units") or "mV").strip()
    adc_zero = _int_or_none(fields[4]) if len(fields) > 4 else 0
    if baseline is None:
        baseline = adc_zero or 0  # WFDB: the baseline defaults to the ADC zero
    if not math.isfinite(gain) or gain < 0:
        raise RecordError(path, "bad_header", f"signal line {line!r}: gain {gain}")
    return SignalSpec(
        file_name=fields[0],
        fmt=fmt_match.group("fmt"),
        byte_offset=_int_or_none(fmt_match.group("offset")),
        gain=gain or 200.0,  # WFDB: a missing or zero gain means 200 adu per unit
        baseline=baseline,
        units=units,
        init_value=_int_or_none(fields[5]) if len(fields) > 5 else None,
        checksum=_int_or_none(fields[6]) if len(fields) > 6 else None,
        name=" ".join(fields[8:]) if len(fields) > 8 else "",
    )


def parse_header(path: str | os.PathLike[str]) -> ChallengeHeader:
    """Parses ``path.hea`` (path with or without extension); RecordError when unusable."""
    path = preprocessing.strip_extension(path, (".hea", ".mat"))
    try:
        with open(path + ".hea", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError as err:
        raise RecordError(path, "missing_record", f"header {path}.hea does not exist") from err
    except OSError as err:
        raise RecordError(path, "bad_header", f"cannot read the header: {err}") from err
    comments, lines = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append(line.split("#", 1)[0].strip())
    if not lines:
        raise RecordError(path, "bad_header", "the header has no record line")
    name, n_sig, fs, n_samples, quirks = _parse_record_line(path, lines[0])
    if len(lines) - 1 < n_sig:
        raise RecordError(path, "bad_header",
                          f"the record line declares {n_sig} signals, {len(lines) - 1} follow")
    signals = tuple(_parse_signal_line(path, line) for line in lines[1 : 1 + n_sig])
    return ChallengeHeader(path=path, record_name=name, fs=fs, n_samples=n_samples,
                           signals=signals, comments=tuple(comments), quirks=tuple(quirks))


def _load_val(path: str, header: ChallengeHeader) -> np.ndarray:
    """The digital samples (n_samples, n_sig) of the header's `.mat` file."""
    import scipy.io  # scipy's import is slow; only readers of signals pay for it

    files = {s.file_name for s in header.signals}
    if len(files) != 1:
        raise RecordError(path, "unsupported", f"signals spread over several files {files}")
    file_name = files.pop()
    if not file_name.lower().endswith(".mat"):
        raise RecordError(path, "unsupported", f"signal file {file_name} is not a .mat file")
    spec, expected = header.signals[0], None
    if spec.fmt == "16" and spec.byte_offset is not None and header.n_samples > 0:
        expected = spec.byte_offset + 2 * len(header.signals) * header.n_samples
    mat_path = preprocessing.check_signal_file(path, file_name, expected, exact=False)
    try:
        val = scipy.io.loadmat(mat_path)["val"]
    except KeyError as err:
        raise RecordError(path, "unreadable", f"{file_name} holds no matrix 'val'") from err
    except Exception as err:  # scipy raises assorted errors for damaged files
        kind = "truncated" if "truncated" in str(err) or "Not enough bytes" in str(err) \
            else "unreadable"
        raise RecordError(path, kind, f"cannot read {file_name}: {err}") from err
    val = np.asarray(val)
    if not (np.issubdtype(val.dtype, np.integer) or np.issubdtype(val.dtype, np.floating)):
        raise RecordError(path, "unreadable", f"'val' of {file_name} holds {val.dtype} values")
    n_sig = len(header.signals)
    if val.ndim != 2 or val.shape[0] != n_sig:
        raise RecordError(path, "header_mismatch",
                          f"'val' has shape {val.shape}, the header declares {n_sig} signals")
    if header.n_samples > 0 and val.shape[1] != header.n_samples:
        raise RecordError(path, "header_mismatch",
                          f"'val' has {val.shape[1]} samples, the header declares "
                          f"{header.n_samples}")
    return val.T


def record_amplitude(signal: np.ndarray) -> float:
    """Median over leads of each lead's 1st-99th percentile range (signal's units)."""
    low, high = np.percentile(signal, [1.0, 99.0], axis=0)
    return float(np.median(high - low))


def physical_signal(path: str, header: ChallengeHeader, digital: np.ndarray
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Digital (n, C) samples -> mV with the gains of `GAIN_RULE`; returns (signal, notes).

    WFDB's invalid-sample code of 16-bit formats becomes NaN. The amplitude is checked by
    `check_amplitude`, once the leads are chosen and known to be finite and not flat."""
    digital = np.asarray(digital, dtype=np.float64)
    if header.signals and all(s.fmt in ("16", "61") for s in header.signals):
        digital = np.where(digital == _INVALID_16, np.nan, digital)
    scale = []
    for spec in header.signals:
        unit = spec.units.strip().lower()
        if unit not in _UNITS_TO_MV:
            raise RecordError(path, "unsupported", f"lead {spec.name}: units {spec.units!r}")
        scale.append(_UNITS_TO_MV[unit])
    gains = np.asarray([s.gain for s in header.signals], dtype=np.float64)
    baselines = np.asarray([s.baseline for s in header.signals], dtype=np.float64)
    bogus = np.isin(gains, KNOWN_BOGUS_GAINS)
    notes: tuple[str, ...] = ()
    if bogus.any():
        notes = ("gain_corrected", *sorted({f"gain_corrected_{g:g}" for g in gains[bogus]}))
        gains = np.where(bogus, TRUE_GAIN, gains)
    return (digital - baselines) / gains * np.asarray(scale), notes


def check_amplitude(path: str, header: ChallengeHeader, signal: np.ndarray,
                    notes: Sequence[str] = ()) -> None:
    """RecordError ``implausible_amplitude`` when `record_amplitude(signal)` (mV) is outside
    `PLAUSIBLE_AMPLITUDE_MV` (`GAIN_RULE`)."""
    amplitude = record_amplitude(signal)
    low, high = PLAUSIBLE_AMPLITUDE_MV
    if not low <= amplitude <= high:
        stated = ", ".join(sorted({f"{s.gain:g}" for s in header.signals}))
        corrected = ", known bogus gains read at 1000" if "gain_corrected" in notes else ""
        raise RecordError(
            path, "implausible_amplitude",
            f"typical lead amplitude {amplitude:.4g} mV (header gains {stated} adu/"
            f"{header.signals[0].units}{corrected}) is outside the plausible {low:g}-{high:g} "
            "mV")


def read_record(
    path: str | os.PathLike[str],
    *,
    lead_names: Sequence[str] | None = LEADS_12,
    min_seconds: float | None = None,
) -> ChallengeRecord:
    """Reads a Challenge record in mV, its leads matched by name (any case) to `lead_names`
    and returned in that order (None: as stored). Raises `RecordError` (docs/data.md,
    "CinC 2021")."""
    path = preprocessing.strip_extension(path, (".hea", ".mat"))
    header = parse_header(path)
    order = None if lead_names is None else match_leads(header.lead_names, lead_names, path)
    digital = _load_val(path, header)
    if not len(digital):
        raise RecordError(path, "too_short", "the record has no samples")
    preprocessing.check_duration(path, len(digital), header.fs, min_seconds)
    if np.issubdtype(digital.dtype, np.integer):  # float data: no checksum to compare
        preprocessing.check_header_samples(
            path, header.lead_names, digital, [s.init_value for s in header.signals],
            [s.checksum for s in header.signals])
    signal, notes = physical_signal(path, header, digital)
    signal, names = preprocessing.checked_leads(path, signal, header.lead_names, order)
    check_amplitude(path, header, signal, notes)
    return ChallengeRecord(path=path, signal=signal, fs=header.fs, lead_names=names,
                           header=header, notes=notes)


def read_signal(path: str, lead_names: Sequence[str]) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """(signal in mV with the leads `lead_names`, fs, notes): the builders' record reader
    (`tfds_builders.processing.process_record`'s `reader`)."""
    record = read_record(path, lead_names=lead_names)
    return record.signal, record.fs, record.notes
