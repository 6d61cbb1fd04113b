"""The PhysioNet/CinC Challenge 2021 metrics (`evaluation/challenge.py`): hand-computed
cases, the shipped weights table, the class mapping from the cinc2021 builder's order,
thresholds and the lead settings. NumPy only."""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import numpy as np
import pytest

from cardioformer_jax.data import dataset_inputs
from cardioformer_jax.evaluation import challenge as ch
from tests.helpers import REPO
from tfds_builders import labels as tfds_labels
from tfds_builders.cinc2021.cinc2021_dataset_builder import Builder

# A 3-class problem: A, B and the normal class N (index 2).
W3 = np.array([[1.0, 0.5, 0.25],
               [0.5, 1.0, 0.0],
               [0.25, 0.0, 1.0]])
#                 A  B  N
L3 = np.array([[1, 0, 0],   # 1: labels {A}
               [1, 1, 0],   # 2: labels {A, B}
               [0, 0, 1],   # 3: labels {N}
               [0, 1, 0]])  # 4: labels {B}
O3 = np.array([[1, 0, 0],   # 1: outputs {A}
               [0, 1, 1],   # 2: outputs {B, N}
               [0, 0, 0],   # 3: outputs nothing
               [1, 0, 0]])  # 4: outputs {A}


def _frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1000)


def test_hand_computed_score_on_three_classes():
    # A(L, O): rec 1 m=1: A[A,A] += 1. Rec 2 m=|{A,B,N}|=3: A[A,B], A[A,N], A[B,B], A[B,N]
    # += 1/3. Rec 3: no output, nothing added. Rec 4 m=|{A,B}|=2: A[B,A] += 1/2.
    expected_a = np.array([[1, 1 / 3, 1 / 3],
                           [1 / 2, 1 / 3, 1 / 3],
                           [0, 0, 0]])
    np.testing.assert_allclose(ch.confusion_matrix(L3, O3), expected_a, rtol=0, atol=1e-12)
    # observed = 1*1 + 0.5/3 + 0.25/3 + 0.5*1/2 + 1/3 + 0/3 = 22/12 = 11/6.
    # correct, A(L, L): rec 1 A[A,A] += 1; rec 2 m=2: A[A,A], A[A,B], A[B,A], A[B,B] += 1/2;
    #   rec 3 A[N,N] += 1; rec 4 A[B,B] += 1 -> 3/2 + 0.5/2 + 0.5/2 + 3/2 + 1 = 9/2.
    # inactive, outputs {N}: rec 1 m=2: A[A,N] += 1/2; rec 2 m=3: A[A,N], A[B,N] += 1/3;
    #   rec 3 m=1: A[N,N] += 1; rec 4 m=2: A[B,N] += 1/2 -> 0.25*5/6 + 0 + 1 = 29/24.
    # score = (11/6 - 29/24) / (9/2 - 29/24) = (15/24) / (79/24) = 15/79.
    parts = ch.challenge_score_parts(L3, O3, weights=W3, normal_index=2)
    assert _frac(parts["observed"]) == Fraction(11, 6)
    assert _frac(parts["correct"]) == Fraction(9, 2)
    assert _frac(parts["inactive"]) == Fraction(29, 24)
    assert parts["score"] == pytest.approx(15 / 79, abs=1e-12)
    assert ch.challenge_score_parts(L3, O3, weights=W3, normal_index=2)["score"] == parts["score"]


def test_hand_computed_f_measure_and_accuracy():
    # A: TP rec 1, FN rec 2, FP rec 4 -> 2/4. B: TP rec 2, FN rec 4 -> 2/3.
    # N: FP rec 2, FN rec 3 -> 0. Macro (1/2 + 2/3 + 0) / 3 = 7/18.
    macro, per_class = ch.f_measure(L3, O3)
    np.testing.assert_allclose(per_class, [1 / 2, 2 / 3, 0.0], rtol=0, atol=1e-12)
    assert macro == pytest.approx(7 / 18, abs=1e-12)
    assert ch.accuracy(L3, O3) == 0.25  # only rec 1 exactly right
    # A class neither true nor output is NaN and left out of the macro mean.
    labels = np.c_[L3, np.zeros(4, int)]
    outputs = np.c_[O3, np.zeros(4, int)]
    macro4, per_class4 = ch.f_measure(labels, outputs)
    assert math.isnan(per_class4[3]) and macro4 == pytest.approx(7 / 18, abs=1e-12)
    assert math.isnan(ch.f_measure(np.zeros((2, 2)), np.zeros((2, 2)))[0])


