"""Label rules of docs/model.md and docs/data.md: pure functions, no TFDS, no file access.

Kept apart from the builders so the rules can be tested on hand-made inputs and reused
(e.g. by evaluation scripts) without importing TensorFlow Datasets.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping

# --- PTB-XL (docs/data.md) -------------------------------------------------------------

PTBXL_CLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

_PTBXL_SUPERCLASS_CODES: dict[str, tuple[str, ...]] = {
    "NORM": ("NORM",),
    "MI": ("IMI ASMI ILMI AMI ALMI INJAS LMI INJAL IPLMI IPMI INJIN INJLA PMI INJIL".split()),
    "STTC": ("NDT NST_ DIG ISC_ ISCAL LNGQT ISCIN ISCIL ISCAS ISCLA ANEUR EL ISCAN".split()),
    "CD": ("LAFB IRBBB 1AVB IVCD CRBBB CLBBB LPFB WPW ILBBB 3AVB 2AVB".split()),
    "HYP": ("LVH LAO/LAE RVH RAO/RAE SEHYP".split()),
}

PTBXL_CODE_TO_CLASS: dict[str, int] = {
    code: PTBXL_CLASSES.index(cls)
    for cls, codes in _PTBXL_SUPERCLASS_CODES.items()
    for code in codes
}
"""SCP code -> class index of docs/data.md; codes not listed are "other"."""


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parses PTB-XL's `scp_codes` column (a Python dict literal, code -> likelihood).

    Raises ValueError on anything that is not such a dict.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError) as err:
        raise ValueError(f"scp_codes is not a dict literal: {text!r}") from err
    if not isinstance(value, dict):
        raise ValueError(f"scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def ptbxl_top_code_class(scp_codes: Mapping[str, float]) -> int | None:
    """PTB-XL record label: the highest-likelihood code (first in dict order on ties)
    mapped to its superclass index; None for "other" (or no codes at all)."""
    if not scp_codes:
        return None
    # max() returns the first maximal item, which is the reference's tie rule.
    top = max(scp_codes.items(), key=lambda item: item[1])[0]
    return PTBXL_CODE_TO_CLASS.get(top)


def ptbxl_superdiagnostic(
    scp_codes: Mapping[str, float], code_to_superclass: Mapping[str, str]
) -> tuple[int, ...]:
    """Multi-hot superdiagnostic 5-vector (order of PTBXL_CLASSES) of one record.

    The literature's standard protocol (Strodthoff et al. 2020, `superdiagnostic`): every
    code of the record that `scp_statements.csv` marks `diagnostic == 1` contributes its
    `diagnostic_class`, whatever its likelihood.
    """
    hot = [0] * len(PTBXL_CLASSES)
    for code in scp_codes:
        superclass = code_to_superclass.get(code)
        if superclass in PTBXL_CLASSES:
            hot[PTBXL_CLASSES.index(superclass)] = 1
    return tuple(hot)


# --- PTB-XL benchmark tasks (Strodthoff et al. 2020; docs/benchmarks.md) ------------------

PTBXL_BENCHMARK_TASKS: tuple[str, ...] = (
    "all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def _codes(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The classes of each task in PTB-XL 1.0.3's scp_statements.csv, sorted by name as the
# benchmark suite's label binariser orders them (superdiagnostic keeps PTBXL_CLASSES'
# order, shared with the single-label configs). A build checks them against the source's
# table (`ptbxl_task_classes`) and refuses another release's.
PTBXL_TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "all": _codes(
        "1AVB 2AVB 3AVB ABQRS AFIB AFLT ALMI AMI ANEUR ASMI BIGU CLBBB CRBBB DIG EL HVOLT "
        "ILBBB ILMI IMI INJAL INJAS INJIL INJIN INJLA INVT IPLMI IPMI IRBBB ISCAL ISCAN "
        "ISCAS ISCIL ISCIN ISCLA ISC_ IVCD LAFB LAO/LAE LMI LNGQT LOWT LPFB LPR LVH LVOLT "
        "NDT NORM NST_ NT_ PAC PACE PMI PRC(S) PSVT PVC QWAVE RAO/RAE RVH SARRH SBRAD "
        "SEHYP SR STACH STD_ STE_ SVARR SVTAC TAB_ TRIGU VCLVH WPW"),
    "diagnostic": _codes(
        "1AVB 2AVB 3AVB ALMI AMI ANEUR ASMI CLBBB CRBBB DIG EL ILBBB ILMI IMI INJAL INJAS "
        "INJIL INJIN INJLA IPLMI IPMI IRBBB ISCAL ISCAN ISCAS ISCIL ISCIN ISCLA ISC_ IVCD "
        "LAFB LAO/LAE LMI LNGQT LPFB LVH NDT NORM NST_ PMI RAO/RAE RVH SEHYP WPW"),
    "subdiagnostic": _codes(
        "AMI CLBBB CRBBB ILBBB IMI IRBBB ISCA ISCI ISC_ IVCD LAFB/LPFB LAO/LAE LMI LVH NORM "
        "NST_ PMI RAO/RAE RVH SEHYP STTC WPW _AVB"),
    "superdiagnostic": PTBXL_CLASSES,
    "form": _codes(
        "ABQRS DIG HVOLT INVT LNGQT LOWT LPR LVOLT NDT NST_ NT_ PAC PRC(S) PVC QWAVE STD_ "
        "STE_ TAB_ VCLVH"),
    "rhythm": _codes("AFIB AFLT BIGU PACE PSVT SARRH SBRAD SR STACH SVARR SVTAC TRIGU"),
}


def _flag(value: object) -> bool:
    return not is_missing(value) and float(value) == 1.0  # type: ignore[arg-type]


def ptbxl_task_code_map(statements: Mapping[str, Mapping[str, object]], task: str
                        ) -> dict[str, str]:
    """SCP code -> class of `task`, from the rows of scp_statements.csv (code -> columns).

    all: every statement is its own class; diagnostic / form / rhythm: the statements with
    that flag; subdiagnostic / superdiagnostic: a diagnostic statement's
    `diagnostic_subclass` / `diagnostic_class`.
    """
    if task not in PTBXL_BENCHMARK_TASKS:
        raise ValueError(f"unknown PTB-XL benchmark task {task!r}; use one of "
                         f"{PTBXL_BENCHMARK_TASKS}")
    mapping = {}
    for code, row in statements.items():
        if task == "all":
            mapping[code] = code
        elif task in ("diagnostic", "form", "rhythm"):
            if _flag(row.get(task)):
                mapping[code] = code
        elif _flag(row.get("diagnostic")):
            column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
            value = row.get(column)
            if not is_missing(value) and str(value).strip():
                mapping[code] = str(value).strip()
    return mapping


def ptbxl_task_labels(scp_codes: Mapping[str, float], code_map: Mapping[str, str],
                      classes: tuple[str, ...]) -> tuple[int, ...]:
    """Multi-hot vector over `classes` of one record: every code of the record that
    `code_map` (`ptbxl_task_code_map`) knows contributes its class, whatever its likelihood
    (the benchmark suite's rule; a likelihood of 0 means "unknown", not "absent")."""
    hot = [0] * len(classes)
    for code in scp_codes:
        cls = code_map.get(code)
        if cls is not None and cls in classes:
            hot[classes.index(cls)] = 1
    return tuple(hot)


def consistent_subject_labels(
    labels_by_subject: Mapping[int, Iterable[int | None]],
) -> dict[int, int]:
    """Subjects whose records all carry one and the same label (none None) -> that label.

    Subjects with mixed labels, or any record labelled None ("other"), are left out.
    """
    kept: dict[int, int] = {}
    for subject, labels in labels_by_subject.items():
        distinct = set(labels)
        if len(distinct) == 1 and None not in distinct:
            kept[subject] = distinct.pop()  # type: ignore[assignment]
    return kept


# --- PTB (docs/data.md) ----------------------------------------------------------------

PTB_CLASSES: tuple[str, ...] = ("healthy control", "myocardial infarction")

_REASON_RE = re.compile(r"^\s*reason for admission\s*:\s*(.*?)\s*$", re.IGNORECASE)
_AGE_RE = re.compile(r"^\s*age\s*:\s*(.*?)\s*$", re.IGNORECASE)
_SEX_RE = re.compile(r"^\s*sex\s*:\s*(.*?)\s*$", re.IGNORECASE)


def _comment_value(comments: Iterable[str], pattern: re.Pattern[str]) -> str | None:
    for line in comments:
        match = pattern.match(line)
        if match:
            return match.group(1)
    return None


def ptb_reason(comments: Iterable[str]) -> str | None:
    """The header's "Reason for admission: ..." text, or None if absent."""
    return _comment_value(comments, _REASON_RE)


def ptb_label(comments: Iterable[str]) -> int | None:
    """0 healthy control, 1 myocardial infarction, None for any other reason (docs/data.md)."""
    reason = ptb_reason(comments)
    if reason is None:
        return None
    reason = reason.strip().lower()
    return PTB_CLASSES.index(reason) if reason in PTB_CLASSES else None


def is_missing(value: object) -> bool:
    """True for an absent metadata value: None, NaN, or pandas' NA/NaT.

    pandas 3 reads an empty text cell as NaN (its default string dtype) and nullable
    dtypes give pd.NA, so a plain `is None` test is not enough.
    """
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def parse_age(value: object) -> float:
    """Age in years, -1.0 when unknown ("n/a", empty, NaN, unparsable)."""
    if is_missing(value):
        return -1.0
    try:
        age = float(str(value).strip())
    except ValueError:
        return -1.0
    return -1.0 if math.isnan(age) or age < 0 else age


def parse_sex(value: object) -> int:
    """0 male, 1 female, -1 unknown. Accepts "male"/"female"/"m"/"f" and PTB-XL's 0/1."""
    if is_missing(value):
        return -1
    text = str(value).strip().lower()
    if text in ("male", "m", "0", "0.0"):
        return 0
    if text in ("female", "f", "1", "1.0"):
        return 1
    return -1


def ptb_age_sex(comments: Iterable[str]) -> tuple[float, int]:
    """(age, sex) from PTB header comments "age: 81" and "sex: female"."""
    comments = list(comments)
    return (
        parse_age(_comment_value(comments, _AGE_RE)),
        parse_sex(_comment_value(comments, _SEX_RE)),
    )


# --- MIMIC-IV-ECG (docs/data.md) -------------------------------------------------------

MIMIC_CLASSES: tuple[str, ...] = ("SB", "ST", "AF", "NORM")

MIMIC_REPORT_COLUMNS: tuple[str, ...] = tuple(f"report_{i}" for i in range(18))


def mimic_label(reports: Iterable[object]) -> int | None:
    """MIMIC-IV-ECG class: first matching rule over the lower-cased machine reports.

    "bradycardia" in any report -> SB; "tachycardia" -> ST; "atrial fibrillation" -> AF;
    a report containing "abnormal" but not "possible" -> None (excluded); otherwise NORM.
    Missing reports (None / NaN) are ignored.
    """
    texts = [str(r).lower() for r in reports if not is_missing(r)]
    for keyword, label in (("bradycardia", 0), ("tachycardia", 1), ("atrial fibrillation", 2)):
        if any(keyword in t for t in texts):
            return label
    if any("abnormal" in t and "possible" not in t for t in texts):
        return None
    return MIMIC_CLASSES.index("NORM")
