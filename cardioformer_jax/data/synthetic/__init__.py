"""Synthetic ECG datasets with the on-disk layout of PhysioNet's PTB-XL and MIMIC-IV-ECG.

The twins let the demo, the tests and users exercise the whole pipeline (raw WFDB files ->
dataset builders -> training) without the credentialed or multi-gigabyte downloads.

Signals come from a dipole model of the heart whose activation sequence each class changes
the way the pathology does (`signals`); the records and their labels are planned first
(`plans`), then written as WFDB records and metadata CSVs (`writers`). `codes` holds the
vocabulary: lead names, SCP codes, superclasses, rhythms.

`scp_statements.csv` (the SCP statement table a PTB-XL twin carries) is abridged from
PTB-XL's `scp_statements.csv` (Wagner et al., PTB-XL v1.0.3, PhysioNet, CC BY 4.0).

Command line::

    python -m cardioformer_jax.synthetic --out=DIR --patients=N --seed=S [--layout=ptbxl]
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