def test_perfect_outputs_score_one_normal_only_scores_zero():
    classes, _ = ch.load_weights()
    rng = np.random.default_rng(0)
    labels = rng.random((40, len(classes))) < 0.1
    labels[~labels.any(axis=1), classes.index(ch.NORMAL_CODE)] = True
    assert ch.challenge_score_parts(labels, labels)["score"] == pytest.approx(1.0, abs=1e-12)
    normal = np.zeros_like(labels)
    normal[:, classes.index(ch.NORMAL_CODE)] = True
    assert ch.challenge_score_parts(labels, normal)["score"] == pytest.approx(0.0, abs=1e-12)
    # Outputting nothing scores below the normal-only baseline here.
    assert ch.challenge_score_parts(labels, np.zeros_like(labels))["score"] < 0
    # Degenerate: every recording normal alone -> correct == inactive -> 0.0.
    assert ch.challenge_score_parts(normal, normal)["score"] == 0.0


def test_score_matches_a_plain_loop_over_recordings():
    # The definition written out recording by recording, on the real table.
    classes, weights = ch.load_weights()
    rng = np.random.default_rng(1)
    labels = rng.random((25, len(classes))) < 0.08
    outputs = rng.random((25, len(classes))) < 0.08
    a = np.zeros((len(classes), len(classes)))
    for truth, out in zip(labels, outputs, strict=True):
        m = max(1, int(np.sum(truth | out)))
        for i in np.flatnonzero(truth):
            for j in np.flatnonzero(out):
                a[i, j] += 1 / m
    np.testing.assert_allclose(ch.confusion_matrix(labels, outputs), a, rtol=1e-12)
    parts = ch.challenge_score_parts(labels, outputs)
    assert parts["observed"] == pytest.approx(float(np.sum(weights * a)), rel=1e-12)


def test_weights_table_is_the_challenges():
    classes, weights = ch.load_weights()
    assert len(classes) == 26 and weights.shape == (26, 26)
    np.testing.assert_array_equal(weights, weights.T)
    np.testing.assert_array_equal(np.diag(weights), np.ones(26))
    assert ((weights > 0) & (weights <= 1)).all()
    assert sorted(c for c in classes if "|" in c) == sorted(
        "|".join(pair) for pair in tfds_labels.CINC2021_EQUIVALENT_CODES)
    with open(REPO / "tfds_builders" / "cinc2021" / "dx_mapping_scored.csv", newline="") as f:
        scored_codes = {row["SNOMEDCTCode"].strip() for row in csv.DictReader(f)}
    assert len(scored_codes) == 30
    assert {code for c in classes for code in c.split("|")} == scored_codes
    assert ch.NORMAL_CODE in classes
    # load_weights hands out copies: the cached table cannot be changed by a caller.
    weights[0, 0] = 7.0
    assert ch.load_weights()[1][0, 0] == 1.0


def test_load_weights_rejects_a_bad_table(tmp_path):
    bad = tmp_path / "w.csv"
    bad.write_text(",1,2\n1,1.0,0.5\n2,0.5,x\n")
    with pytest.raises(ValueError, match=r"w.csv: row '2', column '2': 'x'"):
        ch.load_weights(bad)
    bad.write_text(",1,2\n1,1.0,0.5\n3,0.5,1.0\n")
    with pytest.raises(ValueError, match="rows name the classes"):
        ch.load_weights(bad)
    good = tmp_path / "ok.csv"
    good.write_text(",1|9,2\n1|9,1.0,0.5\n2,0.5,1.0\n")
    classes, weights = ch.load_weights(good)
    assert classes == ("1|9", "2") and weights[0, 1] == 0.5


