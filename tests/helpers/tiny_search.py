"""A search space for the tuner's tests: the learning rate only, so that every trial of the
tiny model (`train_fixtures.tiny_config`) shares its compiled programs (the learning rate is
an argument of them, not a constant) and a trial costs a few steps, not a compilation."""

from __future__ import annotations


def search_space(trial, config) -> None:
    config.train.learning_rate = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
