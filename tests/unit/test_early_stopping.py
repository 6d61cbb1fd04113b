"""Tests for cardioformer_jax.training.early_stopping."""

import json
import math

import numpy as np
import orbax.checkpoint as ocp
import pytest

from cardioformer_jax.training.early_stopping import EarlyStopping


def _run(metrics, **kwargs):
    """Feeds a scripted metric sequence; returns (stop epoch or None, best flags, state)."""
    state = EarlyStopping(**kwargs)
    flags = []
    for epoch, metric in enumerate(metrics):
        state, is_best = state.update(metric, epoch)
        flags.append(is_best)
        if state.should_stop:
            return epoch, flags, state
    return None, flags, state


def test_defaults_follow_the_paper_protocol():
    state = EarlyStopping()
    assert state.patience == 10
    assert state.min_delta == 1e-5
    assert state.higher_is_better
    assert state.best_metric == -math.inf and state.best_epoch == -1


def test_stops_after_patience_non_improving_epochs():
    # 0.2 + 5e-6 does not exceed 0.2 by min_delta=1e-5, so epochs 2, 3, 4 are "bad".
    seq = [0.1, 0.2, 0.2 + 5e-6, 0.19, 0.2, 0.9, 0.9]
    stop, flags, state = _run(seq, patience=3)
    assert stop == 4
    assert flags == [True, True, False, False, False]
    assert state.best_epoch == 1
    assert state.best_metric == pytest.approx(0.2)
    assert state.num_bad_epochs == 3


def test_min_delta_respected_and_counter_resets():
    seq = [0.5, 0.5 + 2e-5, 0.5 + 2.5e-5, 0.6, 0.6, 0.6]
    stop, flags, state = _run(seq, patience=2)
    # +2e-5 exceeds 1e-5 (improvement); the following +5e-6 does not.
    assert flags == [True, True, False, True, False, False]
    assert stop == 5
    assert state.best_epoch == 3


def test_min_delta_zero_needs_strict_improvement():
    stop, flags, _ = _run([0.3, 0.3, 0.3], patience=2, min_delta=0.0)
    assert flags == [True, False, False] and stop == 2


def test_no_stop_while_improving():
    stop, flags, state = _run(np.linspace(0.1, 0.9, 30), patience=3)
    assert stop is None and all(flags) and state.best_epoch == 29


def test_nan_is_not_an_improvement():
    stop, flags, _ = _run([0.4, float("nan"), float("nan")], patience=2)
    assert flags == [True, False, False] and stop == 2


def test_lower_is_better():
    stop, flags, state = _run([1.0, 0.8, 0.8 - 5e-6, 0.9], patience=2, higher_is_better=False)
    assert flags == [True, True, False, False] and stop == 3
    assert state.best_metric == pytest.approx(0.8)


def test_state_is_immutable_and_stop_is_sticky():
    state = EarlyStopping(patience=1)
    s1, _ = state.update(0.5, 0)
    assert state.best_epoch == -1  # original unchanged
    s2, _ = s1.update(0.4, 1)
    assert s2.should_stop
    s3, is_best = s2.update(0.9, 2)
    assert is_best and s3.should_stop
    with pytest.raises(AttributeError):
        s3.patience = 5


def test_invalid_arguments():
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(min_delta=-1.0)


def test_dict_round_trip_including_json_and_numpy_values():
    _, _, state = _run([0.1, 0.3, 0.2], patience=5)
    d = state.to_dict()
    assert all(type(v) in (int, float) for v in d.values())
    assert EarlyStopping.from_dict(d) == state
    assert EarlyStopping.from_dict(json.loads(json.dumps(d))) == state
    assert EarlyStopping.from_dict({k: np.asarray(v) for k, v in d.items()}) == state
    fresh = EarlyStopping()
    assert EarlyStopping.from_dict(fresh.to_dict()) == fresh  # -inf survives


def test_orbax_checkpoint_round_trip(tmp_path):
    _, _, state = _run([0.1, 0.3, 0.2, 0.25], patience=3)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "es", state.to_dict())
        ckptr.wait_until_finished()
        restored = ckptr.restore(tmp_path / "es")
    assert EarlyStopping.from_dict(restored) == state