def test_builder_order_maps_onto_the_table_and_back():
    _, builder_codes, code_index = Builder.scored_classes()
    classes, _ = ch.load_weights()
    assert builder_codes != classes  # the scored table's order, not the weights table's
    order = ch.class_order(builder_codes)
    assert [builder_codes[j] for j in order] == list(classes)
    x = np.arange(3 * 26).reshape(3, 26)
    np.testing.assert_array_equal(x[:, order][:, np.argsort(order)], x)
    # Pairs written the other way round, and the builder's code -> index, agree.
    swapped = ["|".join(reversed(c.split("|"))) for c in builder_codes]
    np.testing.assert_array_equal(ch.class_order(swapped), order)
    for k, cls in enumerate(classes):
        assert {code_index[code] for code in cls.split("|")} == {order[k]}


def test_class_order_names_missing_and_extra_classes():
    _, builder_codes, _ = Builder.scored_classes()
    codes = list(builder_codes)
    codes[codes.index("713427006|59118001")] = "59118001"  # one code of a pair only
    with pytest.raises(ValueError, match=r"missing \['713427006\|59118001'\].*\['59118001'\]"):
        ch.class_order(codes)
    with pytest.raises(ValueError, match="missing.*426783006"):
        ch.class_order([c for c in builder_codes if c != "426783006"])
    with pytest.raises(ValueError, match="code 164889003 is in both"):
        ch.class_order([*builder_codes, "164889003"])


def test_either_code_of_a_pair_is_the_same_class():
    classes, _ = ch.load_weights()
    for first, second in tfds_labels.CINC2021_EQUIVALENT_CODES:
        a, b, both = ch.multi_hot([[first], [second], [second, first]])
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, both)
        assert a.sum() == 1 and "|".join((first, second)) == classes[int(np.argmax(a))]
    unscored = ch.multi_hot([["164889003", "55827005"], []])  # AF + an unscored code
    assert unscored.sum() == 1 and unscored[0, classes.index("164889003")]
    with pytest.raises(ValueError, match=r"records\[0\] is the string"):
        ch.multi_hot(["164889003"])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"outputs must be 0/1; outputs\[1, 0\] is"):
        ch.challenge_score_parts(L3, np.array([[1, 0, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]]),
                                 weights=W3, normal_index=2)
    with pytest.raises(ValueError, match="labels has 3 classes, expected 26"):
        ch.challenge_score_parts(L3, O3)
    with pytest.raises(ValueError, match="normal_index"):
        ch.challenge_score_parts(L3, O3, weights=W3)
    with pytest.raises(ValueError, match=r"labels \(4, 3\) and outputs \(3, 3\)"):
        ch.accuracy(L3, O3[:3])


def test_chosen_thresholds_reach_the_best_f1_per_class():
    rng = np.random.default_rng(2)
    labels = rng.random((30, 4)) < 0.3
    labels[:, 3] = False  # a class absent from the validation data
    probs = np.clip(0.35 * labels + rng.random((30, 4)) * 0.7, 0, 1).round(2)
    for grid in (ch.DEFAULT_GRID, None):
        chosen = ch.choose_thresholds(probs, labels, grid=grid)
        _, chosen_f = ch.f_measure(labels, ch.apply_thresholds(probs, chosen))
        for k in range(3):
            candidates = ch.DEFAULT_GRID if grid is not None else np.unique(probs[:, k])
            fs = [ch.f_measure(labels[:, k:k + 1], probs[:, k:k + 1] >= t)[1][0]
                  for t in candidates]
            errors = [int(((probs[:, k] >= t) != labels[:, k]).sum()) for t in candidates]
            assert chosen_f[k] == pytest.approx(max(fs))
            # Among the best, the fewest errors, then the smallest threshold.
            best = [(e, t) for t, f, e in zip(candidates, fs, errors, strict=True)
                    if f == max(fs)]
            assert chosen[k] == min(best)[1]
        # The absent class takes the candidate with the fewest false positives.
        candidates = ch.DEFAULT_GRID if grid is not None else np.unique(probs[:, 3])
        assert (probs[:, 3] >= chosen[3]).sum() == min((probs[:, 3] >= t).sum()
                                                       for t in candidates)


def test_threshold_ties_go_to_the_smallest():
    # Class 0: any threshold in (0.2, 0.8] separates perfectly (F1 1, no errors): 0.25.
    probs = np.array([[0.9], [0.8], [0.2], [0.1]])
    labels = np.array([[1], [1], [0], [0]])
    assert ch.choose_thresholds(probs, labels)[0] == 0.25
    assert ch.choose_thresholds(probs, labels, grid=None)[0] == 0.8
    with pytest.raises(ValueError, match="grid must be"):
        ch.choose_thresholds(probs, labels, grid=[])


