"""Small hand-made PhysioNet layouts (PTB-XL, PTB, MIMIC-IV-ECG) written with wfdb.

Used by the dataset tests: every record, label and metadata row is chosen by the test, so
label mapping, patient filters, splits and bad-input handling can be checked exactly.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wfdb"
# Real records, copied into the repository with their attribution (tests/fixtures/README.md).
REAL_PTB_RECORD = FIXTURES / "ptbdb" / "patient001" / "s0010_re"
REAL_PTBXL_RECORD = FIXTURES / "ptbxl" / "00001_lr"

LEADS_12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
LEADS_15 = [*(lead.lower() for lead in LEADS_12), "vx", "vy", "vz"]


def ecg_like(n: int, fs: float, n_leads: int, seed: int) -> np.ndarray:
    """A cheap (n, n_leads) mV signal with QRS-like spikes at ~70 bpm plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beat = np.zeros(n)
    for r in np.arange(0.4, t[-1], 60 / rng.uniform(60, 80)):
        beat += np.exp(-0.5 * ((t - r) / 0.012) ** 2)
    gains = rng.uniform(0.5, 1.5, n_leads)
    drift = np.sin(2 * np.pi * 0.3 * t)[:, None] * rng.uniform(0.05, 0.2, n_leads)
    return beat[:, None] * gains + drift + rng.normal(0, 0.02, (n, n_leads))


def write_record(
    directory: Path,
    name: str,
    signal: np.ndarray,
    fs: float,
    *,
    leads: Sequence[str],
    comments: Sequence[str] = (),
) -> Path:
    """Writes `directory/name.{hea,dat}` (format 16, 1000 adu/mV) and returns the path stem."""
    directory.mkdir(parents=True, exist_ok=True)
    n_leads = signal.shape[1]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * n_leads,
        sig_name=list(leads),
        p_signal=signal,
        fmt=["16"] * n_leads,
        adc_gain=[1000.0] * n_leads,
        baseline=[0] * n_leads,
        comments=list(comments),
        write_dir=str(directory),
    )
    return directory / name


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# --- PTB-XL ----------------------------------------------------------------------------

PTBXL_COLUMNS = [
    "ecg_id", "patient_id", "age", "sex", "height", "weight", "nurse", "site", "device",
    "recording_date", "report", "scp_codes", "heart_axis", "strat_fold", "filename_lr",
    "filename_hr",
]  # fmt: skip

SCP_STATEMENTS = [
    # code, description, diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass
    ("NORM", "normal ECG", 1, "", "", "NORM", "NORM"),
    ("IMI", "inferior myocardial infarction", 1, "", "", "MI", "IMI"),
    ("ASMI", "anteroseptal myocardial infarction", 1, "", "", "MI", "AMI"),
    ("NDT", "non-diagnostic T abnormalities", 1, 1, "", "STTC", "STTC"),
    ("LAFB", "left anterior fascicular block", 1, "", "", "CD", "LAFB/LPFB"),
    ("IRBBB", "incomplete right bundle branch block", 1, "", "", "CD", "IRBBB"),
    ("LVH", "left ventricular hypertrophy", 1, "", "", "HYP", "LVH"),
    ("SR", "sinus rhythm", "", "", 1, "", ""),
    ("AFLT", "atrial flutter", "", "", 1, "", ""),
    ("PACE", "normal functioning artificial pacemaker", "", "", 1, "", ""),
]


def ptbxl_row(
    ecg_id: int, patient: int, scp_codes: str, *, fold: int = 1, age: object = 50, sex: int = 0
) -> list[object]:
    name = f"{ecg_id:05d}"
    folder = f"{(ecg_id // 1000) * 1000:05d}"
    return [
        ecg_id, float(patient), age, sex, "", "", 0, 0, "CS-12", "1990-01-01 00:00:00", "",
        scp_codes, "", fold, f"records100/{folder}/{name}_lr", f"records500/{folder}/{name}_hr",
    ]  # fmt: skip


