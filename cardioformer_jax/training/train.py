"""Training and evaluation of a config's seeds (docs/training.md): `train_and_evaluate`
picks the seeds, `loop.train_seeds` trains them and this module aggregates them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import logging

from cardioformer_jax import config_lib
from cardioformer_jax.core import logging_utils, metrics, paths
from cardioformer_jax.data import demo
from cardioformer_jax.training import loop

# The commands and the evaluation read these from here.
RESULTS_FILE = loop.RESULTS_FILE
TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT = loop.TRAIN_SPLIT, loop.VALIDATION_SPLIT, loop.TEST_SPLIT
DEFAULT_CACHE_DIR = "~/.cache/cardioformer_jax/xla"


def set_compilation_cache(path: str | None) -> None:
    """Turns on JAX's persistent compilation cache in `path` (None: $JAX_COMPILATION_CACHE_DIR,
    else `DEFAULT_CACHE_DIR`; '': off)."""
    if path is None:
        path = jax.config.jax_compilation_cache_dir or DEFAULT_CACHE_DIR
    if path:
        jax.config.update("jax_compilation_cache_dir", paths.expand_path(path))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       evaluate_fn: loop.EvaluateFn | None = None,
                       allow_config_change: Sequence[str] = (),
                       evaluate_splits: Sequence[str] = (VALIDATION_SPLIT, TEST_SPLIT),
                       on_epoch_end: loop.EpochEndFn | None = None) -> dict[str, Any]:
    """Validates `config`, prepares the data and runs (or resumes) every seed (several seeds:
    ``seed_<s>/`` folders, docs/training.md); returns ``results.json``. The other arguments:
    `loop.train_seeds` (with a callback the seeds train one after another)."""
    config_lib.validate_config(config)
    if config.seeds > 1 and TEST_SPLIT not in evaluate_splits:
        raise ValueError("evaluate_splits without the test split needs config.seeds == 1")
    workdir = paths.resolve_path(workdir)
    config = demo.prepare_synthetic_dataset(config, workdir)
    kwargs = dict(evaluate_fn=evaluate_fn, allow_config_change=allow_config_change,
                  evaluate_splits=evaluate_splits, on_epoch_end=on_epoch_end)
    if config.seeds == 1:
        return loop.train_seeds([(config, workdir)], **kwargs)[0]
    seeds = [config.seed + i for i in range(config.seeds)]
    runs = [(ml_collections.ConfigDict({**config.to_dict(), "seed": s, "seeds": 1}),
             workdir / f"seed_{s}") for s in seeds]
    if config.train.vectorize_seeds and evaluate_fn is None and on_epoch_end is None:
        logging.info("seeds %s trained together in one program", seeds)
        per_seed = dict(zip(seeds, loop.train_seeds(runs, **kwargs), strict=True))
    else:
        per_seed = {}
        for i, (seed, run) in enumerate(zip(seeds, runs, strict=True)):
            logging.info("seed %d (%d of %d)", seed, i + 1, len(seeds))
            (per_seed[seed],) = loop.train_seeds([run], **kwargs)
    tests = [r["test"] for r in per_seed.values()]
    if any(t is None for t in tests):
        raise RuntimeError("a seed finished without an evaluated epoch")
    aggregate = metrics.aggregate_seeds(tests)
    result = {
        "seeds": seeds,
        "test": aggregate,
        "test_formatted": {k: metrics.format_mean_std(v) for k, v in aggregate.items()
                           if k != "num_examples"},
        "per_seed": {str(s): r for s, r in per_seed.items()},
    }
    if jax.process_index() == 0:
        logging_utils.write_json(workdir / RESULTS_FILE, result)
        for name, text in result["test_formatted"].items():
            logging.info("test %s over %d seeds: %s", name, len(seeds), text)
        logging.info("%s", logging_utils.format_seeds_summary(
            seeds, result["test_formatted"], workdir / RESULTS_FILE))
    return result