def test_apply_thresholds_leaves_recordings_without_output_empty():
    probs = np.array([[0.2, 0.6], [0.1, 0.3]])
    np.testing.assert_array_equal(ch.apply_thresholds(probs, [0.5, 0.5]),
                                  [[False, True], [False, False]])
    np.testing.assert_array_equal(ch.apply_thresholds(probs, 0.3), [[False, True],
                                                                    [False, True]])
    with pytest.raises(ValueError, match=r"thresholds must be one float or \(2,\)"):
        ch.apply_thresholds(probs, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"probs\[1, 0\] is nan"):
        ch.apply_thresholds(np.array([[0.2, 0.6], [np.nan, 0.3]]), 0.5)


def test_challenge_metrics_from_the_builders_order():
    _, builder_codes, _ = Builder.scored_classes()
    classes, _ = ch.load_weights()
    order = ch.class_order(builder_codes)
    rng = np.random.default_rng(3)
    labels = rng.random((20, 26)) < 0.1
    probs = np.where(labels, 0.9, 0.1)
    probs[0] = 0.05  # a recording with no class over threshold
    out = ch.challenge_metrics(probs, labels, 0.5, builder_codes)
    outputs = (probs >= 0.5)[:, order]
    expected = ch.challenge_score_parts(labels[:, order], outputs)
    assert {k: out[k] for k in expected} == expected
    assert out["accuracy"] == ch.accuracy(labels[:, order], outputs)
    assert out["classes"] == classes and out["num_recordings"] == 20
    assert out["num_no_output"] == 1
    macro, per_class = ch.f_measure(labels[:, order], outputs)
    assert out["f_measure"] == macro
    np.testing.assert_array_equal(list(out["f_measure_per_class"].values()), per_class)
    # The same data already in the table's order, without class_codes.
    same = ch.challenge_metrics(probs[:, order], labels[:, order], 0.5)
    assert same["score"] == out["score"]
    with pytest.raises(ValueError, match="probs has 25 classes; class_codes name 26"):
        ch.challenge_metrics(probs[:, :25], labels[:, :25], 0.5, builder_codes)


@pytest.mark.parametrize("setting, expected", [
    ("12", list(range(12))), ("6", [0, 1, 2, 3, 4, 5]), ("4", [0, 1, 2, 7]),
    ("3", [0, 1, 7]), (2, [0, 1])])
def test_lead_indices_against_the_builders_leads(setting, expected):
    indices = dataset_inputs.lead_columns(str(setting), Builder.LEAD_NAMES)
    assert list(indices) == expected
    assert [Builder.LEAD_NAMES[i].lower() for i in indices] == [
        lead.lower() for lead in dataset_inputs.LEAD_SETS[str(setting)]]


def test_lead_indices_errors():
    with pytest.raises(ValueError, match="'8' is not a lead setting"):
        dataset_inputs.lead_columns("8", Builder.LEAD_NAMES)
    with pytest.raises(ValueError, match=r"needs leads \['V2'\]"):
        dataset_inputs.lead_columns("3", ("I", "II", "III"))


def test_weighted_metrics_match_the_plain_ones_on_every_resample():
    rng = np.random.default_rng(3)
    classes = ch.load_weights()[0]
    labels = rng.random((40, len(classes))) < 0.15
    outputs = rng.random((40, len(classes))) < 0.2
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=5).astype(np.float64)
    values = ch.weighted_metrics(labels, outputs, counts)
    for row, weights in enumerate(counts):
        # A resample is the data set with each recording repeated as often as drawn.
        picked = np.repeat(np.arange(40), weights.astype(int))
        assert values["score"][row] == pytest.approx(
            ch.challenge_score_parts(labels[picked], outputs[picked])["score"], abs=1e-12)
        assert values["f_measure"][row] == pytest.approx(
            ch.f_measure(labels[picked], outputs[picked])[0], abs=1e-12)
        assert values["accuracy"][row] == pytest.approx(
            ch.accuracy(labels[picked], outputs[picked]), abs=1e-12)
