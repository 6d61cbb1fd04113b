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


# --- PhysioNet/CinC Challenge 2021 (docs/data.md, cinc2021) ------------------------------

CINC2021_EQUIVALENT_CODES: tuple[tuple[str, str], ...] = (
    ("713427006", "59118001"),  # complete right bundle branch block = right bundle branch block
    ("284470004", "63593006"),  # premature atrial contraction = supraventricular premature beats
    ("427172004", "17338001"),  # premature ventricular contractions = ventricular premature beats
    ("733534002", "164909002"),  # complete left bundle branch block = left bundle branch block
)
"""Code pairs the Challenge scores as one class (the scored table's Notes column)."""

CINC2021_CPSC_ABBREVIATIONS: dict[str, str] = {
    # The nine class names of CPSC 2018, used instead of codes in early Challenge headers.
    "Normal": "426783006",  # sinus rhythm
    "AF": "164889003",  # atrial fibrillation
    "I-AVB": "270492004",  # 1st degree AV block
    "LBBB": "164909002",  # left bundle branch block
    "RBBB": "59118001",  # right bundle branch block
    "PAC": "284470004",  # premature atrial contraction
    "PVC": "427172004",  # premature ventricular contractions
    "STD": "429622005",  # ST depression
    "STE": "164931005",  # ST elevation
}
"""CPSC 2018 class name -> SNOMED CT code; the Challenge tables' Abbreviation column
(`cinc2021_abbreviations`) adds the others."""

_EQUIVALENCE_NOTE = re.compile(r"score\s+(\d+)\s+and\s+(\d+)\s+as the same", re.IGNORECASE)


def cinc2021_equivalences(notes: Iterable[object]) -> tuple[tuple[str, str], ...]:
    """The code pairs named by the scored table's Notes ("We score X and Y as the same
    diagnosis"), each once, in table order."""
    pairs: list[tuple[str, str]] = []
    for note in notes:
        if is_missing(note):
            continue
        match = _EQUIVALENCE_NOTE.search(str(note))
        if match and match.groups() not in pairs and match.groups()[::-1] not in pairs:
            pairs.append((match.group(1), match.group(2)))
    return tuple(pairs)


def cinc2021_scored_classes(
    rows: Iterable[tuple[str, str]], equivalences: Iterable[tuple[str, str]],
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, int]]:
    """(class names, class codes, code -> class index) of the scored table.

    `rows` are (code, abbreviation) in table order. Equivalent codes form one class at the
    position of the first of them in the table; its name joins their abbreviations, its code
    their codes, with "|" in table order (the Challenge's weights.csv writes
    ``713427006|59118001``).
    """
    rows = [(str(c).strip(), str(a).strip()) for c, a in rows]
    partner: dict[str, set[str]] = {}
    for first, second in equivalences:
        group = partner.get(first, {first}) | partner.get(second, {second})
        for code in group:
            partner[code] = group
    names: list[str] = []
    codes: list[str] = []
    index: dict[str, int] = {}
    abbreviation = dict(rows)
    for code, _ in rows:
        if code in index:
            continue
        group = [c for c, _ in rows if c in partner.get(code, {code})] or [code]
        for member in group:
            index[member] = len(names)
        names.append("|".join(abbreviation[c] for c in group))
        codes.append("|".join(group))
    return tuple(names), tuple(codes), index


