"""The Challenge-format reader and the cinc2021 label rules, on the real fixture records and
quirky variants made from them (nothing mocked). The builder end to end:
`tests/integration/test_cinc2021.py`."""

from __future__ import annotations

import numpy as np
import pytest

from cardioformer_jax.data import challenge_format as cf
from cardioformer_jax.data import preprocessing as pp
from tests.helpers import challenge_fixtures as cx
from tfds_builders import labels, splits


def test_every_real_fixture_reads_in_mv_as_the_header_says():
    assert len(cx.RECORDS) == 13
    for name in cx.RECORDS:
        header = cf.parse_header(cx.FIXTURES / name)
        assert header.record_name == name and header.quirks == ()
        assert header.fs == 500 and header.n_samples == 5000
        assert [s.name for s in header.signals] == list(cx.LEADS)
        assert {s.gain for s in header.signals} == {1000.0}
        if name == "JS20004":  # real Ningbo record whose V2, V4 and V6 are all zeros
            with pytest.raises(pp.RecordError) as err:
                cf.read_record(cx.FIXTURES / name)
            assert err.value.kind == "flat_lead" and "V2" in str(err.value)
            continue
        record = cf.read_record(cx.FIXTURES / f"{name}.hea")  # extension accepted
        np.testing.assert_array_equal(record.signal, cx.real_val(name).T / 1000.0)
        assert record.lead_names == cx.LEADS and record.notes == ()
        assert cf.PLAUSIBLE_AMPLITUDE_MV[0] < cf.record_amplitude(record.signal) < 5


def test_header_comments_age_sex_and_dx():
    header = cf.parse_header(cx.FIXTURES / "E07500")
    assert header.comment("age") == "78" and header.comment("SEX") == "Male"
    assert header.dx == ("67741000119109", "426177001")
    assert header.comment("Rx") == "Unknown" and header.comment("nothing") is None
    assert labels.parse_age(header.comment("Age")) == 78.0
    assert labels.parse_sex(header.comment("Sex")) == 0


def test_2020_record_line_is_read_and_noted(tmp_path):
    val = cx.real_val("E07502")
    path = cx.write_record(tmp_path, "E00018", val,
                           record_line="E00018.mat 12 500 5000 05-May-2020 14:50:55")
    header = cf.parse_header(path)
    assert header.record_name == "E00018" and header.quirks == ("record_line_2020",)
    np.testing.assert_array_equal(cf.read_record(path).signal, val.T / 1000.0)
    # A WFDB time and date are no quirk.
    path = cx.write_record(tmp_path, "E00019", val, record_line="E00019 12 500 5000 "
                           "14:50:55 05/05/2020")
    assert cf.parse_header(path).quirks == ()


@pytest.mark.parametrize("gain", [4880.0, 2000000.0])
def test_known_bogus_gains_are_read_at_1000_and_noted(tmp_path, gain):
    val = cx.real_val("E07504")
    gains = [1000.0] * 12
    gains[3:] = [gain] * 9  # some leads only, as in the 2020 release
    record = cf.read_record(cx.write_record(tmp_path, "E1", val, gains=gains))
    np.testing.assert_array_equal(record.signal, val.T / 1000.0)
    assert record.notes == ("gain_corrected", f"gain_corrected_{gain:g}")


@pytest.mark.parametrize("gain", [1e6, 10.0])
def test_implausible_amplitude_with_an_unknown_gain_is_refused(tmp_path, gain):
    path = cx.write_record(tmp_path, "E2", cx.real_val("E07504"), gains=gain)
    with pytest.raises(pp.RecordError) as err:
        cf.read_record(path)
    assert err.value.kind == "implausible_amplitude"


