"""Label rules and subject splits (docs/data.md) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfds_builders import labels, splits

# --- PTB-XL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scp_codes,expected",
    [
        ("{'NORM': 100.0, 'SR': 0.0}", "NORM"),
        ("{'SR': 0.0, 'IMI': 50.0}", "MI"),
        ("{'IMI': 80.0, 'NDT': 80.0}", "MI"),  # tie: first in dict order
        ("{'NDT': 80.0, 'IMI': 80.0}", "STTC"),
        ("{'LAFB': 100.0, 'IRBBB': 100.0}", "CD"),
        ("{'LAO/LAE': 100.0}", "HYP"),
        ("{'RAO/RAE': 0.0}", "HYP"),  # likelihood 0 is still the top when alone
        ("{'AFLT': 100.0, 'NORM': 50.0}", None),  # top code is a rhythm: "other"
        ("{'PACE': 100.0}", None),
        ("{'NORM': 80.0, 'SR': 100.0}", None),  # SR outranks NORM here
        ("{}", None),
    ],
)
def test_ptbxl_top_code_class(scp_codes, expected):
    got = labels.ptbxl_top_code_class(labels.parse_scp_codes(scp_codes))
    assert got == (None if expected is None else labels.PTBXL_CLASSES.index(expected))


def test_parse_scp_codes_rejects_non_dicts():
    for bad in ("not a dict", "['NORM']", "{'NORM': 'x'}", ""):
        with pytest.raises(ValueError):
            labels.parse_scp_codes(bad)


def test_every_listed_code_maps_to_its_superclass():
    assert len(labels.PTBXL_CODE_TO_CLASS) == 1 + 14 + 13 + 11 + 5
    assert labels.PTBXL_CODE_TO_CLASS["INJIL"] == 1
    assert labels.PTBXL_CODE_TO_CLASS["ISCAN"] == 2
    assert labels.PTBXL_CODE_TO_CLASS["2AVB"] == 3
    assert labels.PTBXL_CODE_TO_CLASS["SEHYP"] == 4


def test_ptbxl_superdiagnostic_multi_hot():
    mapping = {"NORM": "NORM", "IMI": "MI", "NDT": "STTC", "LVH": "HYP"}
    assert labels.ptbxl_superdiagnostic({"IMI": 80.0, "NDT": 0.0, "SR": 0.0}, mapping) == (
        0, 1, 1, 0, 0,
    )  # fmt: skip
    assert labels.ptbxl_superdiagnostic({"SR": 100.0}, mapping) == (0, 0, 0, 0, 0)


def test_consistent_subject_labels_drops_mixed_and_other():
    kept = labels.consistent_subject_labels({1: [0, 0], 2: [0, 1], 3: [2, None], 4: [None], 5: [3]})
    assert kept == {1: 0, 5: 3}


# --- PTB -------------------------------------------------------------------------------


def test_ptb_label_and_demographics_from_comments():
    comments = [
        "age: 81",
        "sex: female",
        "Diagnose:",
        "Reason for admission: Myocardial infarction",
    ]
    assert labels.ptb_label(comments) == 1
    assert labels.ptb_age_sex(comments) == (81.0, 1)
    assert labels.ptb_label(["Reason for admission: Healthy control"]) == 0
    assert labels.ptb_label(["Reason for admission: Cardiomyopathy"]) is None
    assert labels.ptb_label(["age: 40"]) is None
    assert labels.ptb_age_sex(["age: n/a", "sex: male"]) == (-1.0, 0)


# --- MIMIC-IV-ECG ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reports,expected",
    [
        (["Sinus bradycardia", "Abnormal ECG"], "SB"),  # rule order beats "abnormal"
        (["Sinus tachycardia", "Atrial fibrillation"], "ST"),
        (["Atrial fibrillation with rapid ventricular response", "Abnormal ECG"], "AF"),
        (["Sinus rhythm", "Possible left atrial abnormality", "Borderline ECG"], "NORM"),
        (["Sinus rhythm", "Left bundle branch block", "Abnormal ECG"], None),
        (["Sinus rhythm", "Possible infarct", "ABNORMAL ecg"], None),  # per report line
        (["Sinus rhythm", float("nan"), None], "NORM"),
        ([], "NORM"),
    ],
)
def test_mimic_label(reports, expected):
    got = labels.mimic_label(reports)
    assert got == (None if expected is None else labels.MIMIC_CLASSES.index(expected))


# --- splits ----------------------------------------------------------------------------


def test_ordered_subject_split_per_class():
    # Class 0: 10 subjects -> 6 / 2 / 2; class 1: 5 subjects -> 3 / 1 / 1 (ids unsorted).
    classes = {**{s: 0 for s in range(100, 110)}, **{s: 1 for s in (55, 3, 41, 17, 29)}}
    got = splits.subject_splits(classes, (0.6, 0.8))
    assert [s for s in range(100, 110) if got[s] == "train"] == list(range(100, 106))
    assert [s for s in range(100, 110) if got[s] == "validation"] == [106, 107]
    assert [s for s in range(100, 110) if got[s] == "test"] == [108, 109]
    assert [got[s] for s in (3, 17, 29, 41, 55)] == ["train"] * 3 + ["validation", "test"]


def test_ptb_bounds_follow_the_reference_floor():
    got = splits.subject_splits({s: 0 for s in range(90)}, (0.55, 0.7))
    counts = [sum(v == name for v in got.values()) for name in splits.SPLITS]
    # floor(0.55*90) = 49 train; 0.7*90 is 62.99999999999999 in floating point -> 62.
    assert counts == [49, 13, 28]


def test_random_subject_split_is_seeded_and_keeps_the_counts():
    classes = {s: s % 2 for s in range(40)}
    a = splits.subject_splits(classes, (0.6, 0.8), seed=1)
    b = splits.subject_splits(classes, (0.6, 0.8), seed=1)
    c = splits.subject_splits(classes, (0.6, 0.8), seed=2)
    ordered = splits.subject_splits(classes, (0.6, 0.8))
    assert a == b and a != c and a != ordered
    for assignment in (a, c):
        for cls in (0, 1):
            members = [s for s in classes if classes[s] == cls]
            assert sum(assignment[s] == "train" for s in members) == 12
            assert sum(assignment[s] == "validation" for s in members) == 4


def test_bad_bounds_and_fold_split():
    with pytest.raises(ValueError):
        splits.subject_splits({1: 0}, (0.8, 0.6))
    assert [splits.fold_split(f) for f in (1, 8, 9, 10)] == [
        "train", "train", "validation", "test",
    ]  # fmt: skip


def test_check_disjoint_names_the_shared_subjects():
    splits.check_disjoint({"train": [1, 2], "validation": [3], "test": [4]})
    with pytest.raises(splits.SplitLeakError, match=r"'test'.*'train'.*\[2\]"):
        splits.check_disjoint({"train": [1, 2], "validation": [3], "test": [2]})


def test_missing_metadata_values_are_recognised_whatever_pandas_gives():
    # pandas 3 reads an empty text cell as NaN; nullable dtypes give pd.NA, dates pd.NaT.
    for missing in (None, float("nan"), np.float64("nan"), pd.NA, pd.NaT):
        assert labels.is_missing(missing), missing
        assert labels.parse_age(missing) == -1.0 and labels.parse_sex(missing) == -1
    for present in ("", "NORM", 0, 0.0, 71.0, "female"):
        assert not labels.is_missing(present), present
    assert labels.mimic_label([pd.NA, "Sinus bradycardia", np.nan]) == 0


def test_csv_columns_read_by_pandas_keep_their_missing_cells_missing(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("study_id,report_0,report_1\n1,Sinus rhythm,\n2,,Atrial fibrillation\n")
    for dtype in (None, str, "string"):
        frame = pd.read_csv(path, dtype=dtype)
        cells = list(frame.itertuples(index=False))
        assert labels.mimic_label(cells[0][1:]) == labels.MIMIC_CLASSES.index("NORM")
        assert labels.mimic_label(cells[1][1:]) == labels.MIMIC_CLASSES.index("AF")
        assert [labels.is_missing(c) for c in cells[0][1:]] == [False, True]


def test_preparation_code_digest_is_recorded_for_this_builder_version():
    from tfds_builders import common, fingerprint

    got = fingerprint.preparation_code_digest()
    assert got == fingerprint.PREPARATION_CODE_SHA256, (
        f"the preparation code changed (digest {got}): bump EcgBuilder.VERSION (now "
        f"{common.EcgBuilder.VERSION}) with a release note, and set "
        f"fingerprint.PREPARATION_CODE_SHA256 to the new digest")


def test_preparation_code_digest_ignores_comments_and_docstrings_only(tmp_path):
    from tfds_builders import fingerprint

    def digest(source: str) -> str:
        (tmp_path / "m.py").write_text(source)
        return fingerprint.preparation_code_digest(("m.py",), root=tmp_path)

    base = digest('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x * 2\n')
    assert digest('"""Other."""\n# note\ndef f(x):\n    return x * 2  # why\n') == base
    assert digest('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x * 3\n') != base


# --- PTB-XL benchmark tasks ---------------------------------------------------------------


def _statement_rows():
    from cardioformer_jax.data.synthetic import codes

    table = codes.scp_statements()  # PTB-XL 1.0.3's table, as the package ships it
    return {str(code): row for code, row in table.iterrows()}


@pytest.mark.parametrize("task,count", [("all", 71), ("diagnostic", 44),
                                        ("subdiagnostic", 23), ("superdiagnostic", 5),
                                        ("form", 19), ("rhythm", 12)])
def test_benchmark_task_classes_come_from_the_statement_table(task, count):
    code_map = labels.ptbxl_task_code_map(_statement_rows(), task)
    assert len(labels.PTBXL_TASK_CLASSES[task]) == count
    assert set(code_map.values()) == set(labels.PTBXL_TASK_CLASSES[task])
    if task != "superdiagnostic":  # sorted, as the suite's label binariser orders them
        assert list(labels.PTBXL_TASK_CLASSES[task]) == sorted(labels.PTBXL_TASK_CLASSES[task])


def test_benchmark_labels_ignore_likelihoods_and_unknown_codes():
    rows = _statement_rows()
    codes = {"IMI": 15.0, "LAFB": 0.0, "SR": 0.0, "ABQRS": 50.0, "XYZ": 100.0}
    sub = labels.ptbxl_task_code_map(rows, "subdiagnostic")
    hot = labels.ptbxl_task_labels(codes, sub, labels.PTBXL_TASK_CLASSES["subdiagnostic"])
    named = {c for c, h in zip(labels.PTBXL_TASK_CLASSES["subdiagnostic"], hot, strict=True)
             if h}
    assert named == {"IMI", "LAFB/LPFB"}
    for task, expected in (("rhythm", {"SR"}), ("form", {"ABQRS"}),
                           ("superdiagnostic", {"MI", "CD"}),
                           ("all", {"IMI", "LAFB", "SR", "ABQRS"})):
        code_map = labels.ptbxl_task_code_map(rows, task)
        hot = labels.ptbxl_task_labels(codes, code_map, labels.PTBXL_TASK_CLASSES[task])
        assert {c for c, h in zip(labels.PTBXL_TASK_CLASSES[task], hot, strict=True)
                if h} == expected
    with pytest.raises(ValueError, match="unknown PTB-XL benchmark task"):
        labels.ptbxl_task_code_map(rows, "everything")


def test_source_databases_name_every_challenge_source():
    from cardioformer_jax.data import datasets

    # Every record name prefix of the Challenge set maps to one of cinc2021's databases.
    names = ["HR00001", "JS00001", "JS10647", "A0001", "Q0001", "I0001", "S0001", "E00001"]
    assert {labels.cinc2021_source_database(n) for n in names} == \
        set(datasets.source_databases("cinc2021"))
    assert datasets.source_databases("ptbxl") == ("PTB-XL",)
    assert set(datasets.SOURCE_DATABASES) == set(datasets.DATASETS)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.source_databases("nosuch")
