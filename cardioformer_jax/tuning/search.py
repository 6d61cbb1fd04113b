"""Search spaces: files defining ``search_space(trial, config) -> None`` (docs/tuning.md)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import optuna

from cardioformer_jax import config_lib, models

SearchSpace = Callable[[optuna.Trial, ml_collections.ConfigDict], None]
SEARCH_DIR = Path("configs") / "search"
# The clone's root, where configs/ lives next to the package (editable installs, tests).
_REPO = Path(__file__).resolve().parents[2]


def default_path(config: ml_collections.ConfigDict) -> Path:
    """``configs/search/<model_name>.py``, from the working directory or else the clone."""
    relative = SEARCH_DIR / f"{models.model_name(config)}.py"
    for path in (Path.cwd() / relative, _REPO / relative):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no search space {relative} for model_name="
                            f"{models.model_name(config)!r}; pass --search=FILE")


def load(path: str | os.PathLike) -> SearchSpace:
    """The ``search_space`` function of the file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space file {path} does not exist")
    function = getattr(import_file(path, "_search_space"), "search_space", None)
    if not callable(function):
        raise ValueError(f"{path} defines no search_space(trial, config) function")
    return function


def import_file(path: str | os.PathLike, prefix: str) -> Any:
    """The Python file at `path`, imported as module ``<prefix>_<stem>``."""
    spec = importlib.util.spec_from_file_location(f"{prefix}_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial_config(space: SearchSpace, trial: optuna.Trial | optuna.trial.FixedTrial,
                 base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A validated copy of `base` with `trial`'s values set by `space`."""
    config = ml_collections.ConfigDict(base.to_dict())
    space(trial, config)
    config_lib.validate_config(config)
    return config


def fixed_config(space: SearchSpace, params: Mapping[str, Any],
                 base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`trial_config` for given parameters (a finished trial's ``params``)."""
    return trial_config(space, optuna.trial.FixedTrial(dict(params)), base)
