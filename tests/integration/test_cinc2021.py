"""The cinc2021 builder end to end: real Challenge records (tests/fixtures/cinc2021) in nested
folders plus variants with the 2020 release's quirks and broken ones; real TFDS building.
The reader and the label rules alone: `tests/unit/test_challenge_format.py`."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cardioformer_jax.data import challenge_format as cf
from cardioformer_jax.data import datasets
from cardioformer_jax.data import preprocessing as pp
from tests.helpers import REPO
from tests.helpers import challenge_fixtures as cx
from tfds_builders import labels, splits

SPLIT_NAMES = ("train", "validation", "test")
NORM, MI, STTC, CD, HYP = range(5)

# Real records: folder -> names, and each one's superclasses (-1 label when not one).
REAL = {
    "training/georgia/g1": ("E07500", "E07502", "E07504", "E07509", "E07514", "E07519"),
    "training/ptb-xl/g1": ("HR06000", "HR06002", "HR06004"),
    "training/ningbo/g1": ("JS20000", "JS20004", "JS20005", "JS20014"),
}
SUPERCLASSES = {
    "E07500": {HYP}, "E07502": {NORM}, "E07504": {STTC}, "E07509": {CD}, "E07514": {STTC},
    "E07519": {HYP}, "HR06000": {STTC}, "HR06002": {CD}, "HR06004": {NORM},
    "JS20000": {CD, STTC}, "JS20005": {HYP}, "JS20014": {CD, STTC, HYP},
    # Made here (`_write_quirks`).
    "Q0001": {NORM}, "A0001": {STTC}, "A0002": {CD}, "Q0002": {STTC}, "S0001": {NORM},
    "I0002": {HYP}, "E90001": {HYP}, "Q0006": {CD},
}
SOURCES = {"E": "Georgia", "H": "PTB-XL", "J": "Ningbo", "Q": "CPSC-extra", "A": "CPSC",
           "S": "PTB", "I": "INCART"}
# Records every config skips, by reason (JS20004: a real record with three zero leads).
SKIPPED = {"JS20004": "flat_lead", "I0001": "implausible_amplitude", "Q0003": "truncated",
           "Q0004": "missing_file", "Q0005": "nan_lead", "Q0007": "bad_header",
           "Q0008": "too_short", "Q0009": "lead_mismatch", "Q0010": "no_dx",
           "E07500@copy": "duplicate_record"}
# Windows per record in each config (1 s at 250 Hz; 10 s at 100 / 500 Hz).
WINDOWS = {"default": collections.defaultdict(lambda: 10, S0001=5, I0002=19, E90001=25),
           "records_100hz": collections.defaultdict(lambda: 1, E90001=2),
           "records_500hz": collections.defaultdict(lambda: 1, E90001=2)}


def _write_quirks(root: Path) -> None:
    q = root / "quirks"
    # (a) 2020 record line: file name with extension, date before time, non-WFDB date.
    cx.write_record(q / "cpsc_2018", "Q0001", cx.real_val("E07502"),
                    comments=cx.real_comments("E07502"),
                    record_line="Q0001.mat 12 500 5000 05-May-2020 14:50:55")
    # (b) bogus gains on some leads, data at 1000/mV: read correctly scaled, counted.
    gains = [1000.0] * 6 + [4880.0] * 6
    cx.write_record(q / "a", "A0001", cx.real_val("E07504"), gains=gains,
                    comments=cx.real_comments("E07504"))
    cx.write_record(q / "a", "A0002", cx.real_val("E07509"), gains=2000000.0,
                    comments=cx.real_comments("E07509"))
    # An unknown gain giving an implausible amplitude: skipped, never guessed.
    cx.write_record(q, "I0001", cx.real_val("E07509"), gains=1e6)
    # (c) CPSC 2018 names and a table abbreviation in # Dx, plus a token nobody knows.
    cx.write_record(q, "Q0002", cx.real_val("E07514"),
                    comments=["# Age: 61", "# Sex: Male", "# Dx: AF,STD,XYZ,LAD"])
    # Broken: truncated .mat, missing .mat, NaN lead.
    path = cx.write_record(q, "Q0003", cx.real_val("E07519"))
    path.with_suffix(".mat").write_bytes(path.with_suffix(".mat").read_bytes()[:5000])
    cx.write_record(q, "Q0004", cx.real_val("E07519")).with_suffix(".mat").unlink()
    nan = cx.real_val("E07519").astype(np.float64)
    nan[2, 10:20] = np.nan
    cx.write_record(q, "Q0005", nan)
    # Other rates and lengths: PTB's 1000 Hz (5 s), INCART's 257 Hz, a 25 s record.
    cx.write_record(q / "ptb", "S0001", cx.real_val("HR06004"), fs=1000,
                    comments=cx.real_comments("HR06004"))
    cx.write_record(q / "incart", "I0002", cx.real_val("E07519"), fs=257,
                    comments=cx.real_comments("E07519"))
    long = np.tile(cx.real_val("E07500"), (1, 3))[:, :12500]
    cx.write_record(q / "g2", "E90001", long, comments=cx.real_comments("E07500"))
    # Leads in another order, names in other cases.
    order = [6, 0, 1, 2, 11, 3, 4, 5, 7, 8, 10, 9]
    cx.write_record(q, "Q0006", cx.real_val("HR06002")[order],
                    leads=[cx.LEADS[i].swapcase() for i in order],
                    comments=cx.real_comments("HR06002"))
    path = cx.write_record(q, "Q0007", cx.real_val("E07500"))
    path.with_suffix(".hea").write_text("Q0007 twelve 500 5000\n")
    cx.write_record(q, "Q0008", cx.real_val("E07500")[:, :200])  # 0.4 s
    cx.write_record(q, "Q0009", cx.real_val("E07500")[:11], leads=cx.LEADS[:11])
    cx.write_record(q, "Q0010", cx.real_val("E07500"), comments=["# Age: 50", "# Dx: "])
    # A second copy of a record name in another folder (walked after training/).
    cx.copy_record("E07500", root / "zz_copy")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cinc2021_src") / "challenge"
    for folder, names in REAL.items():
        for name in names:
            cx.copy_record(name, root / folder)
    _write_quirks(root)
    return root


def _names(record_id: str) -> str:
    return record_id.rsplit("/", 1)[-1]


def _read_all(data_dir: Path, config: str) -> dict[str, list[dict]]:
    out = {}
    for split in SPLIT_NAMES:
        source = datasets.data_source("cinc2021", data_dir, split, config)
        out[split] = [source[i] for i in range(len(source))]
    return out


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cinc2021_data")
    # record_id is the path below manual_dir, at any depth.
    builder = datasets.build("cinc2021", source, data_dir, num_workers=0, progress=False)
    return builder, data_dir, _read_all(data_dir, "default")


def _check_build(builder, examples: dict[str, list[dict]], config: str, shape) -> None:
    superclasses, skipped = dict(SUPERCLASSES), dict(SKIPPED)
    if config != "default":  # 5 s: shorter than one 10 s window
        del superclasses["S0001"]
        skipped["S0001"] = "too_short"
    assert builder.info.features["signal"].shape == shape
    windows = WINDOWS[config]
    seen: dict[str, list[int]] = collections.defaultdict(list)
    subjects = {}
    for split, items in examples.items():
        subjects[split] = {int(ex["subject_id"]) for ex in items}
        for ex in items:
            record_id = ex["record_id"].decode()
            name = _names(record_id)
            assert splits.record_hash_split(name, (0.6, 0.8)) == split
            assert int(ex["subject_id"]) == splits.stable_id(name)
            assert ex["signal"].shape == shape and ex["signal"].dtype == np.float32
            hot = {i for i, v in enumerate(ex["superclasses"]) if v}
            assert hot == superclasses[name], name
            assert int(ex["label"]) == (hot.pop() if len(hot) == 1 else -1)
            assert ex["source_database"].decode() == SOURCES[name[0]]
            assert ex["labels"].shape == (26,) and ex["labels"].dtype == np.int32
            seen[record_id].append(int(ex["segment"]))
    assert {_names(r) for r in seen} == set(superclasses)
    for record_id, segments in seen.items():
        assert sorted(segments) == list(range(windows[_names(record_id)])), record_id
    for a in SPLIT_NAMES:
        for b in SPLIT_NAMES:
            assert a == b or not subjects[a] & subjects[b]
    meta = builder.info.metadata
    assert meta["skipped_records"] == dict(sorted(collections.Counter(skipped.values())
                                                  .items()))
    assert meta["split_unit"] == "record" and meta["superclasses_unexpressible"] == []
    assert meta["record_notes"] == {
        "dx_abbreviation": 3, "dx_unknown_token": 1, "gain_corrected": 2,
        "gain_corrected_2e+06": 1, "gain_corrected_4880": 1, "no_scored_class": 2,
        "record_line_2020": 1}
    assert meta["unknown_dx_tokens"] == {"XYZ": 1}
    json.dumps(dict(meta))


def test_default_config_windows_labels_splits_and_metadata(built):
    builder, data_dir, examples = built
    _check_build(builder, examples, "default", (250, 12))
    meta = datasets.load_builder("cinc2021", data_dir).info.metadata  # persisted
    assert meta["multilabel_names"][4:6] == ["CLBBB|LBBB", "CRBBB|RBBB"]
    assert meta["multilabel_codes"][5] == "713427006|59118001"
    assert meta["config"]["split_method"] == "record_hash"
    written = sum(v for s in meta["written_records"].values()
                  for v in s["records_by_source"].values())
    assert written == len(SUPERCLASSES)
    listed = {_names(i["record"]): i["reason"] for i in meta["skipped_record_list"]}
    assert listed["Q0003"] == "truncated" and listed["E07500"] == "duplicate_record"
    fingerprint = meta["fingerprint"]
    assert set(fingerprint["preparation"]["label_tables_sha256"]) == {
        "dx_mapping_scored.csv", "dx_mapping_unscored.csv"}


def test_examples_are_the_shared_preparation_of_the_read_signal(built, source):
    _, _, examples = built
    by_record = collections.defaultdict(dict)
    rows = {}
    for items in examples.values():
        for ex in items:
            by_record[ex["record_id"].decode()][int(ex["segment"])] = ex["signal"]
            rows[_names(ex["record_id"].decode())] = ex
    for record_id in ("training/georgia/g1/E07500", "quirks/a/A0001", "quirks/Q0006",
                      "quirks/incart/I0002"):
        got = np.stack([s for _, s in sorted(by_record[record_id].items())])
        record = cf.read_record(source / record_id)
        np.testing.assert_array_equal(got, pp.signal_segments(record.signal, record.fs))
    # The bogus-gain record equals its source read at 1000/mV; the permuted one its source.
    np.testing.assert_array_equal(
        np.stack([s for _, s in sorted(by_record["quirks/a/A0001"].items())]),
        pp.signal_segments(cx.real_val("E07504").T / 1000.0, 500))
    np.testing.assert_array_equal(
        np.stack([s for _, s in sorted(by_record["quirks/Q0006"].items())]),
        np.stack([s for _, s in sorted(by_record["training/ptb-xl/g1/HR06002"].items())]))
    # Labels: the scored classes and the demographics of the header.
    names = datasets.load_builder("cinc2021", built[1]).info.metadata["multilabel_names"]

    def hot(name):
        return {names[i] for i, v in enumerate(rows[name]["labels"]) if v}

    assert hot("E07509") == {"CRBBB|RBBB", "SB"}
    assert hot("Q0002") == {"AF", "LAD"}  # AF, STD (unscored), XYZ (unknown), LAD
    assert hot("JS20005") == {"PAC|SVPB", "STach", "PVC|VPB"}
    assert hot("E07514") == {"STach", "TInv"}  # anterior ischaemia is unscored
    assert float(rows["E07500"]["age"]) == 78.0 and int(rows["E07500"]["sex"]) == 0
    assert float(rows["Q0002"]["age"]) == 61.0


@pytest.mark.parametrize("config,shape", [("records_100hz", (1000, 12)),
                                          ("records_500hz", (5000, 12))])
def test_ten_second_window_configs(source, tmp_path, config, shape):
    builder = datasets.build("cinc2021", source, tmp_path, config, num_workers=0,
                             progress=False)
    _check_build(builder, _read_all(tmp_path, config), config, shape)


def test_manual_only_and_the_cli(tmp_path, source):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically"):
        datasets.build("cinc2021", None, tmp_path / "data", num_workers=0, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="physionet.org/content/challenge-2021"):
        datasets.build("cinc2021", empty, tmp_path / "data", num_workers=0, progress=False)
    # The command line, with a derived seeded split (still by record hash).
    result = subprocess.run(
        [sys.executable, "-m", "cardioformer_jax.build_dataset", "cinc2021",
         f"--manual_dir={source / 'training'}", f"--data_dir={tmp_path / 'cli'}",
         "--split_seed=3", "--num_workers=0", "--no_progress"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built cinc2021/default-seed3" in result.stdout
    assert "skipped records by reason: {'flat_lead': 1}" in result.stdout
    meta = datasets.load_builder("cinc2021", tmp_path / "cli", "default-seed3").info.metadata
    assert meta["config"]["split_method"] == "record_hash" and meta["config"]["split_seed"] == 3
    built_splits = datasets.load_builder("cinc2021", tmp_path / "cli", "default-seed3").info.splits
    assert set(built_splits) | set(meta["empty_splits"]) == set(SPLIT_NAMES)
    for split in built_splits:  # 12 records: a split may stay empty
        source_split = datasets.data_source("cinc2021", tmp_path / "cli", split, "default-seed3")
        for i in range(0, len(source_split), 10):
            name = _names(source_split[i]["record_id"].decode())
            assert splits.record_hash_split(name, (0.6, 0.8), seed=3) == split


def test_builder_folder_follows_the_tfds_cli_conventions():
    from tensorflow_datasets.scripts.cli import build as tfds_cli_build

    folder = REPO / "tfds_builders" / "cinc2021"
    cls, _ = tfds_cli_build._get_builder_cls_and_kwargs(str(folder), has_imports=False)
    assert cls.name == "cinc2021" and cls.__name__ == "Builder"
    assert [c.name for c in cls.BUILDER_CONFIGS] == ["default", "records_100hz",
                                                     "records_500hz"]
    assert cls.DOWNLOAD_URL is None and "physionet.org" in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    metadata = cls.get_metadata()
    assert metadata.description and "Reyna" in metadata.citation
    assert datasets.builder_class("cinc2021").name == "cinc2021"
    assert [n.lower() for n in cls.LEAD_NAMES] == [n.lower() for n in cf.LEADS_12]
    assert labels.PTBXL_CLASSES == cls.CLASS_NAMES