def cinc2021_abbreviations(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Abbreviation -> code from the tables' (code, abbreviation) rows plus the CPSC 2018
    names; both spellings and the lower-case form of each (unambiguous here: no two codes
    share an abbreviation ignoring case)."""
    mapping = {**{str(a).strip(): str(c).strip() for c, a in rows},
               **CINC2021_CPSC_ABBREVIATIONS}
    lower: dict[str, set[str]] = {}
    for name, code in mapping.items():
        lower.setdefault(name.lower(), set()).add(code)
    mapping.update({name: codes.pop() for name, codes in lower.items() if len(codes) == 1})
    return mapping


def cinc2021_dx_code(token: str, known_codes: Iterable[str] | Mapping[str, object],
                     abbreviations: Mapping[str, str]) -> tuple[str | None, str]:
    """(SNOMED CT code, how) of one ``# Dx:`` token; how: "code", "abbreviation" or
    "unknown" (code None: neither a code of the tables nor a known abbreviation)."""
    token = token.strip()
    if token in known_codes:
        return token, "code"
    code = abbreviations.get(token) or abbreviations.get(token.lower())
    if code is not None:
        return code, "abbreviation"
    return None, "unknown"


CINC2021_NORM_CODES: frozenset[str] = frozenset({
    "426783006",  # NSR sinus rhythm
    "426177001",  # SB sinus bradycardia
    "427084000",  # STach sinus tachycardia
    "427393009",  # SA sinus arrhythmia
})
"""Sinus rhythms: a record whose codes are all among these (at least one) is NORM."""

CINC2021_SUPERCLASS_OF_CODE: dict[str, str] = {
    # MI: myocardial infarction (PTB-XL: IMI, AMI, ASMI, ... and the INJ* injury codes).
    "164865005": "MI",  # MI myocardial infarction
    "57054005": "MI",  # AMI acute myocardial infarction
    "54329005": "MI",  # AnMI anterior myocardial infarction
    "164867002": "MI",  # OldMI old myocardial infarction
    # STTC: ST/T changes, ischaemia, long QT (PTB-XL: NDT, NST_, ISC*, LNGQT, ...).
    "428750005": "STTC",  # NSSTTA nonspecific ST-T abnormality (PTB-XL NST_)
    "55930002": "STTC",  # STC ST changes
    "429622005": "STTC",  # STD ST depression (CPSC 2018 "STD")
    "164931005": "STTC",  # STE ST elevation (CPSC 2018 "STE")
    "164930006": "STTC",  # STIAb ST interval abnormal
    "704997005": "STTC",  # ISTD inferior ST segment depression
    "164934002": "STTC",  # TAb T wave abnormal (PTB-XL NDT)
    "59931005": "STTC",  # TInv T wave inversion
    "251259000": "STTC",  # HTV high T voltage
    "111975006": "STTC",  # LQT prolonged QT interval (PTB-XL LNGQT)
    "164861001": "STTC",  # MIs myocardial ischemia (PTB-XL ISC_)
    "413444003": "STTC",  # AMIs acute myocardial ischemia
    "413844008": "STTC",  # CMI chronic myocardial ischemia
    "426434006": "STTC",  # AnMIs anterior ischemia (PTB-XL ISCAN)
    "425419005": "STTC",  # IIs inferior ischaemia (PTB-XL ISCIN)
    "425623009": "STTC",  # LIs lateral ischaemia (PTB-XL ISCLA)
    "370365005": "STTC",  # LVS left ventricular strain (repolarisation ST-T pattern)
    "418818005": "STTC",  # BRU Brugada (coved ST elevation V1-V2)
    # CD: conduction disturbance (PTB-XL: AV blocks, bundle branch and fascicular blocks,
    # IVCD, WPW).
    "270492004": "CD",  # IAVB 1st degree AV block (PTB-XL 1AVB)
    "195042002": "CD",  # IIAVB 2nd degree AV block (PTB-XL 2AVB)
    "54016002": "CD",  # MoI Mobitz type I Wenckebach AV block
    "426183003": "CD",  # IIAVBII Mobitz type II AV block
    "27885002": "CD",  # CHB complete heart block (PTB-XL 3AVB)
    "204384007": "CD",  # CIAHB congenital incomplete AV heart block
    "233917008": "CD",  # AVB AV block
    "6374002": "CD",  # BBB bundle branch block
    "164909002": "CD",  # LBBB left bundle branch block
    "733534002": "CD",  # CLBBB complete left bundle branch block (PTB-XL CLBBB)
    "251120003": "CD",  # ILBBB incomplete left bundle branch block (PTB-XL ILBBB)
    "59118001": "CD",  # RBBB right bundle branch block
    "713427006": "CD",  # CRBBB complete right bundle branch block (PTB-XL CRBBB)
    "713426002": "CD",  # IRBBB incomplete right bundle branch block (PTB-XL IRBBB)
    "445118002": "CD",  # LAnFB left anterior fascicular block (PTB-XL LAFB)
    "445211001": "CD",  # LPFB left posterior fascicular block (PTB-XL LPFB)
    "698252002": "CD",  # NSIVCB nonspecific intraventricular conduction disorder (IVCD)
    "82226007": "CD",  # DIB diffuse intraventricular block (IVCD)
    "74390002": "CD",  # WPW Wolff-Parkinson-White pattern (PTB-XL WPW)
    "195060002": "CD",  # VPEx ventricular pre-excitation (WPW pattern)
    # HYP: hypertrophy and atrial enlargement (PTB-XL: LVH, RVH, LAO/LAE, RAO/RAE, SEHYP).
    "164873001": "HYP",  # LVH left ventricular hypertrophy
    "89792004": "HYP",  # RVH right ventricular hypertrophy
    "266249003": "HYP",  # VH ventricular hypertrophy
    "67741000119109": "HYP",  # LAE left atrial enlargement (PTB-XL LAO/LAE)
    "253352002": "HYP",  # LAA left atrial abnormality (LAO/LAE)
    "446813000": "HYP",  # LAH left atrial hypertrophy (LAO/LAE)
    "446358003": "HYP",  # RAH right atrial hypertrophy (PTB-XL RAO/RAE)
    "253339007": "HYP",  # RAAb right atrial abnormality (RAO/RAE)
    "195126007": "HYP",  # AH atrial hypertrophy
}
"""SNOMED CT code -> PTB-XL diagnostic superclass (docs/data.md, cinc2021). Codes absent
here (rhythms, ectopy, axis, voltage criteria such as LVHV / RAHV, QRS and P-wave form
statements, clinical diagnoses) map to none; as in PTB-XL, where such statements are not
diagnostic, they add no superclass, but they keep a record from being NORM."""


def cinc2021_superclasses(codes: Iterable[str]) -> tuple[int, ...]:
    """Multi-hot PTB-XL superclass vector (order PTBXL_CLASSES) of a record's codes.

    MI / STTC / CD / HYP: every code of `CINC2021_SUPERCLASS_OF_CODE` adds its class.
    NORM: only when every code is a sinus rhythm of `CINC2021_NORM_CODES` (so never with
    another superclass, nor with any other finding, e.g. an arrhythmia or an axis deviation).
    """
    codes = set(codes)
    hot = [0] * len(PTBXL_CLASSES)
    for code in codes:
        superclass = CINC2021_SUPERCLASS_OF_CODE.get(code)
        if superclass is not None:
            hot[PTBXL_CLASSES.index(superclass)] = 1
    if codes and codes <= CINC2021_NORM_CODES:
        hot[PTBXL_CLASSES.index("NORM")] = 1
    return tuple(hot)


def single_class(hot: Iterable[int]) -> int:
    """The index of the only set entry of a multi-hot vector; -1 for none or several."""
    set_entries = [i for i, v in enumerate(hot) if v]
    return set_entries[0] if len(set_entries) == 1 else -1


CINC2021_SOURCES: tuple[tuple[str, str], ...] = (
    ("HR", "PTB-XL"),
    ("JS", "Chapman-Shaoxing/Ningbo"),  # split by number, `cinc2021_source_database`
    ("A", "CPSC"),
    ("Q", "CPSC-extra"),
    ("I", "INCART"),
    ("S", "PTB"),
    ("E", "Georgia"),
)
"""Record name prefix -> source database of the Challenge 2021 training set (longest
prefix first)."""

CINC2021_LAST_CHAPMAN = 10646
"""JS00001-JS10646 are Chapman-Shaoxing records, JS10647 onwards Ningbo."""


def cinc2021_source_database(record_name: str) -> str:
    """The source database of a Challenge record from its name; "unknown" otherwise."""
    name = record_name.strip()
    for prefix, source in CINC2021_SOURCES:
        rest = name[len(prefix):]
        if name.startswith(prefix) and rest.isdigit():
            if prefix == "JS":
                return "Chapman-Shaoxing" if int(rest) <= CINC2021_LAST_CHAPMAN else "Ningbo"
            return source
    return "unknown"
