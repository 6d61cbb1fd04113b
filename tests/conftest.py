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
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                    "JAX_DISABLE_MOST_OPTIMIZATIONS")
_UNOPTIMIZED = "JAX_DISABLE_MOST_OPTIMIZATIONS"
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
    # its cache; only the process that made the directory removes it. A directory named in
    # that variable beforehand (CI shares one between its Python versions) is used as is.
    shared = os.environ.get(_SHARED_CACHE)
    cache = shared or tempfile.mkdtemp(prefix="cardioformer_jax_test_xla_cache_")
    os.environ[_SHARED_CACHE] = cache
    previous = {name: os.environ.get(name) for name in _CACHE_VARIABLES}
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # Compiling, not running, is what the tests' small programs cost on a CPU, and XLA's
    # optimisation passes are most of it: the session compiles without them (about a third
    # of the CPU time), in this process and in the commands it starts. Programs whose
    # optimised form is the point opt back in (`optimized_compilation`); the whole suite
    # runs optimised with JAX_DISABLE_MOST_OPTIMIZATIONS=false.
    os.environ.setdefault(_UNOPTIMIZED, "true")
    jax.config.update("jax_disable_most_optimizations", _unoptimized())

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


def _unoptimized() -> bool:
    return os.environ.get(_UNOPTIMIZED, "").lower() in ("1", "true")


@pytest.fixture(scope="module")
def optimized_compilation() -> Iterator[None]:
    """XLA's optimisation passes on for the tests of one module, in this process and in
    the commands it starts: for tests of what the optimised program is (the accelerator
    compilers' memory and collectives). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("optimized_compilation")``."""
    previous = os.environ.get(_UNOPTIMIZED)
    os.environ[_UNOPTIMIZED] = "false"
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_UNOPTIMIZED)
        else:
            os.environ[_UNOPTIMIZED] = previous
        jax.config.update("jax_disable_most_optimizations", _unoptimized())


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
