"""Synthetic ECG datasets with the on-disk layout of PhysioNet's PTB-XL and MIMIC-IV-ECG.

`signals` simulates, `plans` plans records and labels, `writers` writes WFDB + CSVs, `codes`
holds the vocabulary; docs/data.md, "Synthetic twins".
"""

from cardioformer_jax.data.synthetic.codes import MIMIC_LEADS, SCP_COLUMNS, scp_statements
from cardioformer_jax.data.synthetic.plans import plan_mimic, plan_ptbxl
from cardioformer_jax.data.synthetic.signals import synthesize_ecg
from cardioformer_jax.data.synthetic.writers import (
    LAYOUTS,
    SYNTHETIC_MARKER,
    describe_twin,
    write_mimic_twin,
    write_ptbxl_twin,
    write_twin,
)

__all__ = [
    "LAYOUTS",
    "MIMIC_LEADS",
    "SCP_COLUMNS",
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
