"""Checks of the training loop that need no data and no training: the config's validation
and the non-finite policy. The loop itself: tests/integration/test_train.py."""

from __future__ import annotations

import numpy as np
import pytest

from cardioformer_jax import config_lib
from cardioformer_jax.training import loop
from tests.helpers import train_fixtures


def test_config_validation_rejects_bad_values():
    config = train_fixtures.tiny_config()
    config.train.nan_policy = "ignore"
    config.train.batch_size = 0
    with pytest.raises(ValueError, match="nan_policy='ignore'.*|batch_size=0"):
        config_lib.validate_config(config)


def test_stop_policy_also_stops_on_nonfinite_gradients_with_a_finite_loss():
    values = {"loss": np.array([0.7, 0.6, 0.5]), "grad_norm": np.array([1.0, np.inf, 2.0])}
    with pytest.raises(FloatingPointError, match=r"gradient norm \(inf\) at step 12 "):
        loop.check_finite(values, first_step=10, epoch=3, policy="stop")
    loop.check_finite(values, first_step=10, epoch=3, policy="skip")  # counted, no raise
    nan_loss = {"loss": np.array([0.7, np.nan]), "grad_norm": np.array([1.0, np.nan])}
    with pytest.raises(FloatingPointError, match=r"training loss \(nan\) at step 2 "):
        loop.check_finite(nan_loss, first_step=0, epoch=1, policy="stop")
    clean = {"loss": np.array([0.7]), "grad_norm": np.array([1.0])}
    loop.check_finite(clean, first_step=0, epoch=1, policy="stop")


def test_a_saved_config_this_version_cannot_run_is_refused_by_name(tmp_path):
    # e.g. a run written before `model.rng_impl` became `model.kernels`.
    import json

    from cardioformer_jax.evaluation import inference
    from cardioformer_jax.training import checkpointing

    config = train_fixtures.tiny_config()
    saved = json.loads(config.to_json_best_effort())
    (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(saved))
    assert json.loads(inference.read_config(tmp_path).to_json_best_effort()) == saved
    saved["model"]["rng_impl"] = "hash"
    (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"config.json is not a config this version can "
                                         r"run.*unknown config key 'model.rng_impl'"):
        inference.read_config(tmp_path)


def test_the_input_sizes_are_outside_the_model_section():
    from cardioformer_jax import models

    config = train_fixtures.tiny_config()
    assert not {"seq_len", "num_channels", "num_classes"} & set(config.model)
    spec = models.network_config(config)
    assert (spec.seq_len, spec.num_channels, spec.num_classes) == (
        config.input.seq_len, config.input.num_channels, config.dataset.num_classes)
    with pytest.raises(ValueError, match="set config.input.seq_len"):
        config_lib.model_section(seq_len=500)
    config.model.unlock()
    config.model.num_classes = 3  # a config written in the earlier layout
    with pytest.raises(ValueError, match="config key 'model.num_classes' is now "
                                         "'dataset.num_classes'"):
        config_lib.validate_config(config)
    assert config_lib.moved_override_problems(
        ["--config=configs/ptbxl.py", "--config.model.seq_len=500", "--config.seq_len=1",
         "--config.input.seq_len=500"]) == [
        "--config.model.seq_len is now --config.input.seq_len (the input sizes are outside "
        "the network's section)"]


def test_a_saved_config_of_the_earlier_layout_is_migrated():
    import json

    config = train_fixtures.tiny_config()
    saved = json.loads(config.to_json_best_effort())
    old = json.loads(json.dumps(saved))
    old["model"]["seq_len"] = old["input"].pop("seq_len")
    old["model"]["num_channels"] = old["input"].pop("num_channels")
    old["model"]["num_classes"] = old["dataset"].pop("num_classes")
    before = json.dumps(old)
    assert json.loads(config_lib.with_defaults(old).to_json_best_effort()) == saved
    assert json.dumps(old) == before  # the saved dict is left as it was
    old["input"]["seq_len"] = 500  # both places, disagreeing: which one held is unknown
    with pytest.raises(ValueError, match="model.seq_len=250 and input.seq_len=500"):
        config_lib.with_defaults(old)


def test_docs_show_the_config_fields_as_declared():
    from pathlib import Path

    docs = Path(__file__).parents[2] / "docs" / "training.md"
    assert config_lib.fields_table() in docs.read_text()
