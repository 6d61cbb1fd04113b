"""The twins' vocabulary: lead names, PTB-XL's SCP codes and superclasses, the rhythms the
generator simulates, and PTB-XL's SCP statement table (`scp_statements.csv`)."""

import io
from importlib import resources

import pandas as pd

PTBXL_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
# MIMIC-IV-ECG headers really use this spelling and order (aVF before aVL), unlike PTB-XL;
# a builder that selects leads by PTB-XL names would fail on the real download too.
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

# docs/data.md (PTB-XL): the diagnostic codes of each superclass; any other top code is "other".
SUPERCLASS_CODES: dict[str, tuple[str, ...]] = {
    "NORM": ("NORM",),
    "MI": ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "INJAS", "LMI", "INJAL", "IPLMI", "IPMI",
           "INJIN", "INJLA", "PMI", "INJIL"),
    "STTC": ("NDT", "NST_", "DIG", "ISC_", "ISCAL", "LNGQT", "ISCIN", "ISCIL", "ISCAS",
             "ISCLA", "ANEUR", "EL", "ISCAN"),
    "CD": ("LAFB", "IRBBB", "1AVB", "IVCD", "CRBBB", "CLBBB", "LPFB", "WPW", "ILBBB", "3AVB",
           "2AVB"),
    "HYP": ("LVH", "LAO/LAE", "RVH", "RAO/RAE", "SEHYP"),
}
_CODE_TO_SUPERCLASS = {c: s for s, codes in SUPERCLASS_CODES.items() for c in codes}

# Subtype mix inside each superclass, roughly PTB-XL's relative frequencies.
_SUBTYPES: dict[str, dict[str, float]] = {
    "NORM": {"NORM": 1.0},
    "MI": {"IMI": 0.34, "ASMI": 0.30, "ILMI": 0.07, "AMI": 0.08, "ALMI": 0.07, "LMI": 0.03,
           "IPLMI": 0.03, "IPMI": 0.01, "PMI": 0.01, "INJAS": 0.03, "INJAL": 0.01,
           "INJIN": 0.01, "INJLA": 0.005, "INJIL": 0.005},
    "STTC": {"NDT": 0.38, "NST_": 0.10, "ISC_": 0.13, "ISCAL": 0.08, "ISCIN": 0.05,
             "ISCIL": 0.04, "ISCAS": 0.04, "ISCLA": 0.03, "ISCAN": 0.03, "LNGQT": 0.06,
             "DIG": 0.03, "EL": 0.02, "ANEUR": 0.01},
    "CD": {"CLBBB": 0.13, "ILBBB": 0.02, "CRBBB": 0.18, "IRBBB": 0.13, "LAFB": 0.19,
           "LPFB": 0.02, "1AVB": 0.15, "IVCD": 0.12, "WPW": 0.03, "2AVB": 0.02, "3AVB": 0.01},
    "HYP": {"LVH": 0.72, "LAO/LAE": 0.12, "RVH": 0.06, "RAO/RAE": 0.04, "SEHYP": 0.06},
}
# Patient class mix: NORM dominates as in PTB-XL, but every class keeps enough patients.
_CLASS_PROBS = {"NORM": 0.38, "MI": 0.18, "STTC": 0.17, "CD": 0.15, "HYP": 0.12}
# Mean heart rate per class (bpm); the rhythm code follows the simulated rate.
_CLASS_HR = {"NORM": 70.0, "MI": 72.0, "STTC": 78.0, "CD": 70.0, "HYP": 74.0}
# Rhythms the generator can simulate (PVC_BIGEMINY: every other beat a PVC).
RHYTHMS = ("SR", "SBRAD", "STACH", "SARRH", "AFIB", "AFLT", "PACE", "2AVB", "3AVB",
           "PVC_BIGEMINY")
# Codes whose top position makes a record "other" (docs/data.md, PTB-XL).
_OTHER_KINDS = ("AFLT", "AFLT_TIE", "PACE", "PVC")

SCP_COLUMNS = (
    "description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
    "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID",
    "CDISC Code", "DICOM Code",
)
# The package file, in PTB-XL's own layout (index = SCP code, then SCP_COLUMNS); a PTB-XL
# twin's scp_statements.csv is a byte copy of it.
SCP_STATEMENTS_FILE = "scp_statements.csv"


def scp_statements_bytes() -> bytes:
    """The bytes of the package's `scp_statements.csv` (written as is into PTB-XL twins)."""
    return resources.files(__package__).joinpath(SCP_STATEMENTS_FILE).read_bytes()


def scp_statements() -> pd.DataFrame:
    """PTB-XL's SCP statement table (the rows of every code the twins can emit), indexed by
    SCP code, with columns `SCP_COLUMNS`."""
    return pd.read_csv(io.BytesIO(scp_statements_bytes()), index_col=0)
