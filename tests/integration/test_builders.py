"""The three TFDS builders end to end on small hand-made PhysioNet layouts.

Real wfdb files, real TFDS ArrayRecord writing and reading; nothing is mocked.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cardioformer_jax.data import datasets
from cardioformer_jax.data import preprocessing as pp
from tests.helpers import REPO
from tests.helpers import ecg_fixtures as fx
from tfds_builders import common, splits

SPLIT_NAMES = ("train", "validation", "test")


def read_split(data_dir: Path, name: str, split: str, config: str | None = None) -> list[dict]:
    source = datasets.data_source(name, data_dir, split, config)
    return [source[i] for i in range(len(source))]


def by_record(examples: list[dict]) -> dict[str, np.ndarray]:
    """record_id -> its samples stacked in segment order."""
    grouped = collections.defaultdict(dict)
    for ex in examples:
        grouped[ex["record_id"].decode()][int(ex["segment"])] = ex["signal"]
    return {r: np.stack([segs[k] for k in sorted(segs)]) for r, segs in grouped.items()}


def subjects_of(examples: list[dict]) -> set[int]:
    return {int(ex["subject_id"]) for ex in examples}


# --- PTB-XL ----------------------------------------------------------------------------

# 25 kept patients (5 per class, one good record each), ids 1..25 in class blocks.
PTBXL_CODES = {
    "NORM": "{'NORM': 100.0, 'SR': 0.0}",
    "MI": "{'IMI': 80.0, 'NDT': 80.0}",  # tie -> first in dict order -> MI
    "STTC": "{'SR': 0.0, 'NDT': 100.0}",
    "CD": "{'LAFB': 100.0, 'IRBBB': 50.0}",
    "HYP": "{'LVH': 50.0, 'SR': 0.0}",
}
STTC_TIE = "{'NDT': 80.0, 'IMI': 80.0}"  # tie -> NDT -> STTC
# Second records of kept patients, corrupted in the named way (same label as the patient).
BAD_SECOND_RECORDS = {
    101: (1, "truncated"),
    102: (6, "missing_record"),
    103: (12, "nan_lead"),
    104: (16, "flat_lead"),
    105: (21, "wrong_fs"),
    106: (22, "lead_mismatch"),  # 11 leads: V6 is missing
    107: (23, "header_mismatch"),
}


PERMUTATION = [6, 0, 1, 2, 11, 3, 4, 5, 7, 8, 10, 9]


def _ptbxl_rows() -> tuple[list[list[object]], dict[int, str]]:
    rows, expected = [], {}
    for p in range(1, 26):
        cls = labels_order = list(PTBXL_CODES)[(p - 1) // 5]
        codes = STTC_TIE if p == 11 else PTBXL_CODES[cls]
        rows.append(fx.ptbxl_row(p, p, codes, fold=p % 10 + 1, age=40 + p, sex=p % 2))
        expected[p] = labels_order
    for ecg_id, (patient, _) in BAD_SECOND_RECORDS.items():
        rows.append(fx.ptbxl_row(ecg_id, patient, rows[patient - 1][11], fold=patient % 10 + 1))
    rows.append(fx.ptbxl_row(108, 24, "not a dict", fold=5))  # unparsable scp_codes
    # Dropped patients: 30 has an "other" record, 31 mixed classes, 32 only "other".
    rows.append(fx.ptbxl_row(110, 30, "{'AFLT': 100.0, 'NORM': 50.0}", fold=1))
    rows.append(fx.ptbxl_row(111, 30, "{'NORM': 100.0}", fold=1))
    rows.append(fx.ptbxl_row(112, 31, "{'NORM': 100.0}", fold=2))
    rows.append(fx.ptbxl_row(113, 31, "{'IMI': 100.0}", fold=2))
    rows.append(fx.ptbxl_row(114, 32, "{'PACE': 100.0}", fold=3))
    return rows, expected


def _corrupt_ptbxl(root: Path) -> None:
    def rec(ecg_id: int) -> Path:
        return root / f"records500/00000/{ecg_id:05d}_hr"

    dat = rec(101).with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-2400])
    sig = fx.ecg_like(5000, 500, 12, 103)
    sig[10:20, 3] = np.nan
    fx.write_record(rec(103).parent, rec(103).name, sig, 500, leads=fx.LEADS_12)
    sig = fx.ecg_like(5000, 500, 12, 104)
    sig[:, 0] = 0.3
    fx.write_record(rec(104).parent, rec(104).name, sig, 500, leads=fx.LEADS_12)
    sig = fx.ecg_like(2500, 250, 12, 105)
    fx.write_record(rec(105).parent, rec(105).name, sig, 250, leads=fx.LEADS_12)
    sig = fx.ecg_like(5000, 500, 11, 106)
    fx.write_record(rec(106).parent, rec(106).name, sig, 500, leads=fx.LEADS_12[:11])
    # Patient 2's record stores its leads in another order: the builder reorders them.
    sig = fx.ecg_like(5000, 500, 12, 2)
    fx.write_record(rec(2).parent, rec(2).name, sig[:, PERMUTATION], 500,
                    leads=[fx.LEADS_12[i] for i in PERMUTATION])
    hea = rec(107).with_suffix(".hea")
    lines = hea.read_text().splitlines()
    fields = lines[3].split()
    fields[5] = str(int(fields[5]) + 7)  # initial value of lead 3 disagrees with the data
    lines[3] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ptbxl_source(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    root = tmp_path_factory.mktemp("ptbxl_src") / "ptb-xl-1.0.3"  # zip's folder level
    rows, expected = _ptbxl_rows()
    fx.write_ptbxl(root, rows, skip_signals=[102])
    _corrupt_ptbxl(root)
    return root, expected


@pytest.fixture(scope="module")
def ptbxl_built(ptbxl_source, tmp_path_factory):
    root, expected = ptbxl_source
    data_dir = tmp_path_factory.mktemp("ptbxl_data")
    # manual_dir is the zip's parent folder: the builder finds the versioned sub-folder.
    builder = datasets.build("ptbxl", root.parent, data_dir, num_workers=0, progress=False)
    return builder, data_dir, root, expected


def test_ptbxl_splits_labels_and_shapes(ptbxl_built):
    builder, data_dir, root, expected = ptbxl_built
    assert {s: builder.info.splits[s].num_examples for s in SPLIT_NAMES} == {
        "train": 150, "validation": 50, "test": 50,
    }  # fmt: skip
    want_subjects = {
        "train": {p for p in range(1, 26) if (p - 1) % 5 < 3},
        "validation": {p for p in range(1, 26) if (p - 1) % 5 == 3},
        "test": {p for p in range(1, 26) if (p - 1) % 5 == 4},
    }
    features = builder.info.features
    assert features["signal"].shape == (250, 12) and features["signal"].np_dtype == np.float32
    assert {k: features[k].np_dtype for k in ("subject_id", "segment", "age", "sex")} == {
        "subject_id": np.int64, "segment": np.int32, "age": np.float32, "sex": np.int32,
    }  # fmt: skip
    assert features["label"].names == ["NORM", "MI", "STTC", "CD", "HYP"]
    class_names = list(PTBXL_CODES)
    for split in SPLIT_NAMES:
        examples = read_split(data_dir, "ptbxl", split)
        assert subjects_of(examples) == want_subjects[split]
        for ex in examples:
            assert ex["signal"].shape == (250, 12) and ex["signal"].dtype == np.float32
            patient = int(ex["subject_id"])
            assert class_names[int(ex["label"])] == expected[patient]
            assert ex["record_id"].decode() == f"records500/00000/{patient:05d}_hr"
            assert float(ex["age"]) == 40 + patient and int(ex["sex"]) == patient % 2
        counts = collections.Counter(int(ex["segment"]) for ex in examples)
        assert counts == {k: len(want_subjects[split]) for k in range(10)}


def test_ptbxl_examples_equal_the_shared_preprocessing(ptbxl_built):
    _, data_dir, root, _ = ptbxl_built
    records = {}
    for split in SPLIT_NAMES:
        records.update(by_record(read_split(data_dir, "ptbxl", split)))
    assert len(records) == 25
    for record_id, samples in records.items():
        expected = pp.record_segments(root / record_id, expected_fs=500,
                                      lead_names=fx.LEADS_12)
        np.testing.assert_array_equal(samples, expected)
        # Per-record standardisation (docs/data.md): 10 full segments, mean 0 / std 1 per lead.
        flat = samples.reshape(-1, 12).astype(np.float64)
        np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(flat.std(0), 1, atol=1e-4)
    # The permuted record came out in the dataset's lead order: as if written in that order.
    permuted = records["records500/00000/00002_hr"]
    stored_order = pp.record_segments(root / "records500/00000/00002_hr", expected_fs=500)
    np.testing.assert_array_equal(permuted, stored_order[..., np.argsort(PERMUTATION)])
    assert not np.array_equal(permuted, stored_order)


def test_ptbxl_metadata_counts_skips_and_classes(ptbxl_built):
    builder, data_dir, _, _ = ptbxl_built
    # Read back from disk by a fresh, code-free builder: the metadata is persisted.
    meta = datasets.load_builder("ptbxl", data_dir).info.metadata
    assert meta["skipped_records"] == {
        "bad_scp_codes": 1,
        "flat_lead": 1,
        "header_mismatch": 1,
        "label_other": 2,
        "missing_record": 1,
        "nan_lead": 1,
        "subject_label_conflict": 3,
        "truncated": 1,
        "wrong_fs": 1,
        "lead_mismatch": 1,
    }
    listed = {Path(item["record"]).name: item["reason"] for item in meta["skipped_record_list"]}
    assert listed["00101_hr"] == "truncated" and listed["00102_hr"] == "missing_record"
    train = meta["splits"]["train"]
    assert train["class_examples"] == {c: 30 for c in PTBXL_CODES}
    assert train["class_subjects"] == {c: 3 for c in PTBXL_CODES}
    assert train["subjects"] == 15 and train["records"] == 15 and train["examples"] == 150
    # Planned: records kept before reading signals; the 7 corrupted ones are all in train.
    assert train["planned_records"] == 15 + 7 and meta["splits"]["test"]["planned_records"] == 5
    assert meta["config"]["split_bounds"] == [0.6, 0.8]
    assert meta["synthetic"] is False  # a PhysioNet-layout folder without the twin's marker
    json.dumps(dict(meta))  # plain JSON


def test_ptbxl_registered_tfds_data_source_reads_the_same(ptbxl_built):
    _, data_dir, _, _ = ptbxl_built
    import tfds_builders.ptbxl  # noqa: F401  (registers the builder)

    source = tfds.data_source("ptbxl", data_dir=str(data_dir), split="validation")
    ours = datasets.data_source("ptbxl", data_dir, "validation")
    assert len(source) == len(ours) == 50
    for i in (0, 17, 49):
        a, b = source[i], ours[i]
        np.testing.assert_array_equal(a["signal"], b["signal"])
        assert a["record_id"] == b["record_id"] and a["segment"] == b["segment"]


def test_ptbxl_parallel_build_writes_the_same_examples(ptbxl_built, tmp_path):
    _, data_dir, root, _ = ptbxl_built
    builder = datasets.build("ptbxl", root, tmp_path, num_workers=2, progress=False)
    assert builder.info.metadata["skipped_records"]["truncated"] == 1
    # Same source, code and config: the same fingerprint, however the build was run.
    fingerprint = builder.info.metadata["fingerprint"]
    serial = datasets.load_builder("ptbxl", data_dir).info.metadata["fingerprint"]
    assert fingerprint["sha256"] == serial["sha256"] and fingerprint["builder_version"] == str(
        common.EcgBuilder.VERSION)
    assert fingerprint["source"]["records"] == 25 + 7  # every planned record, corrupt ones too
    assert set(fingerprint["source"]["metadata_files"]) == {"ptbxl_database.csv",
                                                           "scp_statements.csv"}
    for split in SPLIT_NAMES:
        parallel = by_record(read_split(tmp_path, "ptbxl", split))
        serial = by_record(read_split(data_dir, "ptbxl", split))
        assert parallel.keys() == serial.keys()
        for record_id in serial:
            np.testing.assert_array_equal(parallel[record_id], serial[record_id])


def test_fingerprint_follows_source_files_and_preparation(tmp_path):
    from tfds_builders import fingerprint

    root = tmp_path / "src"
    record = fx.write_record(root, "r1", fx.ecg_like(500, 500, 2, 0), 500, leads=["I", "II"])
    (root / "db.csv").write_text("a,b\n1,2\n")

    def sha(preparation=None):
        source = fingerprint.source_summary(root, ["db.csv", "absent.csv"], [str(record)])
        return fingerprint.fingerprint(builder_version="1.1.0",
                                       preparation=preparation or {"fs": 250},
                                       source=source, code_digest="x")["sha256"]

    base = sha()
    assert sha() == base
    assert sha({"fs": 500}) != base  # other preparation parameters
    (root / "db.csv").write_text("a,b\n1,3\n")
    edited = sha()
    assert edited != base  # other metadata
    with open(str(record) + ".dat", "ab") as f:
        f.write(b"\0\0")
    assert sha() != edited  # a record's file changed size


def test_ptbxl_superdiagnostic_config(ptbxl_source, tmp_path):
    root, _ = ptbxl_source
    builder = datasets.build("ptbxl", root, tmp_path, "superdiagnostic", num_workers=0,
                             progress=False)
    meta = builder.info.metadata
    assert meta["skipped_records"]["no_superdiagnostic_label"] == 1  # PACE only
    assert "subject_label_conflict" not in meta["skipped_records"]  # no patient filter
    seen = {}
    for split in SPLIT_NAMES:
        for ex in read_split(tmp_path, "ptbxl", split, "superdiagnostic"):
            patient = int(ex["subject_id"])
            fold = patient % 10 + 1 if patient < 30 else {30: 1, 31: 2}[patient]
            assert split == splits.fold_split(fold)
            seen[ex["record_id"].decode()] = (tuple(ex["labels"].tolist()), int(ex["label"]))
            assert ex["labels"].dtype == np.int32
    assert seen["records500/00000/00006_hr"] == ((0, 1, 1, 0, 0), 1)  # IMI + NDT, top MI
    assert seen["records500/00000/00001_hr"] == ((1, 0, 0, 0, 0), 0)
    assert seen["records500/00000/00110_hr"] == ((1, 0, 0, 0, 0), -1)  # top AFLT: 'other'
    assert seen["records500/00000/00113_hr"] == ((0, 1, 0, 0, 0), 1)
    assert meta["splits"]["train"]["multilabel_examples"]["MI"] > 0


def test_ptbxl_twin_matches_its_ground_truth(tmp_path):
    synthetic = pytest.importorskip("cardioformer_jax.data.synthetic")
    root = synthetic.write_ptbxl_twin(tmp_path / "src", 30, seed=3)
    plan = synthetic.plan_ptbxl(30, seed=3)
    builder = datasets.build("ptbxl", root, tmp_path / "data", num_workers=0, progress=False)
    got = {}
    for split in builder.info.splits:
        for ex in read_split(tmp_path / "data", "ptbxl", split):
            got[int(ex["record_id"].decode()[-8:-3])] = (int(ex["subject_id"]), int(ex["label"]))
    kept = plan[plan["patient_kept"]]
    assert set(got) == set(kept["ecg_id"])
    for row in kept.itertuples():
        assert got[row.ecg_id] == (row.patient_id, list(PTBXL_CODES).index(row.label))
    # The twin says what it is, and the build records it (reports never compare it).
    assert synthetic.SYNTHETIC_MARKER == common.SYNTHETIC_MARKER
    assert (root / synthetic.SYNTHETIC_MARKER).is_file()
    assert datasets.load_builder("ptbxl", tmp_path / "data").info.metadata["synthetic"] is True


def test_ptbxl_split_leak_is_refused(tmp_path):
    # Patient 1's records sit in folds 1 and 10: the fold split would put it in two splits.
    rows = [
        fx.ptbxl_row(1, 1, "{'NORM': 100.0}", fold=1),
        fx.ptbxl_row(2, 1, "{'NORM': 100.0}", fold=10),
        fx.ptbxl_row(3, 2, "{'IMI': 100.0}", fold=9),
    ]
    root = fx.write_ptbxl(tmp_path / "src", rows)
    with pytest.raises(splits.SplitLeakError, match=r"\[1\]"):
        datasets.build("ptbxl", root, tmp_path / "data", "superdiagnostic", num_workers=0)
    # Nothing half-written is left where a finished dataset would be.
    with pytest.raises(FileNotFoundError):
        datasets.dataset_dir("ptbxl", tmp_path / "data", "superdiagnostic")


def test_missing_metadata_empty_result_and_unbuilt_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.build("ptbxl", tmp_path / "nowhere", tmp_path / "data", num_workers=0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("not PTB-XL")
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        datasets.build("ptbxl", tmp_path / "empty", tmp_path / "data", num_workers=0)
    root = fx.write_ptbxl(tmp_path / "src", [fx.ptbxl_row(1, 1, "{'NORM': 100.0}")])
    (root / "scp_statements.csv").unlink()
    with pytest.raises(FileNotFoundError, match="scp_statements.csv"):
        datasets.build("ptbxl", root, tmp_path / "data", "superdiagnostic", num_workers=0)
    other = fx.write_ptbxl(tmp_path / "other", [fx.ptbxl_row(1, 1, "{'AFLT': 100.0}")])
    with pytest.raises(ValueError, match=f"no usable record under {other}"):
        datasets.build("ptbxl", other, tmp_path / "data", num_workers=0)
    # Every record of a split unreadable: a clear error rather than TFDS's bare assertion.
    gone = fx.write_ptbxl(
        tmp_path / "gone", [fx.ptbxl_row(1, 1, "{'NORM': 100.0}")], skip_signals=[1]
    )
    with pytest.raises(ValueError, match=r"none of the 1 records of split 'test'.*missing_record"):
        datasets.build("ptbxl", gone, tmp_path / "data", num_workers=0)
    with pytest.raises(FileNotFoundError) as err:
        datasets.data_source("ptbxl", tmp_path / "data", "train")
    assert "python -m cardioformer_jax.build_dataset ptbxl" in str(err.value)


# --- PTB -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptb_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptb_src")
    fx.copy_real_ptb_record(root)  # patient001, myocardial infarction, 81, female
    for p in range(2, 6):
        fx.write_ptb_patient(root, p, "Myocardial infarction", seed=p)
    for p in range(6, 11):
        fx.write_ptb_patient(root, p, "Healthy control", sex="female", age=30 + p, seed=p)
    fx.write_ptb_patient(root, 11, "Cardiomyopathy", seed=11)
    fx.write_ptb_patient(root, 12, "n/a", seed=12)
    # Bad second records of kept patients: a truncated one and one with RR > 1.2 s.
    bad = fx.write_ptb_patient(root, 7, "Healthy control", record="s0002_re", seed=1)
    dat = bad.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])
    slow = pp.read_record(fx.REAL_PTB_RECORD).signal[:8000]
    slow = np.repeat(slow, 5, axis=0)[::2]  # 2.5x slower heart rate
    fx.write_record(root / "patient008", "s0002_re", slow, 1000, leads=fx.LEADS_15,
                    comments=["Reason for admission: Healthy control"])  # fmt: skip
    data_dir = tmp_path_factory.mktemp("ptb_data")
    builder = datasets.build("ptb", root, data_dir, num_workers=0, progress=False)
    return builder, data_dir, root


def test_ptb_builder_end_to_end(ptb_built):
    builder, data_dir, root = ptb_built
    meta = builder.info.metadata
    assert meta["skipped_records"] == {"other_reason": 2, "rr_too_long": 1, "truncated": 1}
    # Bounds 0.55 / 0.7 with 5 subjects per class: 2 train, 1 validation, 2 test.
    want = {"train": {1, 2, 6, 7}, "validation": {3, 8}, "test": {4, 5, 9, 10}}
    examples = {}
    for split in SPLIT_NAMES:
        exs = read_split(data_dir, "ptb", split)
        assert subjects_of(exs) == want[split]
        for ex in exs:
            assert ex["signal"].shape == (300, 15) and ex["signal"].dtype == np.float32
            assert int(ex["label"]) == (1 if int(ex["subject_id"]) <= 5 else 0)
        examples.update({ex["record_id"].decode(): ex for ex in exs})
        assert meta["splits"][split]["class_subjects"] == {
            "healthy control": len(want[split]) // 2,
            "myocardial infarction": len(want[split]) // 2,
        }
    real = by_record(read_split(data_dir, "ptb", "train"))["patient001/s0010_re"]
    np.testing.assert_array_equal(
        real, pp.record_heartbeats(fx.REAL_PTB_RECORD, expected_fs=1000, expected_leads=15)
    )
    first = examples["patient001/s0010_re"]
    assert float(first["age"]) == 81.0 and int(first["sex"]) == 1
    assert float(examples["patient006/s0001_re"]["age"]) == 36.0


# --- MIMIC-IV-ECG ----------------------------------------------------------------------

MIMIC_REPORTS = {
    "SB": ["Sinus bradycardia", "Abnormal ECG"],
    "ST": ["Sinus tachycardia", "Otherwise normal ECG"],
    "AF": ["Atrial fibrillation with rapid ventricular response", "Abnormal ECG"],
    "NORM": ["Sinus rhythm", "Possible left atrial abnormality", "Borderline ECG"],
}
NORM_SUBJECTS = [10370030, 10370031, 10370032, 10370033, 10370034]  # around the subset cut


@pytest.fixture(scope="module")
def mimic_source(tmp_path_factory) -> Path:
    studies = []
    for c, cls in enumerate(["SB", "ST", "AF"]):
        for i in range(5):
            subject = 10000100 + 10 * c + i
            studies.append((subject, 40000000 + subject % 100000, MIMIC_REPORTS[cls]))
    for subject in NORM_SUBJECTS:
        studies.append((subject, 41000000 + subject % 1000, MIMIC_REPORTS["NORM"]))
    excluded = ["Sinus rhythm", "Left bundle branch block", "Abnormal ECG"]
    studies.append((10370030, 42000001, excluded))  # excluded study of a kept subject
    studies.append((10000199, 42000002, MIMIC_REPORTS["SB"]))  # mixed subject: dropped
    studies.append((10000199, 42000003, ["Sinus rhythm", "Normal ECG"]))
    studies.append((10000100, 42000004, MIMIC_REPORTS["SB"]))  # its signal is missing
    root = fx.write_mimic(tmp_path_factory.mktemp("mimic_src"), studies, skip_signals=[42000004])
    # A record whose study has no machine_measurements row.
    fx.write_mimic(root / "extra", [(10000101, 42000005, [])])
    with (root / "record_list.csv").open("a") as f:
        f.write((root / "extra" / "record_list.csv").read_text().splitlines()[1] + "\n")
    return root


def test_mimic_builder_end_to_end(mimic_source, tmp_path):
    builder = datasets.build("mimic_iv_ecg", mimic_source, tmp_path, num_workers=0, progress=False)
    meta = builder.info.metadata
    assert meta["skipped_records"] == {
        "excluded_abnormal": 1,
        "missing_record": 1,
        "no_machine_report": 1,
        "subject_label_conflict": 2,
    }
    classes = ["SB", "ST", "AF", "NORM"]
    all_subjects = set()
    for split in SPLIT_NAMES:
        exs = read_split(tmp_path, "mimic_iv_ecg", split)
        for ex in exs:
            assert ex["signal"].shape == (250, 12)
            assert float(ex["age"]) == -1.0 and int(ex["sex"]) == -1
            subject = int(ex["subject_id"])
            want = "NORM" if subject in NORM_SUBJECTS else ["SB", "ST", "AF"][subject // 10 % 10]
            assert classes[int(ex["label"])] == want
        all_subjects |= subjects_of(exs)
        assert meta["splits"][split]["class_subjects"] == {
            c: {"train": 3, "validation": 1, "test": 1}[split] for c in classes
        }
    assert 10000199 not in all_subjects and len(all_subjects) == 20
    assert len(read_split(tmp_path, "mimic_iv_ecg", "test")) == 4 * 10


def test_mimic_cli_reference_subset_with_seeded_split(mimic_source, tmp_path):
    # The command line itself, in a subprocess (absl flags).
    argv = [sys.executable, "-m", "cardioformer_jax.build_dataset", "mimic_iv_ecg",
            f"--manual_dir={mimic_source}", f"--data_dir={tmp_path}",
            "--builder_config=reference_subset", "--split_seed=3", "--num_workers=0",
            "--no_progress"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "built mimic_iv_ecg/reference_subset-seed3" in proc.stdout
    meta = datasets.load_builder("mimic_iv_ecg", tmp_path, "reference_subset-seed3").info.metadata
    assert meta["config"]["split_method"] == "random" and meta["config"]["split_seed"] == 3
    assert meta["skipped_records"]["outside_subset"] == 2  # 10370033, 10370034
    per_split = {
        split: subjects_of(read_split(tmp_path, "mimic_iv_ecg", split, "reference_subset-seed3"))
        for split in SPLIT_NAMES
    }
    everyone = set().union(*per_split.values())
    assert max(everyone) == 10370032 and len(everyone) == 18
    classes = {s: (3 if s in NORM_SUBJECTS else s // 10 % 10) for s in everyone}
    expected = splits.subject_splits(classes, (0.6, 0.8), seed=3)
    for split, subjects in per_split.items():
        assert subjects == {s for s in everyone if expected[s] == split}
    splits.check_disjoint(per_split)


def test_mimic_twin_matches_its_ground_truth(tmp_path):
    synthetic = pytest.importorskip("cardioformer_jax.data.synthetic")
    root = synthetic.write_mimic_twin(tmp_path / "src", 24, seed=5)
    plan = synthetic.plan_mimic(24, seed=5)
    builder = datasets.build("mimic_iv_ecg", root, tmp_path / "data", num_workers=0, progress=False)
    got = {}
    for split in builder.info.splits:
        for ex in read_split(tmp_path / "data", "mimic_iv_ecg", split):
            got[int(ex["record_id"].decode().rsplit("/", 1)[1])] = int(ex["label"])
    kept = plan[plan["subject_kept"] & (plan["label"] != "excluded")]
    assert set(got) == set(kept["study_id"])
    classes = ["SB", "ST", "AF", "NORM"]
    assert all(got[row.study_id] == classes.index(row.label) for row in kept.itertuples())
    skipped = builder.info.metadata["skipped_records"]
    assert skipped.get("excluded_abnormal", 0) == int((plan["label"] == "excluded").sum())


# --- TFDS conventions ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ptbxl", "ptb", "mimic_iv_ecg"])
def test_builder_folders_follow_the_tfds_cli_conventions(name):
    # The lookup `tfds build tfds_builders/<name>` performs (the CLI itself also needs
    # TensorFlow at start-up, so it is not run here).
    from tensorflow_datasets.scripts.cli import build as tfds_cli_build

    folder = REPO / "tfds_builders" / name
    cls, _ = tfds_cli_build._get_builder_cls_and_kwargs(str(folder), has_imports=False)
    assert cls.name == name and cls.__name__ == "Builder"
    assert cls.DEFAULT_CONFIG_NAME == "default"
    assert len(cls.BUILDER_CONFIGS) == {"ptb": 4, "ptbxl": 15, "mimic_iv_ecg": 3}[name]
    assert "physionet.org" in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert cls.DOWNLOAD_URL.startswith("https://physionet.org/static/published-projects/")
    metadata = cls.get_metadata()
    assert metadata.description and "@" in metadata.citation
    assert datasets.builder_class(name).name == name


@pytest.mark.parametrize("name", ["ptbxl", "ptb", "mimic_iv_ecg"])
def test_builders_read_the_leads_predict_expects(name):
    # Training data and inference take the leads by the same names in the same order.
    from cardioformer_jax.data import dataset_inputs

    builder = datasets.builder_class(name)
    leads = builder.SIGNAL_SHAPE[1] if builder.MODE == "beats" else len(builder.LEAD_NAMES)
    assert len(builder.LEAD_NAMES) == leads == len(set(builder.LEAD_NAMES))
    assert [n.lower() for n in builder.LEAD_NAMES] == [
        n.lower() for n in dataset_inputs.record_preparation(name).lead_names]


def test_ptb_reference_beats_config_cuts_beats_as_the_reference_everywhere():
    # The builder's workers, and predict on a model trained on that config, use one rule.
    from cardioformer_jax.data import dataset_inputs
    from tfds_builders import processing

    builder = datasets.builder_class("ptb")
    config = {c.name: c for c in builder.BUILDER_CONFIGS}["reference_beats"]
    assert config.summary()["beat_rule"] == "reference"
    assert config.split_bounds == (0.55, 0.7)  # the default split
    task = processing.RecordTask(path=str(fx.REAL_PTB_RECORD), record_id="r", subject_id=1,
                                 label=0)
    result = processing.process_record(task, mode="beats", expected_fs=1000,
                                       lead_names=builder.LEAD_NAMES,
                                       beat_rule=config.beat_rule)
    want = pp.record_heartbeats(fx.REAL_PTB_RECORD, expected_fs=1000, rule="reference")
    np.testing.assert_array_equal(result.samples, want)
    assert not np.array_equal(
        want, pp.record_heartbeats(fx.REAL_PTB_RECORD, expected_fs=1000, rule="port"))
    # A derived split of that config cuts the same way.
    spec = dataset_inputs.record_preparation("ptb", "reference_beats-b0.6-0.8")
    assert spec.beat_rule == "reference" and spec.describe()["beat_rule"] == "reference"
    assert dataset_inputs.record_preparation("ptb").beat_rule == "port"
    np.testing.assert_allclose(dataset_inputs.prepare_record(fx.REAL_PTB_RECORD, spec).samples,
                               pp.standardize(want), atol=1e-5)
    with pytest.raises(ValueError, match="unknown beat_rule"):
        common.EcgConfig(name="x", beat_rule="median")


# --- downloads ---------------------------------------------------------------------------


def _zip_project(src: Path, zip_path: Path, *, sums: bool = True) -> Path:
    """`src` as a PhysioNet project archive: one top folder, with its SHA256SUMS.txt."""
    import hashlib
    import zipfile

    files = sorted(p for p in src.rglob("*") if p.is_file())
    with zipfile.ZipFile(zip_path, "w") as z:
        for p in files:
            z.write(p, f"project-1.0.0/{p.relative_to(src).as_posix()}")
        if sums:
            z.writestr("project-1.0.0/SHA256SUMS.txt", "".join(
                f"{hashlib.sha256(p.read_bytes()).hexdigest()} "
                f"{p.relative_to(src).as_posix()}\n" for p in files))
    return zip_path


@pytest.fixture
def served(tmp_path):
    """A local HTTP server for `tmp_path / "www"` (the builders' download path, offline)."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _ptb_from(url: str, folder: Path) -> type:
    """The PTB builder downloading `url`, its checksums.tsv in `folder`."""
    from etils import epath

    class LocalPtb(datasets.builder_class("ptb"), skip_registration=True):
        name = "ptb"
        DOWNLOAD_URL = url

        @classmethod
        def _get_pkg_dir_path(cls):
            return epath.Path(folder)

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return epath.Path(folder) / "ptb_dataset_builder.py"

    return LocalPtb


def test_downloads_are_checked_against_recorded_and_physionet_checksums(tmp_path, served):
    import hashlib

    www, base = served
    src = tmp_path / "src"
    fx.copy_real_ptb_record(src)
    for p in range(2, 4):
        fx.write_ptb_patient(src, p, "Myocardial infarction", seed=p)
    for p in range(4, 7):
        fx.write_ptb_patient(src, p, "Healthy control", seed=p)
    url = f"{base}/ptb.zip"
    folder = tmp_path / "builder"
    folder.mkdir()

    def download(data_dir, register=False):
        builder = _ptb_from(url, folder)(data_dir=str(tmp_path / data_dir), num_workers=0,
                                         progress=False)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(register_checksums=register),
            file_format="array_record")
        return builder

    # Unrecorded: a file altered after the sums were taken, or no sums at all, is refused.
    # (First: TFDS keeps the checksums it has read for the rest of the process.)
    import zipfile

    altered = src / "patient002" / "s0001_re.dat"
    _zip_project(src, www / "ptb.zip")
    good = altered.read_bytes()
    altered.write_bytes(good[:-2] + b"\0\0")
    with zipfile.ZipFile(www / "ptb.zip", "a") as z, pytest.warns(UserWarning, match="Dup"):
        z.write(altered, "project-1.0.0/patient002/s0001_re.dat")  # the later entry wins
    altered.write_bytes(good)
    with pytest.raises(ValueError, match=r"1 file\(s\) differ \['patient002/s0001_re.dat'\]"):
        download("d1")
    _zip_project(src, www / "ptb.zip", sums=False)
    with pytest.raises(FileNotFoundError, match="SHA256SUMS.txt not found"):
        download("d2")
    # Recorded on request, its files checked against SHA256SUMS.txt, then built.
    archive = _zip_project(src, www / "ptb.zip")
    built = download("d3", register=True)
    assert built.info.splits["train"].num_examples > 0
    recorded = (folder / "checksums.tsv").read_text()
    assert url in recorded and hashlib.sha256(archive.read_bytes()).hexdigest() in recorded
    # Another archive at the same address no longer matches the recorded checksum.
    _zip_project(src, www / "ptb.zip", sums=False)
    with pytest.raises(Exception, match="wrong checksum"):
        download("d4")
