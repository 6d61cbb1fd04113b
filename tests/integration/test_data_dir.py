"""The TFDS `data_dir` as an `etils.epath` path: builders write to it and the input
pipeline reads from it whether it is given as a string or an `epath.Path`, and a
``gs://`` URL reaches TFDS unchanged (GCS itself is not reachable here: the file system
is mocked for that one check; see launch/README.md for building datasets onto GCS)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from etils import epath

from cardioformer_jax.data import datasets, eval_input
from cardioformer_jax.data import input_pipeline as ip
from configs import ptbxl
from tfds_builders import common

VERSION = str(common.EcgBuilder.VERSION)


def _config(data_dir: str):
    config = ptbxl.get_config()
    config.dataset.data_dir = data_dir  # a config holds a string, as on the command line
    config.train.batch_size = 32
    config.train.eval_batch_size = 64
    config.dataset.num_threads = 1
    return config


@pytest.mark.parametrize("as_path", [str, epath.Path], ids=["str", "epath"])
def test_build_and_read_back(tiny_ptbxl, tmp_path, as_path):
    manual_dir, _ = tiny_ptbxl
    data_dir = as_path(os.fspath(tmp_path / "tfds"))
    builder = datasets.build("ptbxl", manual_dir, data_dir, num_workers=0, progress=False)
    assert builder.info.splits["train"].num_examples == 310

    built = datasets.dataset_dir("ptbxl", data_dir)
    assert isinstance(built, epath.Path)
    assert os.fspath(built) == os.fspath(tmp_path / "tfds" / "ptbxl" / "default" / VERSION)
    assert len(datasets.data_source("ptbxl", data_dir, "validation")) == 100

    config = _config(os.fspath(data_dir))
    train_input = ip.create_train_input(config, None)
    try:
        batch = next(train_input)
    finally:
        train_input.close()
    assert batch["signal"].shape == (32, 250, 12)
    seen = np.concatenate([b.host["index"][b.host["mask"] == 1]
                           for b in eval_input.eval_batches(config, "validation")])
    assert sorted(seen.tolist()) == list(range(100))


def test_gs_data_dir_reaches_tfds_unchanged(tiny_ptbxl):
    """`pathlib` would turn gs://bucket into gs:/bucket; epath keeps the URL."""
    local = os.fspath(tiny_ptbxl[1])
    url = "gs://my-bucket/tfds"

    def to_local(original, path, *args, **kwargs):
        return original(os.fspath(path).replace(url, local), *args, **kwargs)

    with epath.testing.mock_epath(exists=to_local, isdir=to_local, listdir=to_local,
                                  glob=to_local, stat=to_local):
        built = datasets.dataset_dir("ptbxl", url)
    assert os.fspath(built) == f"{url}/ptbxl/default/{VERSION}"
    assert ip.DataSpec.from_config(_config(url)).data_dir == url
    assert f"--data_dir={url}" in datasets.build_command("ptbxl", url, None)


def test_a_build_of_another_builder_version_is_not_reused(tiny_ptbxl, tmp_path):
    import shutil

    _, data_dir = tiny_ptbxl
    old = tmp_path / "ptbxl" / "default" / "1.0.0"
    shutil.copytree(datasets.dataset_dir("ptbxl", data_dir), old)
    with pytest.raises(FileNotFoundError, match="built by builder version 1.0.0; this code "
                                                f"prepares version {VERSION}") as error:
        datasets.dataset_dir("ptbxl", tmp_path)
    assert "python -m cardioformer_jax.build_dataset ptbxl" in str(error.value)


def test_the_build_command_names_the_builder_config(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets.dataset_dir("ptbxl", tmp_path, "superdiagnostic")
    command = str(error.value).splitlines()[-1].strip()
    assert command == (f"python -m cardioformer_jax.build_dataset ptbxl --manual_dir=<unpacked "
                       f"PhysioNet folder> --data_dir={tmp_path} --builder_config=superdiagnostic")
    # The default config needs no flag.
    assert "--builder_config" not in datasets.build_command("ptbxl", tmp_path, "default")


def test_tilde_and_variables_in_data_dir_are_expanded_and_errors_say_where(
        tmp_path, monkeypatch):
    # The README's --data_dir=~/tensorflow_datasets reaches us unexpanded (the shell does
    # not expand ~ after `=`), as does a config's "~/tensorflow_datasets".
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ECG_TFDS", str(tmp_path / "tfds"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        datasets.dataset_dir("ptbxl", "~/tensorflow_datasets")
    message = str(error.value)
    assert f"not built under {tmp_path}/home/tensorflow_datasets." in message
    assert f"--data_dir={tmp_path}/home/tensorflow_datasets" in message
    with pytest.raises(FileNotFoundError, match=f"under {tmp_path}/tfds/sub"):
        datasets.dataset_dir("ptbxl", "${ECG_TFDS}/sub")
    # A relative data_dir is shown absolute too: the error says exactly where it looked.
    with pytest.raises(FileNotFoundError, match=f"under {tmp_path}/rel"):
        datasets.dataset_dir("ptbxl", "rel")
    assert ip.DataSpec.from_config(_config("$ECG_TFDS")).data_dir == f"{tmp_path}/tfds"
    assert ip.DataSpec.from_config(_config("gs://b/$ECG_TFDS")).data_dir == "gs://b/$ECG_TFDS"
    assert not (tmp_path / "~").exists()


def test_a_build_logged_to_a_file_shows_plain_progress_lines(tiny_ptbxl, tmp_path, capfd):
    # stderr is a file here (capfd), as in a batch job's log: no tqdm redraws (\r), from
    # our loop or TFDS's, but a plain progress line per split.
    manual_dir, _ = tiny_ptbxl
    datasets.build("ptbxl", manual_dir, tmp_path / "tfds", num_workers=0, progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    for split in ("train", "validation", "test"):
        lines = [line for line in err.splitlines()
                 if line.startswith(f"building ptbxl/default {split}: ")]
        assert lines, err[-2000:]
        assert re.fullmatch(rf"building ptbxl/default {split}: (\d+)/\1 records \(100%\), "
                            r"\d+s", lines[-1]), lines