def write_ptbxl(
    root: Path,
    rows: Sequence[Sequence[object]],
    *,
    seconds: float = 10.0,
    skip_signals: Sequence[int] = (),
) -> Path:
    """PTB-XL layout: database CSV, scp_statements.csv and 500 Hz records for `rows`.

    Records of ecg_ids in `skip_signals` are not written (metadata rows pointing nowhere).
    """
    write_csv(root / "ptbxl_database.csv", PTBXL_COLUMNS, rows)
    write_csv(
        root / "scp_statements.csv",
        ["", "description", "diagnostic", "form", "rhythm", "diagnostic_class",
         "diagnostic_subclass"],
        SCP_STATEMENTS,
    )  # fmt: skip
    n = int(seconds * 500)
    for row in rows:
        ecg_id, filename = int(row[0]), str(row[-1])
        if ecg_id in skip_signals:
            continue
        path = root / filename
        write_record(path.parent, path.name, ecg_like(n, 500, 12, ecg_id), 500, leads=LEADS_12)
    return root


# --- PTB -------------------------------------------------------------------------------

PTB_COMMENT_TEMPLATE = [
    "age: {age}",
    "sex: {sex}",
    "ECG date: 01/10/1990",
    "",
    "Diagnose:",
    "Reason for admission: {reason}",
    "Acute infarction (localization): n/a",
]


def write_ptb_patient(
    root: Path,
    patient: int,
    reason: str,
    *,
    record: str = "s0001_re",
    age: object = 60,
    sex: str = "male",
    seconds: float = 8.0,
    seed: int = 0,
) -> Path:
    """A PTB-layout record (15 leads, 1 kHz) cut from the real PTB record's signal.

    Real waveforms (so that R-peak detection behaves as on PTB), a window chosen by `seed`,
    and the header comments the test asks for.
    """
    source = wfdb.rdrecord(str(REAL_PTB_RECORD)).p_signal
    n = int(seconds * 1000)
    start = (seed * 3000) % (len(source) - n)
    comments = [c.format(age=age, sex=sex, reason=reason) for c in PTB_COMMENT_TEMPLATE]
    return write_record(
        root / f"patient{patient:03d}",
        record,
        source[start : start + n],
        1000,
        leads=LEADS_15,
        comments=comments,
    )


def copy_real_ptb_record(root: Path) -> Path:
    """The real PTB record exactly as PhysioNet ships it, as patient001/s0010_re."""
    target = root / "patient001"
    target.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".dat", ".xyz"):
        shutil.copy(REAL_PTB_RECORD.with_suffix(suffix), target)
    return target / REAL_PTB_RECORD.name


# --- MIMIC-IV-ECG ----------------------------------------------------------------------

MIMIC_RECORD_COLUMNS = ["subject_id", "study_id", "file_name", "ecg_time", "path"]
MIMIC_MEASUREMENT_COLUMNS = [
    "subject_id", "study_id", "cart_id", "ecg_time",
    *(f"report_{i}" for i in range(18)),
    "bandwidth", "filtering", "rr_interval",
]  # fmt: skip
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_mimic(
    root: Path,
    studies: Sequence[tuple[int, int, Sequence[str]]],
    *,
    seconds: float = 10.0,
    skip_signals: Sequence[int] = (),
) -> Path:
    """MIMIC-IV-ECG layout for `(subject_id, study_id, reports)` triples."""
    record_rows, measurement_rows = [], []
    n = int(seconds * 500)
    for subject, study, reports in studies:
        rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        record_rows.append([subject, study, study, "2180-01-01 00:00:00", rel])
        padded = list(reports) + [""] * (18 - len(reports))
        measurement_rows.append(
            [subject, study, 1, "2180-01-01 00:00:00", *padded, "0.5-150 Hz", "60 Hz notch", 800]
        )
        if study not in skip_signals:
            path = root / rel
            write_record(path.parent, path.name, ecg_like(n, 500, 12, study), 500,
                         leads=MIMIC_LEADS)  # fmt: skip
    write_csv(root / "record_list.csv", MIMIC_RECORD_COLUMNS, record_rows)
    write_csv(root / "machine_measurements.csv", MIMIC_MEASUREMENT_COLUMNS, measurement_rows)
    return root
