"""PTB Diagnostic ECG Database v1.0.0 as ArrayRecord: heartbeats (300, 15) (docs/data.md)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import wfdb

from tfds_builders import common, labels
from tfds_builders.processing import RecordTask

_PATIENT_DIR = re.compile(r"^patient(\d+)$")


class Builder(common.EcgBuilder):
    """PTB: healthy control vs myocardial infarction, one sample per heartbeat."""

    BUILDER_CONFIGS = [
        common.EcgConfig(
            name="default",
            description=(
                "As the reference code runs it: subjects split per class in "
                "ascending patient order 55/15/30 (bounds 0.55, 0.7)."
            ),
            split_bounds=(0.55, 0.7),
        ),
        common.EcgConfig(
            name="split_60_20_20",
            description="As 'default' with the 60/20/20 split the reference README states.",
            split_bounds=(0.6, 0.8),
        ),
        common.EcgConfig(
            name="random_split",
            description="As 'default', but subjects shuffled per class with seed 0 first.",
            split_method="random",
            split_bounds=(0.55, 0.7),
            split_seed=0,
        ),
        common.EcgConfig(
            name="reference_beats",
            description=(
                "As 'default', with heartbeats cut by the reference code's rule instead of "
                "this port's (docs/data.md, PTB), to reproduce its sample counts."
            ),
            split_bounds=(0.55, 0.7),
            beat_rule="reference",
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    The PTB Diagnostic ECG Database is open access. Download and unzip
    https://physionet.org/static/published-projects/ptbdb/ptb-diagnostic-ecg-database-1.0.0.zip
    and pass the unpacked folder (the one holding patient001/ ... patient294/), or its
    parent, as manual_dir. Without manual_dir the zip is downloaded (about 1.7 GB).
    """
    HOMEPAGE = "https://physionet.org/content/ptbdb/1.0.0/"
    DOWNLOAD_URL = (
        "https://physionet.org/static/published-projects/ptbdb/"
        "ptb-diagnostic-ecg-database-1.0.0.zip"
    )
    SOURCE_MARKERS = ("patientNNN/*.hea",)
    CLASS_NAMES = labels.PTB_CLASSES
    SIGNAL_SHAPE = (300, 15)
    LEAD_NAMES = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6",
                  "vx", "vy", "vz")
    MODE = "beats"
    SOURCE_FS = 1000.0

    def _is_source_root(self, path: Path) -> bool:
        return path.is_dir() and any(path.glob("patient*/*.hea"))

    def _index(self, root: Path) -> common.SourceIndex:
        skipped: collections.Counter = collections.Counter()
        found = []  # (patient, record_id, label, age, sex)
        # One pass over the patient folders; headers only (signals are read by workers).
        for header_path in sorted(root.glob("patient*/*.hea")):
            match = _PATIENT_DIR.match(header_path.parent.name)
            if match is None:
                skipped["bad_metadata_row"] += 1
                continue
            record_path = header_path.with_suffix("")
            try:
                header = wfdb.rdheader(str(record_path))
            except Exception:  # wfdb raises assorted types on malformed headers
                skipped["bad_header"] += 1
                continue
            comments = header.comments or []
            label = labels.ptb_label(comments)
            if label is None:
                skipped["other_reason"] += 1
                continue
            age, sex = labels.ptb_age_sex(comments)
            record_id = record_path.relative_to(root).as_posix()
            found.append((int(match.group(1)), record_id, label, age, sex))

        by_subject: dict[int, list[int | None]] = collections.defaultdict(list)
        for patient, _, label, _, _ in found:
            by_subject[patient].append(label)
        # Not in the reference (which assumes one reason per patient): a patient whose records
        # disagree would have no class to be split by, so it is dropped and counted.
        subject_classes = labels.consistent_subject_labels(by_subject)
        tasks = []
        for patient, record_id, label, age, sex in found:
            if patient not in subject_classes:
                skipped["subject_label_conflict"] += 1
                continue
            tasks.append(
                RecordTask(
                    path=str(root / record_id),
                    record_id=record_id,
                    subject_id=patient,
                    label=label,
                    age=age,
                    sex=sex,
                )
            )
        return common.SourceIndex(tasks=tasks, subject_classes=subject_classes, skipped=skipped)
