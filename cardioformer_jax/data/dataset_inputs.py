"""What a trained model expects from a raw WFDB record of any sampling rate, per dataset,
and how to make it (docs/model.md, "Input"; docs/data.md)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from cardioformer_jax.core import tasks
from cardioformer_jax.data import preprocessing
from cardioformer_jax.data.preprocessing import RecordError, match_leads  # noqa: F401 (API)
from tfds_builders import labels

_LEADS_12 = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")

LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12": _LEADS_12,
    "6": ("I", "II", "III", "AVR", "AVL", "AVF"),
    "4": ("I", "II", "III", "V2"),
    "3": ("I", "II", "V2"),
    "2": ("I", "II"),
}
"""The reduced-lead settings of the PhysioNet/CinC Challenge 2021 (``config.dataset.leads``):
12, 6 (the limb leads), 4, 3 and 2 leads, in the dataset's lead order."""


def lead_columns(setting: str, lead_names: tuple[str, ...]) -> tuple[int, ...]:
    """The channels of `lead_names` (matched ignoring case) that a `LEAD_SETS` setting keeps,
    in the dataset's order; every channel for ``""``. ValueError for an unknown setting or a
    lead the dataset lacks."""
    if not setting:
        return tuple(range(len(lead_names)))
    if setting not in LEAD_SETS:
        raise ValueError(f"dataset.leads={setting!r} is not a lead setting; use one of "
                         f"{', '.join(repr(k) for k in LEAD_SETS)} or '' (every lead)")
    upper = [name.upper() for name in lead_names]
    missing = [lead for lead in LEAD_SETS[setting] if lead not in upper]
    if missing:
        raise ValueError(f"dataset.leads={setting!r} needs leads {missing} that the dataset "
                         f"does not have (it has {list(lead_names)})")
    return tuple(sorted(upper.index(lead) for lead in LEAD_SETS[setting]))


