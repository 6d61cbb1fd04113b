"""predict, evaluate and export on a ``gs://`` run folder give what they give locally.

The run is a tiny PTB-XL model saved by the training code's epoch-end path
(`run_fixtures.save_epoch_end_run`) for the session's synthetic PTB-XL build, copied into a
bucket of `tests.helpers.fake_gcs`: a local directory behind fsspec's ``gs://`` protocol
(etils.epath's backend) and behind a local GCS JSON API for TensorStore (Orbax's array
reads). The commands' libraries, epath, Orbax, TensorStore and JAX run unmocked on the URL.
Each test runs in an empty working directory and checks that it stays empty: a URL that
`pathlib` turned into a relative path (``gs:/bucket/...``) would land there.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from etils import epath

from cardioformer_jax.data import datasets
from cardioformer_jax.evaluation import export, inference, predictions, report
from tests.helpers import fake_gcs, run_fixtures, train_fixtures

URL = "gs://bucket/runs/ptbxl"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    with fake_gcs.fake_gcs(tmp_path_factory.mktemp("gcs")) as fake:
        yield fake


@pytest.fixture(scope="module")
def local_run(tiny_ptbxl, tmp_path_factory) -> pathlib.Path:
    config = train_fixtures.tiny_config(tiny_ptbxl[1])
    return run_fixtures.save_epoch_end_run(config, tmp_path_factory.mktemp("local_run"))


@pytest.fixture(scope="module")
def url_run(bucket, local_run) -> str:
    """`local_run` as saved, at `URL` (copied before any test writes a report into it)."""
    shutil.copytree(local_run, bucket.root / "bucket" / "runs" / "ptbxl")
    return URL


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert list(tmp_path.iterdir()) == [], "a URL was written as a local path"


@pytest.fixture(scope="module")
def test_record(tiny_ptbxl) -> str:
    """A raw record of the test split (its WFDB files stay local)."""
    manual_dir, data_dir = tiny_ptbxl
    record_id = datasets.data_source("ptbxl", data_dir, "test")[0]["record_id"].decode()
    return os.fspath(manual_dir / record_id)


def test_run_folder_found_and_loaded_from_the_url(url_run, local_run, bucket, empty_cwd):
    run_dir = inference.resolve_run_dir(url_run)
    assert isinstance(run_dir, epath.Path) and os.fspath(run_dir) == URL
    assert (inference.read_config(url_run).to_dict()
            == inference.read_config(local_run).to_dict())
    bucket.requests.clear()
    model = inference.load(url_run)
    # The checkpoint's arrays came through TensorStore's GCS client.
    assert any("/storage/v1/b/bucket/o/runs%2Fptbxl%2Fcheckpoints%2F" in r
               for r in bucket.requests)
    local = inference.load(local_run)
    assert os.fspath(model.run_dir) == URL and model.step == local.step
    for got, want in zip(jax.tree.leaves(model.params), jax.tree.leaves(local.params),
                         strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_seed_runs_listed_and_chosen_by_validation_f1(url_run, bucket, empty_cwd):
    workdir = bucket.root / "bucket" / "seeds"
    for seed, f1 in ((41, 0.5), (42, 0.7)):
        shutil.copytree(bucket.root / "bucket" / "runs" / "ptbxl", workdir / f"seed_{seed}")
        (workdir / f"seed_{seed}" / "results.json").write_text(
            json.dumps({"validation": {"f1": f1}}))
    seeds = inference.seed_run_dirs("gs://bucket/seeds")
    assert {s: os.fspath(p) for s, p in seeds.items()} == {
        41: "gs://bucket/seeds/seed_41", 42: "gs://bucket/seeds/seed_42"}
    assert os.fspath(inference.resolve_run_dir("gs://bucket/seeds")) == "gs://bucket/seeds/seed_42"
    assert os.fspath(inference.resolve_run_dir(epath.Path("gs://bucket/seeds"), seed=41)) == (
        "gs://bucket/seeds/seed_41")


def test_predict(url_run, local_run, test_record, capsys, empty_cwd):
    assert predictions.run_cli(local_run, [test_record], as_json=True) == 0
    local = json.loads(capsys.readouterr().out)
    assert predictions.run_cli(url_run, [test_record], as_json=True) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote.pop("run_dir") == URL and local.pop("run_dir") == os.fspath(local_run)
    assert remote == local and remote["records"][0]["ok"]


def test_export_from_and_to_urls(url_run, local_run, bucket, tiny_ptbxl, capsys, empty_cwd,
                                 tmp_path_factory):
    local_out = tmp_path_factory.mktemp("export") / "model.jax_exported"
    assert export.run_cli(local_run, local_out) == 0
    remote_out = "gs://bucket/serving/model.jax_exported"
    assert export.run_cli(url_run, remote_out) == 0
    assert f"wrote {remote_out} (" in capsys.readouterr().out
    files = bucket.root / "bucket" / "serving"
    assert sorted(p.name for p in files.iterdir()) == ["model.jax_exported", "model.json"]

    exported, meta = export.load(remote_out)
    local_exported, local_meta = export.load(local_out)
    assert meta["source"].pop("run_dir") == URL
    local_meta["source"].pop("run_dir")
    assert meta == local_meta
    source = datasets.data_source("ptbxl", tiny_ptbxl[1], "test")
    samples = np.stack([source[i]["signal"] for i in range(4)]).astype(np.float32)
    np.testing.assert_array_equal(export.run(exported, samples),
                                  export.run(local_exported, samples))


def test_evaluate_writes_the_report_to_the_url(url_run, local_run, bucket, capsys, empty_cwd):
    assert report.run_cli(url_run) == 0
    assert capsys.readouterr().out.startswith(f"{URL}/report.md: test AUROC")
    assert report.run_cli(local_run) == 0
    remote_dir = bucket.root / "bucket" / "runs" / "ptbxl"
    remote = json.loads((remote_dir / "evaluation.json").read_text())
    local = json.loads((local_run / "evaluation.json").read_text())
    assert (remote.pop("workdir"), remote.pop("run_dir")) == (URL, URL)
    for key in ("workdir", "run_dir"):
        local.pop(key)
    assert remote == local
    text = (remote_dir / "report.md").read_text()
    assert f"# Evaluation of `{URL}` (test split)" in text
    assert text.replace(URL, "RUN") == (local_run / "report.md").read_text().replace(
        os.fspath(local_run), "RUN")
    for name in ("roc", "pr", "confusion", "reliability"):
        png = remote_dir / "plots" / f"test_{name}.png"
        assert f"](plots/test_{name}.png)" in text
        assert png.read_bytes() == (local_run / "plots" / f"test_{name}.png").read_bytes()
