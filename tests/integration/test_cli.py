"""The command lines: one flag style (absl), thin entry points, clear usage errors.

Every command runs for real in a subprocess (``python -m cardioformer_jax.X``); nothing is
mocked. The commands' work itself is tested with their libraries (test_predict,
test_evaluate, test_builders).
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "cardioformer_jax"

# The synthetic-twin CLI (synthetic.py, data/synthetic) is converted separately; every other
# module is absl-only.
ARGPARSE_ALLOWED_PREFIXES = ("synthetic.py", "data/synthetic")
# Modules allowed to define flags when imported: thin CLI modules that define them at module
# level (main) and the synthetic CLI (converted separately).
FLAGS_AT_IMPORT_ALLOWED = {"cardioformer_jax.main", "cardioformer_jax.synthetic"}

# Each converted command and the flags its --help must list.
COMMAND_FLAGS = {
    "aot": ("config", "target", "batch_size", "estimate"),
    "predict": ("workdir", "json", "seed", "batch_size"),
    "evaluate": ("workdir", "split", "seed", "data_dir"),
    "export": ("workdir", "out", "seed", "platforms", "batch_size"),
    "build_dataset": ("manual_dir", "data_dir", "builder_config", "num_workers",
                      "split_bounds", "split_seed", "no_progress", "register_checksums"),
}


def _env() -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return env


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"cardioformer_jax.{module}", *args],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_module_uses_argparse():
    users = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                   if "argparse" in _imports(p))
    assert [u for u in users if not u.startswith(ARGPARSE_ALLOWED_PREFIXES)] == []


@pytest.mark.parametrize("module", sorted(COMMAND_FLAGS))
def test_help_lists_the_flags(module):
    proc = _command(module, "--help")
    assert "Traceback" not in proc.stderr, proc.stderr
    # absl prints the command's docstring (its usage) and its own flags.
    assert f"python -m cardioformer_jax.{module}" in proc.stdout
    for flag in COMMAND_FLAGS[module]:
        assert f"  --{flag}:" in proc.stdout or f"  --[no]{flag}:" in proc.stdout, (flag,
                                                                                   proc.stdout)


def test_importing_the_modules_defines_no_flags():
    """Libraries and the commands' modules can be imported together (tests do): only
    running a command defines its flags."""
    probe = f"""
import importlib, pkgutil
from absl import flags
import cardioformer_jax

def ours():  # flags defined by this package's modules (libraries define their own)
    return sorted(f"{{module}}:{{flag.name}}"
                  for module, defined in flags.FLAGS.flags_by_module_dict().items()
                  if "cardioformer_jax" in module for flag in defined)

names = [m.name for m in pkgutil.walk_packages(cardioformer_jax.__path__, "cardioformer_jax.")
         if m.name not in {sorted(FLAGS_AT_IMPORT_ALLOWED)!r}]
assert "cardioformer_jax.data.datasets" in names and "cardioformer_jax.predict" in names
for name in names:
    importlib.import_module(name)
print(ours())
importlib.import_module("cardioformer_jax.main")  # defines its flags at import: seen
print("cardioformer_jax.main:workdir" in ours())
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "True"], proc.stdout


def test_build_dataset_usage_errors(tmp_path):
    proc = _command("build_dataset", "ptbxl", "nope", f"--data_dir={tmp_path}")
    assert proc.returncode == 1 and "give one dataset name" in proc.stderr
    proc = _command("build_dataset", "ptbxl", f"--data_dir={tmp_path}", "--split_bounds=0.6")
    assert proc.returncode == 1 and "expected two numbers a,b" in proc.stderr
    # --config is a config file everywhere; the builder config has its own flag.
    proc = _command("build_dataset", "ptbxl", f"--data_dir={tmp_path}", "--config=default")
    assert proc.returncode == 1 and "Unknown command line flag 'config'" in proc.stderr
    assert not (tmp_path / "ptbxl").exists()


def test_build_dataset_source_errors_are_one_line(tmp_path):
    """The command the library prints for an unbuilt dataset is accepted as printed; a
    missing source folder is an ``error:`` line, not a traceback."""
    from cardioformer_jax.data import datasets

    with pytest.raises(FileNotFoundError) as error:
        datasets.dataset_dir("ptbxl", tmp_path / "data", "superdiagnostic")
    line = str(error.value).splitlines()[-1]
    printed = shlex.split(line.replace("<unpacked PhysioNet folder>", str(tmp_path / "nowhere")))
    assert printed[:3] == ["python", "-m", "cardioformer_jax.build_dataset"]
    args = printed[3:]
    assert "--builder_config=superdiagnostic" in args
    proc = _command("build_dataset", *args, "--num_workers=0", "--no_progress")
    assert proc.returncode == 1, proc.stderr
    assert "error:" in proc.stderr and "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module, old, new", [
    ("main", "model.seq_len", "input.seq_len"),
    ("aot", "model.num_channels", "input.num_channels"),
    ("tune", "model.num_classes", "dataset.num_classes"),
])
def test_an_override_of_a_moved_field_names_where_it_went(module, old, new, tmp_path):
    proc = _command(module, "--config=configs/ptbxl.py", f"--config.{old}=500",
                    f"--workdir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--config.{old} is now --config.{new}" in proc.stderr
    assert not list(tmp_path.iterdir())
