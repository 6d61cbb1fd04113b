"""The tuner's search spaces (configs/search/) and its output files, without training:
every sampled trial config validates; best_config.py reproduces the tuned config. The
tuner end to end (workers, pruning, retries): tests/integration/test_tune.py."""

from __future__ import annotations

import importlib

import ml_collections
import optuna
import pytest

from cardioformer_jax import config_lib, models
from cardioformer_jax.tuning import report, search, study
from tests.helpers import REPO

SEARCH = REPO / "configs" / "search"
# Base configs of each architecture: 250-, 300- and 1000-sample inputs, single/multi-label.
CARDIOFORMER_BASES = [("ptbxl", ""), ("ptb", ""), ("mimic_iv_ecg", ""),
                      ("ptbxl_benchmark", "superdiagnostic"), ("demo", "")]
RESNET_BASES = [("resnet1d", ""), ("resnet1d", "ptb"), ("ptbxl_benchmark", "rhythm,resnet")]


def _base(name: str, argument: str) -> ml_collections.ConfigDict:
    module = importlib.import_module(f"configs.{name}")
    return module.get_config(argument) if argument else module.get_config()


def _sampled(base: ml_collections.ConfigDict, n: int = 40):
    """`n` trial configs of the default search space, sampled at random (every corner)."""
    space = search.load(search.default_path(base))
    trials = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                 direction="maximize")
    for _ in range(n):
        trial = trials.ask()
        config = search.trial_config(space, trial, base)  # validates
        trials.tell(trial, 0.0)
        yield trial, config


@pytest.mark.parametrize("name,argument", CARDIOFORMER_BASES)
def test_cardioformer_space_samples_valid_configs(name, argument):
    base = _base(name, argument)
    assert search.default_path(base) == SEARCH / "cardioformer.py"
    seen = set()
    for trial, config in _sampled(base):
        model = models.network_config(config)
        assert model.d_model % model.n_heads == 0
        assert model.d_ff == 2 * model.d_model
        assert max(model.patch_lens) <= model.seq_len
        assert dict(model.augmentations) == {
            k: pytest.approx(trial.params[k]) for k in ("jitter", "scale", "drop")}
        assert config.train.learning_rate == trial.params["learning_rate"]
        assert config.model.dropout == trial.params["dropout"]
        # Only the searched fields move: data, protocol and input contract stay.
        assert config.dataset.to_dict() == base.dataset.to_dict()
        assert config.train.num_epochs == base.train.num_epochs
        assert config.input.to_dict() == base.input.to_dict()
        seen.add(trial.params["patch_lens"])
    assert len(seen) > 1


def test_patch_lists_scale_with_the_input():
    from configs.search import cardioformer

    assert cardioformer.patch_lists(250)["paper16"] == config_lib.PATCH_LENS_16
    assert max(cardioformer.patch_lists(1000)["paper16"]) == 128
    assert set(cardioformer.patch_lists(20)) == set()  # nothing fits: no invalid choice


@pytest.mark.parametrize("name,argument", RESNET_BASES)
def test_resnet_space_samples_valid_configs(name, argument):
    base = _base(name, argument)
    assert search.default_path(base) == SEARCH / "resnet1d.py"
    widths = set()
    for trial, config in _sampled(base):
        assert config.resnet.dropout == trial.params["dropout"]
        assert config.resnet.kernel_size == trial.params["kernel_size"]
        assert config.model.to_dict() == base.model.to_dict()  # Cardioformer's: unused
        widths.add(tuple(config.resnet.widths))
    assert len(widths) > 1


def test_a_file_without_search_space_is_refused(tmp_path):
    path = tmp_path / "space.py"
    path.write_text("def other(trial, config):\n    pass\n")
    with pytest.raises(ValueError, match="defines no search_space"):
        search.load(path)
    with pytest.raises(FileNotFoundError):
        search.load(tmp_path / "missing.py")


def test_best_config_file_reproduces_the_tuned_config(tmp_path):
    base = _base("ptbxl", "")
    base.seeds = 5  # kept: the final run of the tuned config is the full protocol
    space = search.load(SEARCH / "cardioformer.py")
    trial, _ = next(_sampled(base, 1))
    config = search.fixed_config(space, trial.params, base)
    path = tmp_path / report.BEST_CONFIG
    path.write_text(report.best_config_source(config, "header\n"))
    loaded = report.load_config_file(path)
    config_lib.validate_config(loaded)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.seeds == 5 and loaded.model.patch_lens == config.model.patch_lens


def test_settings_and_storage_url(tmp_path):
    assert study.storage_url(tmp_path, None) == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert study.storage_url(tmp_path, "postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    assert report.public_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(ValueError, match="grace_period"):
        study.Settings(trials=2, heartbeat_interval=10, grace_period=5)
    with pytest.raises(ValueError, match="trials=0"):
        study.Settings(trials=0)
    # Concurrent workers' samplers differ; one worker's is reproducible.
    a, b = (study.make_sampler(study.Settings(trials=1, worker=w)) for w in (0, 1))
    first = [optuna.create_study(sampler=s).ask().suggest_float("x", 0, 1) for s in (a, b)]
    again = optuna.create_study(sampler=study.make_sampler(study.Settings(trials=1)))
    assert first[0] != first[1] and again.ask().suggest_float("x", 0, 1) == first[0]