def test_a_bogus_gain_that_correcting_does_not_make_plausible_is_refused(tmp_path):
    val = (cx.real_val("E07504") // 100).astype(np.int16)  # amplitude ~0.01 mV at 1000/mV
    path = cx.write_record(tmp_path, "E3", val, gains=4880)
    with pytest.raises(pp.RecordError) as err:
        cf.read_record(path)
    assert err.value.kind == "implausible_amplitude" and "known bogus" in str(err.value)


def test_units_baseline_and_lead_order(tmp_path):
    val = cx.real_val("HR06002")
    order = [6, 0, 1, 2, 11, 3, 4, 5, 7, 8, 10, 9]
    leads = [cx.LEADS[i].upper() if i % 2 else cx.LEADS[i].lower() for i in order]
    record = cf.read_record(cx.write_record(tmp_path, "H1", val[order], leads=leads))
    np.testing.assert_array_equal(record.signal, val.T / 1000.0)
    assert [n.lower() for n in record.lead_names] == [n.lower() for n in cx.LEADS]
    # In uV the same numbers are 1000 times smaller.
    record = cf.read_record(cx.write_record(tmp_path, "H2", val, gains=1.0, units="uV"))
    np.testing.assert_allclose(record.signal, val.T / 1000.0)
    # The baseline is subtracted.
    path = cx.write_record(tmp_path, "H3", val)
    text = path.with_suffix(".hea").read_text().replace("1000(0)/mV", "1000(50)/mV")
    path.with_suffix(".hea").write_text(text)
    np.testing.assert_allclose(cf.read_record(path).signal, (val.T - 50) / 1000.0)


def test_bad_records_are_refused_by_reason(tmp_path):
    val = cx.real_val("E07519")

    def kind(path, **kwargs) -> str:
        with pytest.raises(pp.RecordError) as err:
            cf.read_record(path, **kwargs)
        return err.value.kind

    path = cx.write_record(tmp_path, "T1", val)
    data = path.with_suffix(".mat").read_bytes()
    path.with_suffix(".mat").write_bytes(data[: len(data) // 2])
    assert kind(path) == "truncated"
    path = cx.write_record(tmp_path, "T2", val)
    path.with_suffix(".mat").unlink()
    assert kind(path) == "missing_file"
    assert kind(tmp_path / "nowhere") == "missing_record"
    nan = val.astype(np.float64)
    nan[4, 100:200] = np.nan
    assert kind(cx.write_record(tmp_path, "T3", nan)) == "nan_lead"
    flat = val.copy()
    flat[7] = 12
    assert kind(cx.write_record(tmp_path, "T4", flat)) == "flat_lead"
    flat[:8] = 0  # most leads zero: still a flat lead, not an implausible amplitude
    assert kind(cx.write_record(tmp_path, "T4b", flat)) == "flat_lead"
    invalid = val.copy()
    invalid[5, 300] = -32768  # WFDB's invalid-sample code of format 16
    assert kind(cx.write_record(tmp_path, "T3b", invalid)) == "nan_lead"
    assert kind(cx.write_record(tmp_path, "T5", val[:11], leads=cx.LEADS[:11])) == \
        "lead_mismatch"
    assert kind(cx.write_record(tmp_path, "T6", val[:, :250]), min_seconds=1.0) == "too_short"
    path = cx.write_record(tmp_path, "T7", val)
    path.with_suffix(".hea").write_text("this is not a header\n")
    assert kind(path) == "bad_header"
    path = cx.write_record(tmp_path, "T8", val)
    text = path.with_suffix(".hea").read_text().replace(" 5000\n", " 4000\n", 1)
    path.with_suffix(".hea").write_text(text)
    assert kind(path) == "header_mismatch"
    path = cx.write_record(tmp_path, "T9", val)
    lines = path.with_suffix(".hea").read_text().splitlines()
    fields = lines[2].split()
    fields[6] = str(int(fields[6]) + 1)  # checksum of lead II disagrees with the data
    lines[2] = " ".join(fields)
    path.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    assert kind(path) == "header_mismatch"


def test_signal_segments_at_any_rate():
    signal = cx.real_val("E07500").T / 1000.0
    # 5000 samples declared at 257 Hz (INCART's rate): 19.46 s -> 19 windows of 1 s.
    segments = pp.signal_segments(signal, 257.0)
    assert segments.shape == (19, 250, 12)
    np.testing.assert_array_equal(segments, pp.segment(pp.prepare_signal(signal, 257.0), 250))
    assert pp.signal_segments(signal, 500.0, target_fs=100, length=1000).shape == (1, 1000, 12)
    with pytest.raises(pp.RecordError, match="too_short"):
        pp.signal_segments(signal, 1000.0, target_fs=100, length=1000)  # 5 s


# --- labels ------------------------------------------------------------------------------

def _tables():
    from tfds_builders.cinc2021 import Builder

    return Builder._tables()


def test_scored_classes_merge_the_tables_equivalent_codes():
    scored, _ = _tables()
    assert set(labels.cinc2021_equivalences(scored["Notes"])) == set(
        labels.CINC2021_EQUIVALENT_CODES)
    rows = list(zip(scored["SNOMEDCTCode"], scored["Abbreviation"], strict=True))
    names, codes, index = labels.cinc2021_scored_classes(rows, labels.CINC2021_EQUIVALENT_CODES)
    assert len(rows) == 30 and len(names) == len(codes) == 26
    assert names[:6] == ("AF", "AFL", "BBB", "Brady", "CLBBB|LBBB", "CRBBB|RBBB")
    assert codes[4:6] == ("733534002|164909002", "713427006|59118001")
    for first, second in labels.CINC2021_EQUIVALENT_CODES:
        assert index[first] == index[second]
    assert sorted(set(index.values())) == list(range(26)) and len(index) == 30


def test_dx_tokens_codes_abbreviations_and_unknown():
    scored, unscored = _tables()
    rows = [(c, a) for t in (scored, unscored)
            for c, a in zip(t["SNOMEDCTCode"], t["Abbreviation"], strict=True)]
    known = {c for c, _ in rows}
    abbreviations = labels.cinc2021_abbreviations(rows)
    assert len(known) == 133

    def code(token):
        return labels.cinc2021_dx_code(token, known, abbreviations)

    assert code("164889003") == ("164889003", "code")
    for cpsc, snomed in labels.CINC2021_CPSC_ABBREVIATIONS.items():
        assert code(cpsc) == (snomed, "abbreviation")
    assert code("i-avb") == ("270492004", "abbreviation")
    assert code("LAnFB") == ("445118002", "abbreviation")
    assert code("sb") == ("426177001", "abbreviation")
    assert code("XYZ") == (None, "unknown") and code("999") == (None, "unknown")


def test_superclass_mapping_rules():
    _, unscored = _tables()
    scored, _ = _tables()
    known = set(scored["SNOMEDCTCode"]) | set(unscored["SNOMEDCTCode"])
    assert set(labels.CINC2021_SUPERCLASS_OF_CODE) <= known
    assert labels.CINC2021_NORM_CODES <= known
    assert set(labels.CINC2021_SUPERCLASS_OF_CODE.values()) == {"MI", "STTC", "CD", "HYP"}

    def names(*codes):
        hot = labels.cinc2021_superclasses(codes)
        return {c for c, v in zip(labels.PTBXL_CLASSES, hot, strict=True) if v}

    assert names("426783006") == {"NORM"}
    assert names("426177001", "427084000") == {"NORM"}  # sinus rhythms only
    assert names("426783006", "39732003") == set()  # + left axis deviation: not NORM
    assert names("426783006", "164889003") == set()  # + AF
    assert names("426177001", "59118001") == {"CD"}
    assert names("67741000119109", "426177001") == {"HYP"}
    assert names("164865005", "164934002") == {"MI", "STTC"}
    assert names() == set()
    assert labels.single_class(labels.cinc2021_superclasses(["164873001"])) == 4
    assert labels.single_class((0, 1, 1, 0, 0)) == -1 and labels.single_class((0,) * 5) == -1


def test_source_database_from_the_record_name():
    want = {"A0001": "CPSC", "Q0001": "CPSC-extra", "I0001": "INCART", "S0001": "PTB",
            "HR00001": "PTB-XL", "E00001": "Georgia", "JS00001": "Chapman-Shaoxing",
            "JS10646": "Chapman-Shaoxing", "JS10647": "Ningbo", "JS45551": "Ningbo",
            "X0001": "unknown", "Apple": "unknown"}
    assert {n: labels.cinc2021_source_database(n) for n in want} == want


def test_record_hash_split_is_stable_and_proportional():
    names = [f"E{i:05d}" for i in range(4000)]
    got = [splits.record_hash_split(n, (0.6, 0.8)) for n in names]
    assert got == [splits.record_hash_split(n, (0.6, 0.8)) for n in names]
    counts = {s: got.count(s) / len(got) for s in ("train", "validation", "test")}
    assert abs(counts["train"] - 0.6) < 0.03 and abs(counts["test"] - 0.2) < 0.03
    assert [splits.record_hash_split(n, (0.6, 0.8), seed=1) for n in names] != got
    assert splits.record_hash_split("E00001", (1.0, 1.0)) == "train"
    ids = {splits.stable_id(n) for n in names}
    assert len(ids) == len(names) and all(0 <= i < 2**63 for i in ids)
    assert splits.stable_id("E00001") == splits.stable_id("E00001")
