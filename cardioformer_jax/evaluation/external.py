"""External validation on another dataset (docs/training.md, "External validation")."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from etils import epath

from cardioformer_jax.core import logging_utils, metrics, paths
from cardioformer_jax.core import progress as progress_lib
from cardioformer_jax.data import datasets, preprocessing
from cardioformer_jax.evaluation import analysis, inference, report, report_render, task_reports
from cardioformer_jax.training import train
from tfds_builders import labels as label_rules

# The cinc2021 builder's multi-hot PTB-XL superclasses (its SNOMED mapping, docs/data.md).
SUPERCLASS_FEATURE = "superclasses"
# Metadata key listing the superclasses a dataset's label coding cannot express.
UNEXPRESSED_KEY = "superclasses_unexpressible"


@dataclasses.dataclass(frozen=True)
class ClassMapping:
    """How an evaluated dataset's labels become the model's multi-hot truth."""

    # (K,) 0/1 in the model's class order, or None for an example without usable truth.
    targets: Callable[[Mapping[str, Any]], np.ndarray | None]
    expressible: np.ndarray  # the model classes the dataset can express
    description: str  # which rule applies


def parse_dataset(value: str) -> tuple[str, str | None]:
    """``NAME[/config]`` -> (name, config or None); ValueError for an unknown name."""
    name, _, config = value.strip().partition("/")
    if name not in datasets.DATASETS:
        raise ValueError(f"unknown dataset {name!r} in --dataset={value!r}; choose one of "
                         f"{', '.join(datasets.DATASETS)}")
    return name, config or None


def class_mapping(model_classes: tuple[str, ...], builder: Any) -> ClassMapping:
    """The `ClassMapping` from a built dataset's labels to `model_classes`; ValueError when
    the dataset expresses none of the model's classes."""
    features = builder.info.features
    metadata = builder.info.metadata or {}
    k = len(model_classes)
    names = tuple(metadata.get("multilabel_names") or ())
    if "labels" in features and names == tuple(model_classes):
        return ClassMapping(lambda ex: np.asarray(ex["labels"], np.int64), np.ones(k, bool),
                            "the same classes")
    if set(model_classes) == set(label_rules.PTBXL_CLASSES):
        order = [label_rules.PTBXL_CLASSES.index(c) for c in model_classes]
        if SUPERCLASS_FEATURE in features:
            missing = set(metadata.get(UNEXPRESSED_KEY) or ())
            expressible = np.array([c not in missing for c in model_classes])
            return ClassMapping(
                lambda ex: np.asarray(ex[SUPERCLASS_FEATURE], np.int64)[order], expressible,
                "SNOMED CT codes mapped to the PTB-XL superclasses (docs/data.md)")
        if "labels" in features and set(names) == set(label_rules.PTBXL_CLASSES):
            columns = [names.index(c) for c in model_classes]
            return ClassMapping(lambda ex: np.asarray(ex["labels"], np.int64)[columns],
                                np.ones(k, bool), "multi-hot PTB-XL superclasses")
        label_names = tuple(features["label"].names)
        if set(label_names) == set(label_rules.PTBXL_CLASSES):
            def one_hot(ex: Mapping[str, Any]) -> np.ndarray | None:
                label = int(ex["label"])
                if label < 0:
                    return None
                hot = np.zeros(k, np.int64)
                hot[model_classes.index(label_names[label])] = 1
                return hot
            return ClassMapping(one_hot, np.ones(k, bool),
                                "single-label PTB-XL superclass as one-hot truth")
    raise ValueError(
        f"no mapping from the dataset's labels ({names or features['label'].names}) to the "
        f"model's classes {list(model_classes)}: external validation maps identical class "
        "lists, or the five PTB-XL superclasses")


def _source_geometry(builder: Any, name: str) -> tuple[float, tuple[str, ...]]:
    """(sampling rate in Hz, lead names in channel order) of a built dataset's examples."""
    summary = (builder.info.metadata or {}).get("config") or {}
    cls = datasets.builder_class(name)
    rate = (float(summary.get("sample_rate", preprocessing.TARGET_FS))
            if cls.MODE == "segments" else float(preprocessing.TARGET_FS))
    return rate, tuple(cls.LEAD_NAMES)


