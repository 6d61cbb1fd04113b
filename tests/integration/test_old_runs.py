"""A run written before the input sizes left the `model` section still works.

Its ``config.json`` has ``model.seq_len``, ``model.num_channels`` and ``model.num_classes``
(now ``input.seq_len``, ``input.num_channels``, ``dataset.num_classes``). The run is a real
tiny training run; its copy with the saved config rewritten in the earlier layout must
read as the same config, evaluate, predict, export and ensemble exactly like the run
itself, and resume to the same parameters, a resume counting no moved field as a change.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from cardioformer_jax.data import datasets
from cardioformer_jax.evaluation import ensemble, export, inference, predictions, report
from cardioformer_jax.training import checkpointing, train
from tests.helpers import run_fixtures, train_fixtures

# The module fixture trains a run first: slow lane.
pytestmark = pytest.mark.slow

# Where the input sizes were saved before they moved: (section, key) now -> key of `model`.
PRE_MOVE = {("input", "seq_len"): "seq_len", ("input", "num_channels"): "num_channels",
            ("dataset", "num_classes"): "num_classes"}


def _pre_move_layout(saved: dict) -> dict:
    """A ``config.json`` dict as a version before the move wrote it."""
    saved = json.loads(json.dumps(saved))
    for (section, key), old in PRE_MOVE.items():
        saved["model"][old] = saved[section].pop(key)
    return saved


def _config(data_dir, num_epochs: int = 1):
    config = run_fixtures.tiny_training(train_fixtures.tiny_config(), data_dir)
    config.train.num_epochs = num_epochs
    return config


@pytest.fixture(scope="module")
def runs(tiny_ptbxl, tmp_path_factory):
    """(run, pre-move copy of it): one epoch of two steps each."""
    root = tmp_path_factory.mktemp("old_runs")
    new = root / "new"
    train.train_and_evaluate(_config(tiny_ptbxl[1]), new)
    old = root / "old"
    shutil.copytree(new, old)
    path = old / checkpointing.CONFIG_FILE
    saved = json.loads(path.read_text())
    assert saved["input"]["seq_len"] == 250 and saved["dataset"]["num_classes"] == 5
    path.write_text(json.dumps(_pre_move_layout(saved)))
    assert "seq_len" in json.loads(path.read_text())["model"]
    return new, old


def test_pre_move_config_reads_as_the_config_now(runs, tiny_ptbxl):
    new, old = runs
    config = inference.read_config(old)
    assert config.to_dict() == inference.read_config(new).to_dict()
    assert (config.input.seq_len, config.input.num_channels,
            config.dataset.num_classes) == (250, 12, 5)
    assert "seq_len" not in config.model
    # A resume of it with the same config changes nothing (no "config changed" error).
    copy = old.parent / "old_check"
    shutil.copytree(old, copy)
    assert checkpointing.check_run_config(copy, _config(tiny_ptbxl[1])) == []
    # ... and another input size is refused, naming the field where it is now.
    changed = _config(tiny_ptbxl[1])
    changed.input.seq_len = 500
    with pytest.raises(checkpointing.ResumeConfigError,
                       match=r"input.seq_len: 250 in the checkpoint, 500 now"):
        checkpointing.check_run_config(old, changed)


def test_pre_move_run_evaluates_predicts_and_exports_like_the_run(runs, tiny_ptbxl,
                                                                 tmp_path, capsys):
    new, old = runs
    loaded = inference.load(old)
    for got, want in zip(jax.tree.leaves(loaded.params),
                         jax.tree.leaves(inference.load(new).params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert loaded.input_shape == (250, 12) and loaded.num_classes == 5

    results = {}
    for name, run in (("new", new), ("old", old)):
        assert report.run_cli(run, bootstrap_resamples=20) == 0
        evaluation = json.loads((run / "evaluation.json").read_text())
        for key in ("workdir", "run_dir"):
            evaluation.pop(key)
        results[name] = evaluation
    assert results["old"] == results["new"]

    record_id = datasets.data_source("ptbxl", tiny_ptbxl[1], "test")[0]["record_id"].decode()
    record = os.fspath(tiny_ptbxl[0] / record_id)
    outputs = {}
    for name, workdirs in (("new", new), ("old", old), ("ensemble", [old, new])):
        capsys.readouterr()
        assert predictions.run_cli(workdirs, [record], as_json=True) == 0
        out = json.loads(capsys.readouterr().out)
        out.pop("run_dir", None)
        out.pop("run_dirs", None)
        outputs[name] = out["records"]
    assert outputs["old"] == outputs["new"]
    assert outputs["old"][0]["ok"]
    assert ensemble.run_cli([os.fspath(old), os.fspath(new)], os.fspath(tmp_path / "ens"),
                            "test", bootstrap_resamples=20) == 0

    metas, exported = {}, {}
    for name, run in (("new", new), ("old", old)):
        out = tmp_path / name / "model.jax_exported"
        assert export.run_cli(run, out) == 0
        exported[name], metas[name] = export.load(out)
        metas[name]["source"].pop("run_dir")
    assert metas["old"] == metas["new"]
    source = datasets.data_source("ptbxl", tiny_ptbxl[1], "test")
    samples = np.stack([source[i]["signal"] for i in range(4)]).astype(np.float32)
    np.testing.assert_array_equal(export.run(exported["old"], samples),
                                  export.run(exported["new"], samples))


def test_pre_move_run_resumes_like_the_run(runs, tiny_ptbxl, tmp_path):
    new, old = runs
    results = {}
    for name, run in (("new", new), ("old", old)):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        results[name] = train.train_and_evaluate(_config(tiny_ptbxl[1], num_epochs=2), copy)
        assert results[name]["epochs_completed"] == 2
        history = checkpointing.config_history(copy)
        assert history[-1]["resumed"] and history[-1]["changed"] == ["train.num_epochs"]
        saved = json.loads((copy / checkpointing.CONFIG_FILE).read_text())
        assert "seq_len" not in saved["model"] and saved["input"]["seq_len"] == 250
    models = {name: inference.load(tmp_path / name) for name in results}
    for got, want in zip(jax.tree.leaves(models["old"].params),
                         jax.tree.leaves(models["new"].params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for key in ("test", "best_epoch", "best_step"):
        assert results["old"][key] == results["new"][key]
