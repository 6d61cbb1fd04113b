"""The synthetic-twin command (``python -m cardioformer_jax.synthetic``) and the properties
of the library that need a fresh interpreter: plans independent of Python's hash seed, no
flags defined at import. The generator itself: tests/unit/test_synthetic.py, whose
independently written PTB-XL tables these tests share."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from cardioformer_jax.data import synthetic
from tests.unit.test_synthetic import CODE_TO_CLASS, SCP_COLUMNS, file_tree


def test_plans_do_not_depend_on_python_hash_seed():
    code = ("from cardioformer_jax.data import synthetic as s; "
            "print(s.plan_ptbxl(40, 0).to_csv(), s.plan_mimic(6, 0).to_csv())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout
    assert other.strip() == " ".join(
        [synthetic.plan_ptbxl(40, 0).to_csv(), synthetic.plan_mimic(6, 0).to_csv()]).strip()


def test_cli_writes_and_reports(tmp_path):
    command = [sys.executable, "-m", "cardioformer_jax.synthetic", "--patients=2", "--seed=1"]
    p = subprocess.run([*command, f"--out={tmp_path / 'p'}"], capture_output=True,
                       text=True, check=True)
    m = subprocess.run([*command, f"--out={tmp_path / 'm'}", "--layout=mimic_iv_ecg"],
                       capture_output=True, text=True, check=True)
    assert "PTB-XL twin" in p.stdout and "MIMIC-IV-ECG twin" in m.stdout
    assert p.stdout.startswith(synthetic.describe_twin(tmp_path / "p", 2, 1, "ptbxl"))
    # The command writes what the library writes for the same arguments.
    library = synthetic.write_twin(tmp_path / "q", 2, 1, "ptbxl")
    assert file_tree(tmp_path / "p") == file_tree(library)
    assert file_tree(tmp_path / "m") == file_tree(synthetic.write_mimic_twin(tmp_path / "n", 2, 1))
    missing = subprocess.run(command, capture_output=True, text=True)
    assert missing.returncode != 0 and "--out" in missing.stderr  # --out is required
    with pytest.raises(ValueError, match="unknown layout"):
        synthetic.write_twin(tmp_path / "x", 2, 1, "ptb")


def test_library_defines_no_flags_and_reads_its_scp_table_as_a_resource():
    # Flags belong to the command (cardioformer_jax.synthetic), not to the library.
    code = ("from absl import flags; before = set(flags.FLAGS); "
            "import cardioformer_jax.data.synthetic; print(sorted(set(flags.FLAGS) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    sources = [*pathlib.Path(synthetic.__file__).parent.glob("*.py"),
               pathlib.Path(importlib.util.find_spec("cardioformer_jax.synthetic").origin)]
    assert len(sources) > 2 and not [f for f in sources if "argparse" in f.read_text()]
    scp = synthetic.scp_statements()
    assert list(scp.columns) == SCP_COLUMNS[1:] == list(synthetic.SCP_COLUMNS)
    assert set(CODE_TO_CLASS) <= set(scp.index) and scp.index.is_unique


def test_cli_expands_tilde_and_variables_in_out(tmp_path):
    # The shell leaves `~` in --out=~/x alone: the command must not write a folder named ~.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    from tests.helpers import REPO

    env = {**os.environ, "HOME": str(tmp_path / "home"), "TWIN": "twin",
           "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "cardioformer_jax.synthetic", "--patients=1",
                    "--out=~/${TWIN}s/$TWIN"], cwd=cwd, env=env, capture_output=True,
                   text=True, check=True)
    assert (tmp_path / "home" / "twins" / "twin" / "ptbxl_database.csv").is_file()
    assert list(cwd.iterdir()) == []