def _counts(records: Mapping[str, set[str]]) -> dict[str, int]:
    return {database: len(ids) for database, ids in sorted(records.items())}


def model_windows(signal: np.ndarray, columns: np.ndarray, source_rate: float,
                  target_rate: float, length: int) -> np.ndarray:
    """One example ``(T, C)`` -> model inputs ``(w, length, C')``: leads picked by `columns`,
    resampled to `target_rate`, cut into whole windows, standardised per lead."""
    x = np.asarray(signal, np.float64)[:, columns]
    if not math.isclose(source_rate, target_rate):
        x = preprocessing.resample_linear(x, source_rate, target_rate)
    windows = preprocessing.segment(x, length)
    return preprocessing.standardize(windows) if len(windows) else windows


def evaluate_external(workdir: str | os.PathLike, dataset: str, data_dir: str, *,
                      split: str = train.TEST_SPLIT, seed: int | None = None,
                      bootstrap_resamples: int = analysis.BOOTSTRAP_RESAMPLES,
                      batch_size: int = inference.DEFAULT_BATCH_SIZE,
                      progress: bool = True) -> dict[str, Any]:
    """Evaluates `workdir` on `dataset` (``NAME[/config]``); writes the reports, returns JSON."""
    name, config_name = parse_dataset(dataset)
    evaluated_on = f"{name}/{config_name or datasets.DEFAULT_CONFIG}"
    model = inference.load(workdir, seed=seed)
    builder = datasets.load_builder(name, data_dir, config_name)
    if split not in builder.info.splits:
        raise ValueError(f"{evaluated_on} has no split {split!r} (it has "
                         f"{sorted(builder.info.splits)})")
    spec = model.spec
    mapping = class_mapping(tuple(spec.class_names), builder)
    source_rate, source_leads = _source_geometry(builder, name)
    columns = preprocessing.match_leads(source_leads, spec.lead_names, evaluated_on)
    length = model.input_shape[0]
    source = datasets.data_source(name, data_dir, split, config_name)
    trained_on = datasets.source_databases(model.config.dataset.name)
    evaluated_databases = datasets.source_databases(name)
    if set(evaluated_databases) <= set(trained_on):
        raise ValueError(
            f"{name} holds only records of {', '.join(evaluated_databases)}, which the run "
            f"was trained on ({model.config.dataset.name}): that is not external validation; "
            "evaluate the run on its own test split instead (no --dataset)")
    default_database = evaluated_databases[0] if len(evaluated_databases) == 1 else "unknown"

    probs: list[np.ndarray] = []
    rows: list[tuple[Any, ...]] = []  # per window: truth, record, subject, age, sex, segment, db
    skipped: collections.Counter = collections.Counter()
    excluded: dict[str, set[str]] = collections.defaultdict(set)  # database -> record ids
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            n = sum(len(p) for p in pending)
            extra = model.tabular_inputs(n, np.asarray([r[3] for r in rows[-n:]]),
                                         np.asarray([r[4] for r in rows[-n:]]))
            probs.append(model.probabilities(np.concatenate(pending), batch_size, extra))
            pending.clear()

    for index in progress_lib.track(range(len(source)), len(source), f"{name} {split}",
                                    "examples", enabled=progress, mininterval=2.0):
        example = source[index]
        # The cinc2021 builder's source_database feature, else the dataset's only database.
        database = report.as_text(example.get("source_database", default_database))
        if database in trained_on:
            excluded[database].add(report.as_text(example["record_id"]))
            continue
        truth = mapping.targets(example)
        if truth is None:
            skipped["no label the model's classes can express"] += 1
            continue
        windows = model_windows(example["signal"], columns, source_rate, spec.sample_rate,
                                length)
        if len(windows) == 0:
            skipped[f"shorter than the model's {length / spec.sample_rate:g} s input"] += 1
            continue
        first = int(example.get("segment", 0)) * len(windows)
        rows += [(truth, report.as_text(example["record_id"]), int(example.get("subject_id", -1)),
                  float(example.get("age", -1.0)), int(example.get("sex", -1)), first + w,
                  database) for w in range(len(windows))]
        pending.append(windows)
        if sum(len(p) for p in pending) >= 16 * batch_size:
            flush()
    flush()
    if not rows:
        raise ValueError(f"no example of {evaluated_on} {split} could be "
                         f"evaluated: {dict(skipped)}; records of the training databases "
                         f"left out: {_counts(excluded)}")
    targets, record_ids, subject_ids, ages, sexes, segments, databases = zip(*rows, strict=True)
    p = np.concatenate(probs).astype(np.float64)
    y = np.stack(targets)
    record_ids_arr = np.asarray(record_ids, dtype=object)
    subjects = np.asarray(subject_ids, np.int64)
    detail = task_reports.MULTI_LABEL.analyse(
        p, y, mapping.expressible, record_ids=record_ids_arr, subject_ids=subjects,
        ages=np.asarray(ages), sexes=np.asarray(sexes), bootstrap_resamples=bootstrap_resamples,
        class_names=list(spec.class_names))
    database_arr = np.asarray(databases, dtype=object)
    detail["by_source"] = by_source(p, y, mapping.expressible, record_ids_arr, database_arr)

    report_path, json_path, predictions_path, card_path = report.split_files(
        external_dir(workdir, name, config_name), split)
    evaluation = report.evaluation_head(
        workdir, model, split, evaluated_on, detail, predictions_path,
        external={
            "trained_on": f"{model.config.dataset.name}/"
                          f"{model.config.dataset.builder_config or datasets.DEFAULT_CONFIG}",
            "evaluated_on": evaluated_on,
            "mapping": mapping.description,
            "expressible": mapping.expressible.tolist(),
            "input": {"source_rate_hz": source_rate, "model_rate_hz": spec.sample_rate,
                      "model_window": length, "leads": list(spec.lead_names)},
            "skipped": dict(skipped),
            "training_databases": list(trained_on),
            "excluded_training_records": _counts(excluded),
            "evaluated_records_by_source": {
                db: v["records"] for db, v in detail["by_source"].items()},
        },
        data={"name": name, "builder_config": config_name,
              "synthetic": bool((builder.info.metadata or {}).get("synthetic"))})
    evaluation.update(task_reports.of(spec.task).external_view(p, y, mapping.expressible))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report_render.render_multilabel_report(
        evaluation, f"External validation of `{evaluation['workdir']}` on "
                    f"{evaluation['dataset']} ({split} split)"))
    task_reports.MULTI_LABEL.write_predictions_csv(
        predictions_path, spec.class_names, p, y, mapping.expressible, record_ids_arr, subjects,
        np.asarray(segments), sources=database_arr)
    card_path.write_text(report_render.render_multilabel_card(evaluation, report_path.name))
    logging_utils.write_json(json_path, evaluation)
    evaluation["report_path"] = str(report_path)
    return evaluation


def by_source(probs: np.ndarray, targets: np.ndarray, expressible: np.ndarray,
              record_ids: np.ndarray, databases: np.ndarray) -> dict[str, dict[str, Any]]:
    """Example- and record-level multi-label metrics of each source database (sorted)."""
    p, y = probs[:, expressible], targets[:, expressible]
    out: dict[str, dict[str, Any]] = {}
    for database in sorted(set(databases.tolist())):
        mask = databases == database
        record_probs, record_targets, ids = metrics.record_level(p[mask], y[mask],
                                                                 record_ids[mask])
        out[database] = {"examples": int(mask.sum()), "records": int(ids.size),
                         "segment": metrics.multilabel_metrics(p[mask], y[mask]),
                         "record": metrics.multilabel_metrics(record_probs, record_targets)}
    return out


def external_dir(workdir: str | os.PathLike, name: str, config: str | None) -> epath.Path:
    """Where the external evaluation of `workdir` on dataset `name/config` is written."""
    return paths.resolve_path(workdir) / f"external_{name}-{config or datasets.DEFAULT_CONFIG}"
