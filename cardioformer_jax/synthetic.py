"""Command line: write a synthetic PTB-XL or MIMIC-IV-ECG twin (`cardioformer_jax.data.synthetic`).

    python -m cardioformer_jax.synthetic --out=DIR [--patients=100] [--seed=0] [--layout=ptbxl]

docs/data.md, "Synthetic twins".
"""

from __future__ import annotations

import time

from absl import app, flags

from cardioformer_jax.core import paths
from cardioformer_jax.data import synthetic

_OUT = paths.DEFINE_path("out", None, "Output folder (created if missing).")
_PATIENTS = flags.DEFINE_integer(
    "patients", 100, "Number of patients (PTB-XL) or subjects (MIMIC-IV-ECG).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes the same bytes.")
_LAYOUT = flags.DEFINE_enum(
    "layout", "ptbxl", list(synthetic.LAYOUTS), "Folder layout of the twin.")
flags.mark_flag_as_required("out")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    t0 = time.perf_counter()
    root = synthetic.write_twin(_OUT.value, _PATIENTS.value, _SEED.value, _LAYOUT.value)
    print(synthetic.describe_twin(root, _PATIENTS.value, _SEED.value, _LAYOUT.value))
    print(f"  written in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    app.run(main)
