"""What a built dataset was made from and how: its fingerprint.

The code digest ignores comments and docstrings; docs/data.md, "Versions and fingerprints".
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Digest of the preparation code of builder version 1.3.0 (see the module docstring). It
# moved without a version bump three times, for changes that write no example differently
# (build progress as plain lines in a log; the progress module's import path; the WFDB and
# Challenge readers' shared checks merged): builds of 1.3.0 stay valid either side of them.
PREPARATION_CODE_SHA256 = "e1885c05b530978230fd484fc585d6ccab7ee18776181447b786cdcfac33554c"

_ROOT = Path(__file__).resolve().parents[1]
PREPARATION_MODULES: tuple[str, ...] = (
    "cardioformer_jax/data/preprocessing.py",
    "tfds_builders/common.py",
    "tfds_builders/labels.py",
    "tfds_builders/processing.py",
    "tfds_builders/splits.py",
    "tfds_builders/ptbxl/ptbxl_dataset_builder.py",
    "tfds_builders/ptb/ptb_dataset_builder.py",
    "tfds_builders/mimic_iv_ecg/mimic_iv_ecg_dataset_builder.py",
    "tfds_builders/cinc2021/cinc2021_dataset_builder.py",
    "cardioformer_jax/data/challenge_format.py",
)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


# AST fields newer Pythons add with empty defaults (3.12: type parameters): left out, so
# the digest is the same on every supported Python.
_OPTIONAL_FIELDS = frozenset({"type_params", "type_comment"})


def _canonical(node: Any) -> Any:
    """A plain, Python-version-independent form of a syntax tree (no positions)."""
    if isinstance(node, ast.AST):
        fields = [(name, _canonical(getattr(node, name, None))) for name in node._fields
                  if not (name in _OPTIONAL_FIELDS and not getattr(node, name, None))]
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return repr(node)


def preparation_code_digest(modules: Sequence[str] = PREPARATION_MODULES,
                            root: Path = _ROOT) -> str:
    """SHA-256 over the syntax trees (no comments, no docstrings) of the preparation code."""
    digest = hashlib.sha256()
    for name in modules:
        tree = _without_docstrings(ast.parse((root / name).read_text(), filename=name))
        digest.update(name.encode())
        digest.update(json.dumps(_canonical(tree)).encode())
    return digest.hexdigest()


def source_summary(root: Path, metadata_files: Iterable[str],
                   record_paths: Iterable[str]) -> dict[str, Any]:
    """The source folder in brief: SHA-256 of each metadata file, and the number, names and
    byte sizes of the records' files (a stat per file, no signal is read)."""
    files = {}
    for name in metadata_files:
        path = root / name
        if path.is_file():
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    records = hashlib.sha256()
    count = 0
    for record in sorted(record_paths):
        sizes = []
        for suffix in (".hea", ".dat", ".xyz", ".mat"):
            try:
                sizes.append(f"{suffix}:{os.stat(record + suffix).st_size}")
            except OSError:
                continue
        records.update(f"{os.path.relpath(record, root)} {' '.join(sizes)}\n".encode())
        count += 1
    return {"metadata_files": files, "records": count, "records_sha256": records.hexdigest()}


def fingerprint(*, builder_version: str, preparation: Mapping[str, Any],
                source: Mapping[str, Any], code_digest: str | None = None) -> dict[str, Any]:
    """The fingerprint dict, with ``sha256`` over everything else in it."""
    value = {
        "builder_version": builder_version,
        "preparation": dict(preparation),
        "preparation_code_sha256": code_digest or preparation_code_digest(),
        "source": dict(source),
    }
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return {**value, "sha256": hashlib.sha256(text.encode()).hexdigest()}
