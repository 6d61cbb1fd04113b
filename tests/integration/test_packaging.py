"""The repository as a new user meets it: the README's commands, the lock, standing alone."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

LOCK = REPO / "requirements" / "lock.txt"


def _readme_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def _locked() -> list[tuple[str, str, Marker | None]]:
    """(name, version, marker) for every pin of the lock."""
    pins = []
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)(?:\s*;\s*(.+))?$", line)
        if match:
            marker = Marker(match.group(3)) if match.group(3) else None
            pins.append((canonicalize_name(match.group(1)), match.group(2), marker))
    return pins


def _direct_requirements(extra: str = "test") -> list[Requirement]:
    """The dependencies and `extra`'s, with the project's own extras that it names
    (``cardioformer-jax[aot]``) expanded."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pending = [Requirement(r) for r in project["dependencies"] + extras[extra]]
    found = []
    while pending:
        requirement = pending.pop(0)
        if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
            pending += [Requirement(r) for extra in requirement.extras for r in extras[extra]]
        else:
            found.append(requirement)
    return found


def test_ci_runs_exactly_the_readmes_test_command():
    test_blocks = [b for b in _readme_blocks() if "pytest" in b and "ruff" in b]
    assert len(test_blocks) == 1, test_blocks
    command = test_blocks[0].strip()
    assert "-c requirements/lock.txt" in command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_first_block_makes_a_venv_and_installs_from_the_lock():
    first = _readme_blocks()[0]
    assert "\npython3 -m venv " in first and "bin/activate" in first
    assert "pip install -c requirements/lock.txt -e ." in first
    assert "python -m cardioformer_jax.main --config=configs/demo.py" in first


def _environment(python: str) -> dict[str, str]:
    """Marker environment of Linux x86-64 CPython `python` (e.g. ``"3.12"``)."""
    return {"python_version": python, "python_full_version": f"{python}.0",
            "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix"}


def _pins(env: dict[str, str]) -> dict[str, list[str]]:
    """Package -> the versions the lock pins for it in `env`."""
    pins: dict[str, list[str]] = {}
    for name, version, marker in _locked():
        if marker is None or marker.evaluate(env | {"extra": ""}):
            pins.setdefault(name, []).append(version)
    return pins


def _readme_pythons() -> list[str]:
    """The Python versions the README's "Supported:" line names."""
    text = (REPO / "README.md").read_text()
    supported = re.search(r"\*\*Supported:\*\*(.*?)\(", text, re.S)
    assert supported, "README has no **Supported:** line"
    return re.findall(r"\b3\.\d+\b", supported.group(1))


def _readme_locked_extras() -> set[str]:
    """The extras the README installs with the lock (``-c requirements/lock.txt -e ".[x]"``)."""
    text = (REPO / "README.md").read_text()
    found = re.findall(r'pip install -c requirements/lock\.txt -e "\.\[([\w,-]+)\]"', text)
    return {extra for group in found for extra in group.split(",")}


def test_readme_claims_the_pythons_and_accelerator_line_checked_below():
    assert _readme_pythons() == ["3.12", "3.13"]
    assert {"test", "cuda13", "aot"} <= _readme_locked_extras()


@pytest.mark.parametrize("extra", sorted(_readme_locked_extras() | {"cuda12", "cuda13", "tpu"}))
@pytest.mark.parametrize("python", _readme_pythons())
def test_readme_install_lines_resolve_against_the_lock(python, extra):
    """Each ``pip install -c requirements/lock.txt -e ".[extra]"`` of the README, on each
    Python it supports: every requirement of the extra that applies there admits the
    lock's pin (an extra asking for a jax the lock does not pin leaves pip no solution).
    The extras' own packages (CUDA plugins, libtpu) follow jax's exact pins."""
    env = _environment(python)
    pins = _pins(env)
    for requirement in _direct_requirements(extra):
        if requirement.marker is not None and not requirement.marker.evaluate(env | {"extra": ""}):
            continue  # gated off on this Python (the README says so for [aot])
        name = canonicalize_name(requirement.name)
        for version in pins.get(name, []):
            assert requirement.specifier.contains(version, prereleases=True), (
                f'README line -e ".[{extra}]" on Python {python}: {requirement} excludes the '
                f"lock's {name}=={version}")


@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_lock_pins_every_direct_dependency_within_its_range(python):
    env = _environment(python)
    pins = _pins(env)
    for requirement in _direct_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(env | {"extra": ""}):
            continue  # gated off on this Python
        name = canonicalize_name(requirement.name)
        assert len(pins.get(name, [])) == 1, f"{name} pinned {pins.get(name)} for {python}"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{name}=={pins[name][0]} is outside pyproject's {requirement.specifier}")


def test_nothing_points_outside_the_repository_or_into_private_jax():
    files = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                           text=True, check=True).stdout.split()
    offenders = []
    outside = re.compile(r"\.\./shared|/work/shared|\bSPEC(\.md)?\b")
    private_jax = re.compile(r"^\s*(from jax\._src\b|import jax\._src\b)", re.M)
    for name in files:
        path = REPO / name
        if path.suffix not in (".py", ".md", ".sh", ".sbatch", ".toml", ".txt", ".cff", "") \
                or not path.is_file() or name == "tests/integration/test_packaging.py":
            continue
        text = path.read_text(errors="replace")
        if outside.search(text) or (path.suffix == ".py" and private_jax.search(text)):
            offenders.append(name)
    assert offenders == []


def test_every_data_file_of_the_packages_is_package_data():
    # setuptools installs a package's non-Python files only where package-data names them
    # (a glob relative to the package, "*" within one folder), e.g. the Challenge weights.
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "setuptools"]["package-data"]
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "cardioformer_jax",
                            "tfds_builders"], capture_output=True, text=True,
                           check=True).stdout.split()
    data = [name for name in files if not name.endswith(".py")]
    assert "cardioformer_jax/evaluation/cinc2021_weights.csv" in data

    def shipped(name: str) -> bool:
        package, _, rest = name.partition("/")
        parts = rest.split("/")
        return any(len(globbed := pattern.split("/")) == len(parts)
                   and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globbed, strict=True))
                   for pattern in package_data.get(package, []))

    assert [name for name in data if not shipped(name)] == []


def test_configs_is_not_an_installed_top_level_package(tmp_path):
    # From outside the clone, only the installed packages are importable.
    probe = ("import importlib.util as u; "
             "print(u.find_spec('configs'), u.find_spec('cardioformer_jax') is not None)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["None", "True"]


@pytest.mark.parametrize("script", ["run", "upgrade", "pythons.sh"])
def test_ci_scripts_are_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian/Ubuntu: apt-get install -y shellcheck)")
    proc = subprocess.run(["shellcheck", "-x", "--shell=bash", f".ci/{script}"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_supported_pythons_finds_this_interpreter_or_takes_the_override():
    script = 'source .ci/pythons.sh; supported_pythons'
    bash = shutil.which("bash")
    override = subprocess.run([bash, "-c", script], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONS": f"{sys.executable} /x/python3.99"})
    assert override.stdout.split() == [sys.executable, "/x/python3.99"]
    found = subprocess.run([bash, "-c", script], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    versions = [subprocess.run([p, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, check=True).stdout.strip()
                for p in found]
    assert versions and len(set(versions)) == len(versions)
    assert all(v in ("(3, 12)", "(3, 13)") for v in versions)
