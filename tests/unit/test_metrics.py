"""Tests for cardioformer_jax.core.metrics against scikit-learn and hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from cardioformer_jax.core.metrics import (
    CLASSIFICATION_KEYS,
    aggregate_seeds,
    classification_metrics,
    format_mean_std,
    record_level,
    weighted_classification_metrics,
)
from cardioformer_jax.evaluation.bootstrap import bootstrap_weights


def _random_problem(n=300, k=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    labels = rng.integers(0, k, size=n)
    logits[np.arange(n), labels] += 1.0  # informative but imperfect classifier
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32), labels


def test_agrees_with_sklearn_on_random_arrays():
    probs, labels = _random_problem()
    k = probs.shape[1]
    preds = probs.argmax(1)
    onehot = np.eye(k)[labels]
    m = classification_metrics(probs, labels)
    assert set(m) == set(CLASSIFICATION_KEYS)
    assert all(isinstance(v, float) for v in m.values())
    kw = dict(labels=np.arange(k), average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, preds, **kw))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, preds, **kw))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, preds, **kw))
    assert m["auroc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="macro"))
    assert m["auprc"] == pytest.approx(
        skm.average_precision_score(onehot, probs, average="macro"))
    # sklearn warns unless probabilities sum to 1 in float64.
    probs64 = probs.astype(np.float64) / probs.astype(np.float64).sum(1, keepdims=True)
    assert m["loss"] == pytest.approx(
        skm.log_loss(labels, probs64, labels=np.arange(k)), rel=1e-5)


def test_hand_computed_binary_case():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(probs, labels)
    # preds [0,1,1,0]: one TP, one FP, one FN for each class.
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    # Each class: 3 of 4 positive/negative pairs ranked correctly.
    assert m["auroc"] == pytest.approx(0.75)
    # Ranking pos, neg, pos, neg: AP = 0.5 * 1 + 0.5 * 2/3.
    assert m["auprc"] == pytest.approx(5 / 6)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.2])))


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 1])
    probs = np.eye(3)[labels] * 0.97 + 0.01
    m = classification_metrics(probs, labels)
    for key in ("accuracy", "precision", "recall", "f1", "auroc", "auprc"):
        assert m[key] == pytest.approx(1.0)
    assert m["loss"] == pytest.approx(-np.log(0.98))


def test_zero_probability_gives_finite_clipped_loss():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([1, 1])  # first example has p_true == 0
    m = classification_metrics(probs, labels)
    assert math.isfinite(m["loss"])
    assert m["loss"] == pytest.approx(-np.log(1e-7) / 2)


@pytest.mark.parametrize("mask_dtype", [bool, np.int32, np.float32])
def test_mask_equals_slicing(mask_dtype):
    probs, labels = _random_problem(n=100, k=4, seed=1)
    n_valid = 77
    # Padded rows carry garbage that would change every metric if it were counted.
    probs[n_valid:] = np.eye(4)[0]
    labels[n_valid:] = 3
    mask = (np.arange(100) < n_valid).astype(mask_dtype)
    masked = classification_metrics(probs, labels, mask=mask)
    sliced = classification_metrics(probs[:n_valid], labels[:n_valid])
    unmasked = classification_metrics(probs, labels)
    assert masked == pytest.approx(sliced)
    assert unmasked["accuracy"] != pytest.approx(sliced["accuracy"])


def test_mask_with_holes_and_jax_inputs():
    probs, labels = _random_problem(n=60, k=3, seed=2)
    mask = np.random.default_rng(3).random(60) < 0.7
    m = classification_metrics(jnp.asarray(probs), jnp.asarray(labels), mask=jnp.asarray(mask))
    assert m == pytest.approx(classification_metrics(probs[mask], labels[mask]))


def test_invalid_inputs_raise():
    probs, labels = _random_problem(n=10, k=3)
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics(probs, labels, mask=np.full(10, 2))
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(probs, labels, mask=np.ones(9, bool))
    with pytest.raises(ValueError, match="num_classes"):
        classification_metrics(probs, labels, num_classes=4)
    with pytest.raises(ValueError, match="lie in"):
        classification_metrics(probs, np.full(10, 3))
    with pytest.raises(ValueError, match="no valid"):
        classification_metrics(probs, labels, mask=np.zeros(10, bool))


def test_absent_class_is_skipped_for_ranking_but_counted_for_f1():
    rng = np.random.default_rng(4)
    k = 4
    labels = rng.integers(0, 3, size=80)  # class 3 never occurs
    probs = rng.dirichlet(np.ones(k), size=80)
    probs[:, 3] *= 0.01  # ...and is never predicted: zero_division=0 gives it F1 = 0
    probs /= probs.sum(1, keepdims=True)
    preds = probs.argmax(1)
    m = classification_metrics(probs, labels, num_classes=k)
    assert m["f1"] == pytest.approx(
        skm.f1_score(labels, preds, labels=np.arange(k), average="macro", zero_division=0))
    assert m["f1"] < skm.f1_score(labels, preds, labels=np.arange(3), average="macro")
    onehot = np.eye(k)[labels]
    expected_auroc = np.mean([skm.roc_auc_score(onehot[:, c], probs[:, c]) for c in range(3)])
    expected_auprc = np.mean(
        [skm.average_precision_score(onehot[:, c], probs[:, c]) for c in range(3)])
    assert m["auroc"] == pytest.approx(expected_auroc)
    assert m["auprc"] == pytest.approx(expected_auprc)


def test_single_class_present_gives_nan_ranking_metrics():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(probs, np.array([0, 0, 0]))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_non_finite_probabilities_give_nan_metrics():
    probs, labels = _random_problem(n=20, k=3)
    probs[4, 1] = np.nan
    m = classification_metrics(probs, labels)
    assert set(m) == set(CLASSIFICATION_KEYS) and all(math.isnan(v) for v in m.values())
    # ...unless the bad row is padding.
    assert not math.isnan(classification_metrics(probs, labels, mask=np.arange(20) != 4)["f1"])


def test_record_level_averages_segments():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])
    labels = np.array([0, 0, 1, 1, 1])
    rids = np.array(["b", "b", "a", "a", "pad"])
    mask = np.array([1, 1, 1, 1, 0])
    rec_probs, rec_labels, ids = record_level(probs, labels, rids, mask=mask)
    assert ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(rec_probs, [[0.4, 0.6], [0.6, 0.4]])
    assert rec_labels.tolist() == [1, 0]
    m = classification_metrics(rec_probs, rec_labels)
    assert m["accuracy"] == pytest.approx(1.0)  # segment-level accuracy is only 0.5


def test_record_level_rejects_inconsistent_labels():
    with pytest.raises(ValueError, match="different labels"):
        record_level(np.full((2, 2), 0.5), np.array([0, 1]), np.array([7, 7]))


def test_aggregate_seeds_sample_std():
    runs = [{"f1": 0.1, "auroc": 0.9}, {"f1": 0.2, "auroc": 0.9}, {"f1": 0.3, "auroc": 0.9}]
    agg = aggregate_seeds(runs)
    assert agg["f1"]["mean"] == pytest.approx(0.2)
    assert agg["f1"]["std"] == pytest.approx(0.1)  # sqrt(0.02 / (3 - 1))
    assert agg["auroc"] == pytest.approx({"mean": 0.9, "std": 0.0})
    pop = aggregate_seeds(runs, ddof=0)
    assert pop["f1"]["std"] == pytest.approx(np.std([0.1, 0.2, 0.3]))
    assert math.isnan(aggregate_seeds(runs[:1])["f1"]["std"])
    with pytest.raises(ValueError, match="keys"):
        aggregate_seeds([{"f1": 0.1}, {"f1": 0.2, "auroc": 0.5}])
    assert format_mean_std({"mean": 0.96344, "std": 0.00111}) == "96.34 ± 0.11"


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_equal_metrics_of_the_repeated_examples(ties):
    """Row b of the weights = `classification_metrics` of the data set with example i
    repeated weights[b, i] times (ties in the scores included)."""
    probs, labels = _random_problem(n=60, k=4, seed=3)
    if ties:
        probs = np.round(probs, 1) + 1e-3
        probs /= probs.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    weights = bootstrap_weights(60, 6, rng)
    weights[0] = 0
    weights[0, labels == 2] = 1  # one class only: AUROC/AUPRC undefined
    resampled = weighted_classification_metrics(probs, labels, weights, num_classes=4)
    for b in range(weights.shape[0]):
        index = np.repeat(np.arange(60), weights[b].astype(int))
        expected = classification_metrics(probs[index], labels[index], num_classes=4)
        for key in CLASSIFICATION_KEYS:
            if math.isnan(expected[key]):
                assert math.isnan(resampled[key][b]), (b, key)
            else:
                assert resampled[key][b] == pytest.approx(expected[key], abs=1e-9), (b, key)
    assert math.isnan(resampled["auroc"][0]) and resampled["accuracy"][0] >= 0


def test_bootstrap_weights_draw_whole_clusters():
    clusters = np.array([7, 7, 7, 3, 3, 9, 1, 1, 1, 1])
    weights = bootstrap_weights(10, 200, np.random.default_rng(1), clusters)
    assert weights.shape == (200, 10)
    for c in np.unique(clusters):
        members = weights[:, clusters == c]
        assert (members == members[:, :1]).all()  # a subject's examples always together
    # As many clusters drawn as there are (4), each counted once per drawn example.
    drawn = np.stack([weights[:, np.flatnonzero(clusters == c)[0]] for c in np.unique(clusters)])
    assert (drawn.sum(axis=0) == 4).all()
    plain = bootstrap_weights(10, 200, np.random.default_rng(1))
    assert (plain.sum(axis=1) == 10).all() and not (plain[:, 0] == plain[:, 1]).all()


# --- multi-label (PTB-XL benchmark) ----------------------------------------------------------

from cardioformer_jax.core.metrics import (  # noqa: E402
    FMAX_THRESHOLDS,
    MULTILABEL_KEYS,
    multilabel_metrics,
    per_class_auroc,
    weighted_multilabel_metrics,
)


def _multilabel_problem(n=200, k=6, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.3).astype(np.int64)
    targets[targets.sum(axis=1) == 0, 0] = 1  # the benchmark keeps records with a label
    probs = np.clip(0.45 * targets + 0.6 * rng.random((n, k)), 0, 1)
    return probs, targets


def _fmax_by_hand(probs, targets):
    """The definition of Strodthoff et al. 2020, one threshold at a time in plain Python."""
    best = 0.0
    for t in FMAX_THRESHOLDS:
        precisions, recalls = [], []
        for p, y in zip(probs, targets, strict=True):
            predicted = {k for k in range(len(p)) if p[k] >= t}
            true = {k for k in range(len(y)) if y[k]}
            if predicted:
                precisions.append(len(predicted & true) / len(predicted))
            recalls.append(len(predicted & true) / len(true))
        if precisions:
            pr, rc = np.mean(precisions), np.mean(recalls)
            if pr + rc > 0:
                best = max(best, 2 * pr * rc / (pr + rc))
    return best


def test_multilabel_metrics_agree_with_sklearn_and_the_fmax_definition():
    probs, targets = _multilabel_problem()
    values = multilabel_metrics(probs, targets)
    assert set(values) == set(MULTILABEL_KEYS)
    assert values["auroc"] == pytest.approx(skm.roc_auc_score(targets, probs, average="macro"))
    assert values["auprc"] == pytest.approx(
        skm.average_precision_score(targets, probs, average="macro"))
    assert values["f1"] == pytest.approx(
        skm.f1_score(targets, probs >= 0.5, average="macro", zero_division=0))
    assert values["fmax"] == pytest.approx(_fmax_by_hand(probs, targets))
    assert values["loss"] == pytest.approx(skm.log_loss(targets.ravel(), probs.ravel()),
                                           rel=1e-6)
    np.testing.assert_allclose(per_class_auroc(probs, targets),
                               skm.roc_auc_score(targets, probs, average=None))


def test_multilabel_weights_equal_repeated_examples_and_masks_drop_rows():
    probs, targets = _multilabel_problem(n=80, seed=1)
    counts = np.random.default_rng(2).integers(0, 3, size=80)
    weighted = weighted_multilabel_metrics(probs, targets, counts[None, :].astype(float))
    repeated = multilabel_metrics(np.repeat(probs, counts, axis=0),
                                  np.repeat(targets, counts, axis=0))
    for key in MULTILABEL_KEYS:
        assert weighted[key][0] == pytest.approx(repeated[key]), key
    mask = counts > 0
    assert multilabel_metrics(probs, targets, mask=mask) == pytest.approx(
        multilabel_metrics(probs[mask], targets[mask]))


def test_multilabel_edge_cases():
    probs, targets = _multilabel_problem(n=40)
    perfect = multilabel_metrics(targets.astype(float), targets)
    assert perfect["auroc"] == 1.0 and perfect["fmax"] == 1.0
    targets_one_class_missing = targets.copy()
    targets_one_class_missing[:, 2] = 0
    # A class without positives has no AUROC and is left out of the macro mean.
    expected = np.delete(per_class_auroc(probs, targets_one_class_missing), 2).mean()
    assert multilabel_metrics(probs, targets_one_class_missing)["auroc"] == pytest.approx(
        expected)
    assert all(math.isnan(v) for v in
               multilabel_metrics(np.full_like(probs, np.nan), targets).values())
    with pytest.raises(ValueError, match="0 and 1"):
        multilabel_metrics(probs, targets * 2)
    with pytest.raises(ValueError, match="one shape"):
        multilabel_metrics(probs, targets[:, :3])