@dataclasses.dataclass(frozen=True)
class RecordPreparation:
    """The input contract of a dataset's models: `lead_names` and `class_names` in the order
    of the model's channels and outputs; `mode` ``"segments"`` (windows) or ``"beats"``
    (heartbeats cut by `beat_rule`) of `sample_length` samples at `sample_rate` Hz; `task`,
    what the outputs mean (one softmax, or per-class sigmoids)."""

    dataset: str
    lead_names: tuple[str, ...]
    class_names: tuple[str, ...]
    mode: str
    sample_length: int
    sample_rate: int = preprocessing.TARGET_FS
    beat_rule: str = "port"
    task: tasks.Task = tasks.SINGLE_LABEL

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the preparation (for exported models)."""
        steps = [
            "read the WFDB record in physical units",
            f"select and order the leads {list(self.lead_names)} (names match ignoring case)",
            f"resample every lead to {self.sample_rate} Hz by linear interpolation "
            f"(n samples at fs -> floor(n / fs * {self.sample_rate}) on a grid spanning the "
            "same first and last sample)",
            "standardise each lead over the whole record (mean 0, population std 1; a "
            "constant lead becomes zeros)",
        ]
        if self.mode == "segments":
            steps.append(f"cut consecutive non-overlapping windows of {self.sample_length} "
                         "samples (a shorter remainder is dropped)")
        elif self.beat_rule == "port":
            steps.append(
                "detect R peaks per lead (neurokit2 ecg_clean + ecg_peaks, method 'neurokit', "
                f"at {self.sample_rate} Hz); RR = median over leads of each lead's median RR "
                f"(records with RR > {preprocessing.MAX_RR} samples are refused); as many "
                "beats as the median per-lead peak count; beat k = "
                "[R_k - RR//2, R_k - RR//2 + RR) with RR rounded and R_k the median over the "
                "leads that have a k-th peak, clipped to the record and zero-padded equally "
                f"on both sides to {self.sample_length} samples")
        else:
            steps.append(
                "detect R peaks per lead (neurokit2 ecg_clean + ecg_peaks, method 'neurokit', "
                f"at {self.sample_rate} Hz); RR = median, over the leads with two or more "
                "peaks, of each lead's median RR (records with RR > "
                f"{preprocessing.MAX_RR} samples are refused); as many beats as the lead with "
                "the most peaks; beat k = [int(R_k) - int(RR/2), int(R_k) + int(RR/2)) with "
                "R_k the median over the leads that have a k-th peak, clipped to the record "
                f"and zero-padded equally on both sides to {self.sample_length} samples")
        steps.append("standardise each sample per lead (mean 0, population std 1; a constant "
                     "lead becomes zeros), float32")
        steps.append("class probabilities of a record: softmax of the logits, averaged over "
                     "its samples")
        return {
            "dataset": self.dataset,
            "lead_names": list(self.lead_names),
            "class_names": list(self.class_names),
            "mode": self.mode,
            "sample_length": self.sample_length,
            "sample_rate_hz": self.sample_rate,
            "multilabel": self.task.multilabel,
            **({"beat_rule": self.beat_rule} if self.mode == "beats" else {}),
            "standardise_per_record": True,
            "standardise_per_sample": True,
            "steps": steps,
        }


RECORD_PREPARATIONS: dict[str, RecordPreparation] = {
    "ptbxl": RecordPreparation("ptbxl", _LEADS_12, labels.PTBXL_CLASSES, "segments",
                               preprocessing.SEGMENT_LENGTH),
    "mimic_iv_ecg": RecordPreparation(
        "mimic_iv_ecg", ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5",
                         "V6"), labels.MIMIC_CLASSES, "segments", preprocessing.SEGMENT_LENGTH),
    "ptb": RecordPreparation("ptb", (*(lead.lower() for lead in _LEADS_12), "vx", "vy", "vz"),
                             labels.PTB_CLASSES, "beats", preprocessing.BEAT_LENGTH),
    # Single-label view: the PTB-XL superclasses (`label`); its multi-label configs train
    # on the Challenge's scored classes (`record_preparation`).
    "cinc2021": RecordPreparation("cinc2021", _LEADS_12, labels.PTBXL_CLASSES, "segments",
                                  preprocessing.SEGMENT_LENGTH),
}


def record_preparation(dataset: str, builder_config: str = "", *, leads: str = "",
                       task: tasks.Task = tasks.SINGLE_LABEL) -> RecordPreparation:
    """The `RecordPreparation` of a dataset trained on `builder_config` (beat rule, or rate,
    window and multi-label classes), `leads` (a `LEAD_SETS` setting) and `task` (multi-label
    cinc2021: the Challenge's scored classes); ValueError for an unknown dataset."""
    if dataset not in RECORD_PREPARATIONS:
        raise ValueError(f"no input specification for dataset {dataset!r}; known: "
                         f"{', '.join(RECORD_PREPARATIONS)}")
    spec = _dataset_spec(dataset, builder_config)
    if dataset == "cinc2021" and task == tasks.MULTI_LABEL:
        from cardioformer_jax.data import datasets

        names = datasets.builder_class("cinc2021").scored_classes()[0]
        spec = dataclasses.replace(spec, class_names=names, task=task)
    if leads:
        columns = lead_columns(leads, spec.lead_names)
        spec = dataclasses.replace(spec, lead_names=tuple(spec.lead_names[c] for c in columns))
    return spec


def _dataset_spec(dataset: str, builder_config: str) -> RecordPreparation:
    spec = RECORD_PREPARATIONS[dataset]
    if not builder_config:
        return spec
    from cardioformer_jax.data import datasets  # TFDS: only needed for a named config

    configs = {c.name: c for c in datasets.builder_class(dataset).BUILDER_CONFIGS}
    # A derived config (`common.derive_config`: "reference_beats-b0.6-0.8") cuts as its base.
    base = configs.get(builder_config.split("-")[0])
    if base is None:
        return spec
    if spec.mode == "beats":
        return dataclasses.replace(spec, beat_rule=base.beat_rule)
    spec = dataclasses.replace(spec, sample_rate=base.sample_rate,
                               sample_length=base.window_length)
    task_classes = labels.PTBXL_TASK_CLASSES.get(base.label_scheme)
    if dataset == "ptbxl" and task_classes is not None:
        spec = dataclasses.replace(spec, class_names=task_classes,
                                   task=tasks.MULTI_LABEL)
    return spec


@dataclasses.dataclass(frozen=True)
class PreparedRecord:
    """A record's model inputs ``(k, sample_length, len(lead_names))`` float32, its rate before
    resampling, the leads the model does not use, and age and sex from the header's comments
    (-1: unknown)."""

    samples: np.ndarray
    source_fs: float
    ignored_leads: tuple[str, ...]
    age: float = -1.0
    sex: int = -1


def prepare_record(path: str | os.PathLike[str], spec: RecordPreparation) -> PreparedRecord:
    """A raw WFDB record -> the model's inputs; `RecordError` when it cannot be read or used."""
    min_seconds = spec.sample_length / spec.sample_rate if spec.mode == "segments" else 1.0
    record = preprocessing.read_record(path, min_seconds=min_seconds)
    columns = match_leads(record.lead_names, spec.lead_names, record.path)
    try:
        prepared = preprocessing.prepare_signal(record.signal[:, columns], record.fs,
                                                spec.sample_rate)
    except ValueError as err:  # too few samples for the resampling
        raise RecordError(record.path, "too_short", str(err)) from err
    if spec.mode == "segments":
        samples = preprocessing.segment(prepared, spec.sample_length)
    else:
        samples = preprocessing.heartbeats(prepared, path=record.path,
                                           beat_length=spec.sample_length, rule=spec.beat_rule)
    if len(samples) == 0:
        raise RecordError(record.path, "too_short",
                          f"no complete sample of {spec.sample_length} samples at "
                          f"{spec.sample_rate} Hz")
    ignored = tuple(name for i, name in enumerate(record.lead_names) if i not in set(columns))
    # docs/model.md: the input pipeline standardises every sample again right before the model.
    age, sex = labels.ptb_age_sex(record.comments)
    return PreparedRecord(samples=preprocessing.standardize(samples), source_fs=record.fs,
                          ignored_leads=ignored, age=age, sex=sex)
