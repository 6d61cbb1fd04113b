"""Challenge-format (CinC 2020/2021) records for the tests: the real ones of
``tests/fixtures/cinc2021/`` and variants made from them with the 2020 release's quirks."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.helpers import REPO

FIXTURES = REPO / "tests" / "fixtures" / "cinc2021"
RECORDS = tuple(sorted(p.stem for p in FIXTURES.glob("*.hea")))
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def real_val(name: str) -> np.ndarray:
    """The `val` matrix (leads x samples, int16) of a real fixture record."""
    import scipy.io

    return scipy.io.loadmat(FIXTURES / f"{name}.mat")["val"]


def real_comments(name: str) -> list[str]:
    return [line for line in (FIXTURES / f"{name}.hea").read_text().splitlines()
            if line.startswith("#")]


def copy_record(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".mat"):
        shutil.copy(FIXTURES / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / name


def write_record(
    folder: Path,
    name: str,
    val: np.ndarray,
    *,
    fs: float = 500,
    gains: Sequence[float] | float = 1000.0,
    leads: Sequence[str] = LEADS,
    comments: Sequence[str] = ("# Age: 60", "# Sex: Female", "# Dx: 426783006"),
    record_line: str | None = None,
    units: str = "mV",
) -> Path:
    """Writes NAME.hea + NAME.mat as the Challenge does (format 16x1+24, checksums and
    initial values of `val`); `record_line` replaces the header's first line."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    val = np.asarray(val)
    n_sig, n = val.shape
    if np.isscalar(gains):
        gains = [float(gains)] * n_sig
    scipy.io.savemat(folder / f"{name}.mat", {"val": val}, format="4")
    lines = [record_line or f"{name} {n_sig} {fs:g} {n}"]
    for c in range(n_sig):
        if np.issubdtype(val.dtype, np.integer):
            init, checksum = int(val[c, 0]), int(np.sum(val[c], dtype=np.int64) % 65536)
        else:
            init, checksum = 0, 0
        if checksum >= 32768:
            checksum -= 65536
        lines.append(f"{name}.mat 16x1+24 {gains[c]:g}(0)/{units} 16 0 {init} {checksum} 0 "
                     f"{leads[c]}")
    (folder / f"{name}.hea").write_text("\n".join([*lines, *comments]) + "\n")
    return folder / name


PTB_FIXTURE = REPO / "tests" / "fixtures" / "wfdb" / "ptbdb" / "patient001" / "s0010_re"
PTB_LEADS = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")


def write_ptb_record(folder: Path, name: str = "S0001") -> Path:
    """The real PTB record of ``tests/fixtures/wfdb/ptbdb`` (patient 001, s0010_re) in the
    Challenge's layout, as the Challenge distributes PTB (``S*``: its 12 standard leads at
    1000 Hz, 1000/mV, whole length; `# Dx` myocardial infarction, the record's diagnosis)."""
    import wfdb

    record = wfdb.rdrecord(str(PTB_FIXTURE), channel_names=list(PTB_LEADS))
    val = np.round(record.p_signal.T * 1000.0).astype(np.int16)
    return write_record(folder, name, val, fs=record.fs,
                        comments=("# Age: 81", "# Sex: Female", "# Dx: 164865005"))
