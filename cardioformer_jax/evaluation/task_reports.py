"""Each `core.tasks` task's evaluation numbers, CSV and report (docs/training.md)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from etils import epath
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from cardioformer_jax.core import metrics, paths, tasks
from cardioformer_jax.evaluation import analysis, challenge_report, report_render
from cardioformer_jax.evaluation.markdown import table

if TYPE_CHECKING:
    from cardioformer_jax.evaluation.report import SplitPredictions

META_LEARNER_C = 1.0  # inverse L2 strength of the ensembles' logistic regressions


def _fit(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=META_LEARNER_C, max_iter=2000).fit(x, y)


def _bootstrap(analyse: Callable[..., dict[str, Any]], p: np.ndarray, y: np.ndarray,
               record_ids: np.ndarray, subject_ids: np.ndarray, resamples: int,
               names: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``"bootstrap"`` section: `analyse(probs, truth, clusters)` of examples and records,
    subjects as clusters when all known; sets each of `rows` its ``"auroc_ci"``."""
    subject_ids = np.asarray(subject_ids)
    by_subject = bool((subject_ids >= 0).all())
    _, first = np.unique(record_ids, return_index=True)
    record_p, record_y, _ = metrics.record_level(p, y, record_ids)
    boots = {level: analyse(probs, truth, clusters if by_subject else None)
             for level, probs, truth, clusters in (("segment", p, y, subject_ids),
                                                   ("record", record_p, record_y,
                                                    subject_ids[first]))}
    for row, interval in zip(rows, boots["segment"]["per_class_auroc"], strict=True):
        row["auroc_ci"] = interval
    return {
        "resamples": resamples, "seed": analysis.BOOTSTRAP_SEED,
        "level": analysis.BOOTSTRAP_LEVEL,
        "unit": "subject" if by_subject else "example",
        **{level: b["intervals"] for level, b in boots.items()},
        "redrawn": {level: b["redrawn"] for level, b in boots.items()},
        "too_rare": {level: {names[c]: reason for c, reason in b["too_rare"].items()}
                     for level, b in boots.items()},
    }


