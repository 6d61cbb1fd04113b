"""Shared pytest fixtures and the session's set-up (the suite's layout: tests/README.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import pytest

from cardioformer_jax.data import datasets, synthetic

TINY_PTBXL_PATIENTS = 40
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
_SHARED_CACHE = "CARDIOFORMER_JAX_TEST_XLA_CACHE"


def pytest_configure(config: pytest.Config) -> None:
    # The tests run on the CPU. With the ahead-of-time compilers installed (the [aot]
    # extra), JAX would also start the TPU runtime at the first device query, printing
    # warnings and holding libtpu's lock; the AOT tests load libtpu for compiling only.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
    # Compilation dominates the tests that train on a CPU, so the whole session shares one
    # persistent XLA compilation cache: a fresh temporary directory, removed at the end, in
    # which every program is stored (minimum compile time 0) and from which every later
    # compilation of the same program loads it, in this process and (through the
    # environment variables) in the commands the tests run in subprocesses, e.g. the
    # `python -m cardioformer_jax.main` runs of tests/integration/test_train.py.
    # With pytest-xdist (`-n`), the workers inherit the controller's environment and share
    # its cache; only the process that made the directory removes it.
    shared = os.environ.get(_SHARED_CACHE) if hasattr(config, "workerinput") else None
    cache = shared or tempfile.mkdtemp(prefix="cardioformer_jax_test_xla_cache_")
    os.environ[_SHARED_CACHE] = cache
    previous = {name: os.environ.get(name) for name in _CACHE_VARIABLES}
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    def restore() -> None:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not shared:
            os.environ.pop(_SHARED_CACHE, None)
            shutil.rmtree(cache, ignore_errors=True)

    config.add_cleanup(restore)


@pytest.fixture(scope="module")
def fast_compilation() -> Iterator[None]:
    """Most XLA optimisations off for the tests of one module
    (`run_fixtures.few_step_compilation`), for modules whose tests run each program they
    compile once or twice on tiny inputs, so that compiling, not running, is their cost:
    about half the compile time, the same assertions. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("fast_compilation")``.
    """
    from tests.helpers import run_fixtures

    with run_fixtures.few_step_compilation():
        yield


@pytest.fixture(scope="session")
def tiny_ptbxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic PTB-XL twin of 40 patients built once per session (ArrayRecord).

    Returns (manual_dir, data_dir); the "default" config has 310 train, 100 validation
    and 100 test examples of shape (250, 12). Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("tiny_ptbxl")
    manual_dir = synthetic.write_ptbxl_twin(root / "raw", TINY_PTBXL_PATIENTS, seed=0)
    data_dir = root / "tfds"
    datasets.build("ptbxl", manual_dir, data_dir, num_workers=0, progress=False)
    return manual_dir, data_dir
