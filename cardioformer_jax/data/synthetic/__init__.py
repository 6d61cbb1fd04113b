"""Synthetic ECG datasets with the on-disk layout of PhysioNet's PTB-XL and MIMIC-IV-ECG.

`signals` simulates, `plans` plans records and labels, `writers` writes WFDB + CSVs, `codes`
holds the vocabulary; docs/data.md, "Synthetic twins".
"""

from cardioformer_jax.data.synthetic.codes import (
    MIMIC_LEADS,
    PTBXL_LEADS,
    RHYTHMS,
    SCP_COLUMNS,
    SUPERCLASS_CODES,
    scp_statements,
)
from cardioformer_jax.data.synthetic.plans import MIMIC_MAX_SUBJECT_ID, plan_mimic, plan_ptbxl
from cardioformer_jax.data.synthetic.signals import synthesize_ecg
from cardioformer_jax.data.synthetic.writers import (
    LAYOUTS,
    MEASUREMENT_COLUMNS,
    PTBXL_COLUMNS,
    SYNTHETIC_MARKER,
    describe_twin,
    write_mimic_twin,
    write_ptbxl_twin,
    write_twin,
)

__all__ = [
    "LAYOUTS",
    "MEASUREMENT_COLUMNS",
    "MIMIC_LEADS",
    "MIMIC_MAX_SUBJECT_ID",
    "PTBXL_COLUMNS",
    "PTBXL_LEADS",
    "RHYTHMS",
    "SCP_COLUMNS",
    "SUPERCLASS_CODES",
    "SYNTHETIC_MARKER",
    "describe_twin",
    "plan_mimic",
    "plan_ptbxl",
    "scp_statements",
    "synthesize_ecg",
    "write_mimic_twin",
    "write_ptbxl_twin",
    "write_twin",
]