class SingleLabel:
    """Softmax over exclusive classes: the paper's report, calibration included."""

    reported: ClassVar[tuple[str, ...]] = analysis.REPORTED_METRICS

    @staticmethod
    def detail(predictions: SplitPredictions, num_classes: int,
               bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
               class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Every number of the report (see `analysis`); with `bootstrap_resamples` > 0 also
        intervals (`_bootstrap`, with ``"per_class_auroc"``: one or None per class)."""
        p, y = predictions.probs, predictions.labels
        out: dict[str, Any] = {
            "num_examples": int(y.size),
            "num_records": int(np.unique(predictions.record_ids).size),
            "num_subjects": int(np.unique(predictions.subject_ids).size),
            "segment": metrics.classification_metrics(p, y, num_classes=num_classes),
            "record": analysis.record_level_metrics(p, y, predictions.record_ids, num_classes),
            "ece": analysis.expected_calibration_error(p, y),
            "reliability": {k: v.tolist() for k, v in analysis.reliability_bins(p, y).items()},
            "confusion": analysis.confusion_matrix(p, y).tolist(),
            "per_class": analysis.per_class_metrics(p, y),
        }
        out.update(analysis.by_subgroup(predictions.sexes, predictions.ages, lambda m: {
            "n": float(m.sum()),
            **metrics.classification_metrics(p[m], y[m], num_classes=num_classes)}))
        if bootstrap_resamples > 0:
            out["bootstrap"] = _bootstrap(
                lambda p, y, clusters: analysis.bootstrap_analysis(
                    p, y, num_classes, clusters=clusters, num_resamples=bootstrap_resamples),
                p, y, predictions.record_ids, predictions.subject_ids, bootstrap_resamples,
                list(map(str, range(num_classes)) if class_names is None else class_names),
                out["per_class"])
            out["bootstrap"]["per_class_auroc"] = [row["auroc_ci"] for row in out["per_class"]]
        return out

    @staticmethod
    def write_predictions_csv(predictions: SplitPredictions, class_names: Sequence[str],
                              path: str | os.PathLike) -> epath.Path:
        """One row per example: ids, true class (name and index), one probability column per
        class (named by the class) and the predicted (argmax) class. Local or a URL."""
        path = paths.as_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        predicted = predictions.probs.argmax(axis=1)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["record_id", "subject_id", "segment", "label", "label_index",
                         *class_names, "predicted", "predicted_index"])
        for i in range(predictions.labels.shape[0]):
            label, guess = int(predictions.labels[i]), int(predicted[i])
            writer.writerow([predictions.record_ids[i], int(predictions.subject_ids[i]),
                             int(predictions.segments[i]), class_names[label], label,
                             *(repr(float(v)) for v in predictions.probs[i]),
                             class_names[guess], guess])
        path.write_text(buffer.getvalue())
        return path

    def intervals(self, probs: np.ndarray, labels: np.ndarray, num_classes: int,
                  clusters: np.ndarray | None, num_resamples: int) -> dict[str, Any]:
        return analysis.bootstrap_intervals(probs, labels, num_classes, clusters=clusters,
                                            num_resamples=num_resamples)

    def stacked(self, x_val: np.ndarray, val_labels: np.ndarray, x_test: np.ndarray,
                test_probs: Sequence[np.ndarray]) -> np.ndarray:
        """One multinomial logistic regression over the classes (a class absent from
        validation gets probability 0)."""
        learner = _fit(x_val, val_labels)
        out = np.zeros((x_test.shape[0], test_probs[0].shape[1]))
        out[:, learner.classes_.astype(int)] = learner.predict_proba(x_test)
        return out

    def dataset_name(self, config: Any, data: Mapping[str, Any]) -> str:
        return config.dataset.name

    def seed_results(self, per_seed: Mapping[int, Mapping[str, float]],
                     evaluation: Mapping[str, Any]) -> dict[str, Any]:
        return {"seed_summary": analysis.seed_summary(
            per_seed, evaluation["dataset"],
            compare_with_paper=evaluation["paper_comparison"]["comparable"])}

    def external_view(self, probs: np.ndarray, targets: np.ndarray,
                      expressible: np.ndarray) -> dict[str, Any]:
        """On another dataset's multi-hot truth: the examples with one expressible class."""
        single = targets[:, expressible].sum(axis=1) == 1
        if not single.any():
            return {}
        return {"single_label": {
            "n": int(single.sum()),
            "metrics": metrics.classification_metrics(
                probs[single], targets[single].argmax(axis=1), num_classes=probs.shape[1])}}

    def write_artefacts(self, evaluation: Mapping[str, Any], predictions: SplitPredictions,
                        workdir: epath.Path, files: Mapping[str, epath.Path]) -> None:
        """report.md with its plots, predictions.csv and MODEL_CARD.md (`files`)."""
        classes = evaluation["classes"]
        plots = report_render.write_plots(predictions, evaluation["detail"], classes,
                                          workdir / report_render.PLOTS_DIR,
                                          evaluation["split"])
        files["report"].write_text(report_render.render_report(evaluation, classes, plots,
                                                               workdir))
        self.write_predictions_csv(predictions, classes, files["predictions"])
        files["card"].write_text(report_render.render_model_card(evaluation, classes))


class MultiLabel:
    """A sigmoid per class (the PTB-XL benchmark, cinc2021, external validation)."""

    reported: ClassVar[tuple[str, ...]] = report_render.MULTILABEL_REPORTED

    @staticmethod
    def bootstrap_analysis(probs: np.ndarray, targets: np.ndarray, *,
                           clusters: np.ndarray | None = None,
                           num_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
                           seed: int = analysis.BOOTSTRAP_SEED,
                           level: float = analysis.BOOTSTRAP_LEVEL) -> dict[str, Any]:
        """Percentile bootstrap intervals of `metrics.MULTILABEL_KEYS` and of each class's
        AUROC; the result is that of `analysis.bootstrap_analysis`."""
        probs = np.asarray(probs, np.float64)
        targets = np.asarray(targets, np.int64)

        def weighted(weights: np.ndarray, classes: np.ndarray, per_class: bool
                     ) -> dict[str, np.ndarray]:
            return metrics.weighted_multilabel_metrics(probs, targets, weights,
                                                       classes=classes, per_class=per_class)

        return analysis.resampled_analysis(
            targets, weighted, clusters=clusters, num_resamples=num_resamples, seed=seed,
            level=level, block=max(1, 2_000_000 // max(1, probs.size)))

    @staticmethod
    def analyse(probs: np.ndarray, targets: np.ndarray, expressible: np.ndarray, *,
                record_ids: np.ndarray, subject_ids: np.ndarray, ages: np.ndarray,
                sexes: np.ndarray, bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
                class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Every number of a multi-label report (docs/training.md, "Multi-label runs").

        `targets` ``(N, K)`` 0/1 (ignored where not `expressible` ``(K,)``); ids and demographics
        ``(N,)`` (-1 unknown); `class_names` name the too-rare classes (default: the indices).
        """
        probs = np.asarray(probs, np.float64)
        targets = np.asarray(targets, np.int64)
        expressible = np.asarray(expressible, bool)
        if not expressible.any():
            raise ValueError("none of the model's classes can be expressed by the evaluated data")
        if class_names is None:
            class_names = [str(c) for c in range(probs.shape[1])]
        if len(class_names) != probs.shape[1]:
            raise ValueError(f"class_names has {len(class_names)} names for "
                             f"{probs.shape[1]} classes")
        p, y = probs[:, expressible], targets[:, expressible]
        record_probs, record_targets, ids = metrics.record_level(p, y, np.asarray(record_ids))
        aurocs = metrics.per_class_auroc(probs, np.where(expressible, targets, 0))
        support = targets.sum(axis=0)
        per_class = [
            {"expressible": True, "support": int(support[k]), "auroc": float(aurocs[k]),
             "ap": float(average_precision_score(targets[:, k], probs[:, k]))
             if support[k] else math.nan} if expressible[k] else
            {"expressible": False, "support": None, "auroc": math.nan, "ap": math.nan}
            for k in range(probs.shape[1])]
        out: dict[str, Any] = {
            "num_examples": int(p.shape[0]),
            "num_records": int(ids.size),
            "num_subjects": int(np.unique(subject_ids).size),
            "segment": metrics.multilabel_metrics(p, y),
            "record": {"n": float(ids.size),
                       **metrics.multilabel_metrics(record_probs, record_targets)},
            "per_class": per_class,
        }
        out.update(analysis.by_subgroup(sexes, ages, lambda m: {
            "n": float(m.sum()), **metrics.multilabel_metrics(p[m], y[m])}))
        if bootstrap_resamples > 0:
            columns = np.flatnonzero(expressible)  # model class of each evaluated column
            out["bootstrap"] = _bootstrap(
                lambda p, y, clusters: MultiLabel.bootstrap_analysis(
                    p, y, clusters=clusters, num_resamples=bootstrap_resamples),
                p, y, np.asarray(record_ids), subject_ids, bootstrap_resamples,
                [class_names[c] for c in columns], [per_class[c] for c in columns])
        return out

    @staticmethod
    def write_predictions_csv(path: str | os.PathLike, class_names: Sequence[str],
                              probs: np.ndarray, targets: np.ndarray, expressible: np.ndarray,
                              record_ids: np.ndarray, subject_ids: np.ndarray,
                              segments: np.ndarray, sources: np.ndarray | None = None
                              ) -> epath.Path:
        """One row per example: ids[, ``source``], ``true_<class>`` (0/1, empty where not
        expressible) and ``p_<class>`` per class. Local or a URL."""
        path = paths.as_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        source_column = ["source"] if sources is not None else []
        writer.writerow(["record_id", "subject_id", "segment", *source_column,
                         *(f"true_{c}" for c in class_names), *(f"p_{c}" for c in class_names)])
        for i in range(probs.shape[0]):
            truth = [int(t) if e else "" for t, e in zip(targets[i], expressible, strict=True)]
            source = [sources[i]] if sources is not None else []
            writer.writerow([record_ids[i], int(subject_ids[i]), int(segments[i]), *source,
                             *truth, *(repr(float(v)) for v in probs[i])])
        path.write_text(buffer.getvalue())
        return path

    def detail(self, predictions: SplitPredictions, num_classes: int,
               bootstrap_resamples: int, class_names: Sequence[str]) -> dict[str, Any]:
        p = predictions
        return self.analyse(p.probs, p.labels, np.ones(len(class_names), bool),
                            record_ids=p.record_ids, subject_ids=p.subject_ids, ages=p.ages,
                            sexes=p.sexes, bootstrap_resamples=bootstrap_resamples,
                            class_names=list(class_names))

    def intervals(self, probs: np.ndarray, labels: np.ndarray, num_classes: int,
                  clusters: np.ndarray | None, num_resamples: int) -> dict[str, Any]:
        """Percentile bootstrap intervals of `metrics.MULTILABEL_KEYS` (`bootstrap_analysis`)."""
        return self.bootstrap_analysis(probs, labels, clusters=clusters,
                                       num_resamples=num_resamples)["intervals"]

    def stacked(self, x_val: np.ndarray, val_labels: np.ndarray, x_test: np.ndarray,
                test_probs: Sequence[np.ndarray]) -> np.ndarray:
        """One logistic regression per class; a class with a single value in validation
        keeps the members' mean."""
        out = np.mean(test_probs, axis=0).copy()
        for c in range(out.shape[1]):
            y = val_labels[:, c]
            if y.min() != y.max():
                out[:, c] = _fit(x_val, y).predict_proba(x_test)[:, 1]
        return out

    def dataset_name(self, config: Any, data: Mapping[str, Any]) -> str:
        return f"{config.dataset.name}/{data['builder_config'] or 'default'}"

    def seed_results(self, per_seed: Mapping[int, Mapping[str, float]],
                     evaluation: Mapping[str, Any]) -> dict[str, Any]:
        return {"seed_aggregate": metrics.aggregate_seeds(list(per_seed.values()))}

    def external_view(self, probs: np.ndarray, targets: np.ndarray,
                      expressible: np.ndarray) -> dict[str, Any]:
        return {}

    def write_artefacts(self, evaluation: Mapping[str, Any], predictions: SplitPredictions,
                        workdir: epath.Path, files: Mapping[str, epath.Path]) -> None:
        """report.md (the Challenge's section for cinc2021, the seeds' mean ± std),
        predictions.csv and MODEL_CARD.md (`files`)."""
        text = report_render.render_multilabel_report(
            evaluation, f"Evaluation of `{workdir}` ({evaluation['split']} split)")
        if "challenge" in evaluation:
            text += "\n" + "\n".join(challenge_report.render(evaluation["challenge"]))
        if "seed_aggregate" in evaluation:
            aggregate = evaluation["seed_aggregate"]
            text += "\n" + "\n".join(
                [f"## Mean ± std over {len(evaluation['seeds'])} seeds "
                 f"({evaluation['split']})", "",
                 *table(["metric", "mean ± std (%)"],
                        [[m, metrics.format_mean_std(aggregate[m])] for m in self.reported]),
                 ""])
        files["report"].write_text(text)
        p = predictions
        self.write_predictions_csv(files["predictions"], evaluation["classes"], p.probs,
                                   p.labels, np.ones(len(evaluation["classes"]), bool),
                                   p.record_ids, p.subject_ids, p.segments)
        files["card"].write_text(report_render.render_multilabel_card(
            evaluation, files["report"].name))


SINGLE_LABEL, MULTI_LABEL = SingleLabel(), MultiLabel()
REPORTS = {tasks.SINGLE_LABEL: SINGLE_LABEL, tasks.MULTI_LABEL: MULTI_LABEL}


def of(task: tasks.Task) -> SingleLabel | MultiLabel:
    """The report implementation of `task`."""
    return REPORTS[task]
