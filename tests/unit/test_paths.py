"""URL workdirs (``gs://...``) stay URLs; local workdirs become absolute (`paths`).

GCS is not reachable here and nothing is mocked: what runs is the path handling up to the
point where a file system would be touched, and every local path through the same code.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from etils import epath

from cardioformer_jax.core import logging_utils, paths
from cardioformer_jax.training import checkpointing, train
from configs import demo


@pytest.mark.parametrize("url", ["gs://bucket/run", "gs://my-bucket/runs/ptbxl/seed_41",
                                 "s3://bucket/x"])
@pytest.mark.parametrize("kind", [str, epath.Path])
def test_urls_are_kept_exactly(url, kind):
    resolved = paths.resolve_path(kind(url))
    assert isinstance(resolved, epath.Path)
    assert str(resolved) == os.fspath(resolved) == url
    assert paths.is_url(resolved)
    # Joined the way train/checkpointing join them.
    assert os.fspath(resolved / checkpointing.CHECKPOINT_DIR) == f"{url}/checkpoints"
    assert paths.resolve_path(resolved) == resolved  # idempotent


def test_pathlib_would_mangle_what_resolve_path_keeps():
    # What the training program did before: the URL became a local path under the cwd.
    assert str(pathlib.Path("gs://bucket/run").absolute()) != "gs://bucket/run"
    assert str(epath.Path("gs://bucket/run").absolute()) != "gs://bucket/run"
    assert str(paths.resolve_path("gs://bucket/run")) == "gs://bucket/run"


@pytest.mark.parametrize("url", ["memory://x", "file:///tmp/x", "nosuch://bucket/run"])
def test_url_schemes_without_an_epath_backend_are_refused(url):
    # etils.epath (through which Orbax writes) has no in-memory or file:// backend; a clear
    # error beats a KeyError from inside Orbax.
    with pytest.raises(ValueError, match=url.split("://")[0] + "://"):
        paths.resolve_path(url)


@pytest.mark.parametrize("kind", [str, pathlib.Path, epath.Path])
def test_local_paths_become_absolute(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = paths.resolve_path(kind("runs/a"))
    assert isinstance(resolved, epath.Path)
    assert not paths.is_url(resolved)
    assert os.fspath(resolved) == os.path.join(os.fspath(tmp_path), "runs", "a")
    assert paths.resolve_path(kind(tmp_path)) == epath.Path(tmp_path)


@pytest.mark.parametrize("kind", [str, epath.Path])
def test_as_path_keeps_urls_and_local_paths_as_given(kind, tmp_path, monkeypatch):
    # What predict, evaluate and export read their --workdir / --out with.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", os.fspath(tmp_path))
    url = paths.as_path(kind("gs://bucket/run"))
    assert isinstance(url, epath.Path) and os.fspath(url / "config.json") == (
        "gs://bucket/run/config.json")
    assert os.fspath(paths.as_path(kind("runs/a"))) == "runs/a"  # relative stays relative
    assert os.fspath(paths.as_path(kind("~/runs"))) == os.path.join(os.fspath(tmp_path), "runs")
    with pytest.raises(ValueError, match="memory://"):
        paths.as_path("memory://x")  # (epath.Path cannot even hold one)


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", os.fspath(tmp_path))
    assert os.fspath(paths.resolve_path("~/runs")) == os.path.join(os.fspath(tmp_path), "runs")


@pytest.mark.parametrize("kind", [str, epath.Path])
def test_write_json_round_trip(kind, tmp_path):
    path = kind(os.path.join(os.fspath(tmp_path), "sub", "results.json"))
    logging_utils.write_json(path, {"f1": 0.5, "nan": float("nan")})
    assert json.loads(epath.Path(path).read_text()) == {"f1": 0.5, "nan": None}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["results.json"]


@pytest.mark.parametrize("kind", [str, epath.Path])
def test_checkpointer_accepts_str_and_epath_directories(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = kind("run/checkpoints")  # relative: made absolute
    with checkpointing.Checkpointer(directory, async_save=False) as ckpt:
        assert isinstance(ckpt.directory, epath.Path)
        assert os.fspath(ckpt.directory) == os.fspath(tmp_path / "run" / "checkpoints")
        ckpt.save(3, {"w": jax.numpy.asarray([1.0, 2.0])}, {"epoch": 1})
        assert ckpt.latest_step() == 3
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
    with checkpointing.Checkpointer(epath.Path(tmp_path) / "run" / "checkpoints") as ckpt:
        abstract = {"w": jax.ShapeDtypeStruct(
            (2,), np.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
        restored = ckpt.restore(3, abstract)
    np.testing.assert_array_equal(restored.state["w"], [1.0, 2.0])
    assert restored.meta == {"epoch": 1}


def test_read_only_checkpointer_reads_the_best_step_and_changes_nothing(tmp_path):
    # How inference opens a run, possibly one still training: no save, no clean-up.
    directory = tmp_path / "checkpoints"
    with checkpointing.Checkpointer(directory, async_save=False) as ckpt:
        for step, rank in ((2, 1), (4, -1)):
            ckpt.save(step, {"w": jax.numpy.full(2, float(step))}, {"epoch": step // 2},
                      best_epoch_rank=rank)
    (directory / "6.orbax-checkpoint-tmp-1").mkdir()  # a save in progress
    before = sorted(p.name for p in directory.iterdir())
    with checkpointing.Checkpointer(directory, read_only=True) as ckpt:
        assert ckpt.best_step() == 2 and ckpt.latest_step() == 4
        abstract = {"w": jax.ShapeDtypeStruct(
            (2,), np.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
        restored = ckpt.restore(ckpt.best_step(), abstract)
        with pytest.raises(ValueError, match="read-only"):
            ckpt.save(8, {"w": jax.numpy.zeros(2)}, {"epoch": 4})
    np.testing.assert_array_equal(restored.state["w"], [2.0, 2.0])
    assert restored.meta == {"epoch": 1}
    assert sorted(p.name for p in directory.iterdir()) == before


def test_check_run_config_reads_an_epath_run_dir(tmp_path):
    config = demo.get_config()
    run_dir = epath.Path(tmp_path)
    checkpointing.check_run_config(run_dir, config)
    saved = json.loads((tmp_path / checkpointing.CONFIG_FILE).read_text())
    assert saved["dataset"]["synthetic_patients"] == config.dataset.synthetic_patients
    (tmp_path / checkpointing.CHECKPOINT_DIR / "7").mkdir(parents=True)  # a saved step
    other = demo.get_config()
    other.model.d_model = 16
    with pytest.raises(ValueError, match="model.d_model: 32 in the checkpoint, 16 now"):
        checkpointing.check_run_config(os.fspath(run_dir), other)


def test_metric_writer_keeps_a_url_workdir(tmp_path):
    # enabled=False: another process of a multi-host run, which touches no file system.
    writer = logging_utils.MetricWriter("gs://bucket/run", enabled=False)
    assert os.fspath(writer.jsonl_path) == "gs://bucket/run/metrics.jsonl"
    assert writer.jsonl_mode == "rewrite"  # objects cannot be appended to
    writer.write_scalars(0, {"a": 1.0})
    writer.close()
    with pytest.raises(ValueError, match="cannot be appended"):
        logging_utils.MetricWriter("gs://bucket/run", enabled=False, jsonl_mode="append")
    assert logging_utils.MetricWriter(tmp_path, enabled=False).jsonl_mode == "append"


def test_synthetic_demo_with_a_url_workdir_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a mangled URL would have been written
    config = demo.get_config()
    config.dataset.synthetic_patients = 7
    with pytest.raises(ValueError, match="ArrayRecord files can only be written") as error:
        train.train_and_evaluate(config, "gs://bucket/demo")
    message = str(error.value)
    assert "--patients 7 --seed 41" in message
    assert "--manual_dir=/tmp/synthetic_ptbxl --data_dir=/tmp/synthetic_tfds" in message
    assert "gcloud storage cp --recursive /tmp/synthetic_tfds/ptbxl gs://bucket/demo/data/tfds/"\
        in message
    assert "--config.dataset.data_dir=gs://bucket/demo/data/tfds" in message
    assert not list(tmp_path.iterdir())  # nothing written anywhere


# ---- `~` and `$VAR` as the shell would have expanded them (it does not in --flag=~/x) ----


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ECG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ECG_DATA_NAME", "ptbxl")
    monkeypatch.delenv("ECG_NOT_SET", raising=False)
    return tmp_path


@pytest.mark.parametrize("typed, expected", [
    ("~/tensorflow_datasets", "home/tensorflow_datasets"),
    ("$ECG_DATA/tfds", "data/tfds"),
    ("${ECG_DATA}/runs/a", "data/runs/a"),
    ("$HOME/runs/$ECG_DATA_NAME", "home/runs/ptbxl"),
])
def test_local_paths_are_expanded(home, typed, expected):
    got = paths.expand_path(typed)
    assert got == f"{home}/{expected}"
    assert paths.resolve_path(typed) == epath.Path(got)
    assert os.fspath(paths.as_path(typed)) == got


@pytest.mark.parametrize("url", ["gs://bucket/~/x", "gs://bucket/$ECG_DATA/run",
                                 "s3://b/${ECG_NOT_SET}"])
def test_urls_are_never_expanded(home, url):
    assert paths.expand_path(url) == url
    assert os.fspath(paths.resolve_path(url)) == url


def test_an_unset_variable_is_an_error_naming_it_and_the_flag(home):
    with pytest.raises(ValueError, match=r"--data_dir '\$ECG_NOT_SET/x'.*\$ECG_NOT_SET not set"):
        paths.expand_path("$ECG_NOT_SET/x", "--data_dir")
    # A relative path without ~ or $ is left exactly as typed.
    assert paths.expand_path("runs/a") == "runs/a"


def test_path_flags_arrive_expanded(home):
    from absl import flags

    values = flags.FlagValues()
    data_dir = paths.DEFINE_path("data_dir", None, "d", flag_values=values)
    workdirs = paths.DEFINE_multi_path("workdir", None, "w", flag_values=values)
    values(["prog", "--data_dir=~/tfds", "--workdir=$ECG_DATA/a",
            "--workdir=gs://bucket/$ECG_DATA"])
    # Listed by --help under the module that defined them, not under paths.
    assert {f.name for f in values.get_flags_for_module(__name__)} == {"data_dir", "workdir"}
    assert data_dir.value == f"{home}/home/tfds"
    assert workdirs.value == [f"{home}/data/a", "gs://bucket/$ECG_DATA"]
    with pytest.raises(flags.IllegalFlagValueError, match=r"--data_dir=.*\$ECG_NOT_SET not set"):
        values(["prog", "--data_dir=$ECG_NOT_SET/tfds"])
