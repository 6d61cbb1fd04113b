"""MIMIC-IV-ECG v1.0 as ArrayRecord: 1 s samples (250, 12), four rhythm classes (docs/data.md)."""

from __future__ import annotations

import collections
from pathlib import Path

from tfds_builders import common, labels
from tfds_builders.processing import RecordTask

# The reference code used only subjects up to this id; offered as the `reference_subset`.
REFERENCE_MAX_SUBJECT_ID = 10370032
_CHUNK_ROWS = 200_000  # machine_measurements.csv is read in chunks (800k rows in v1.0)


class Builder(common.EcgBuilder):
    """MIMIC-IV-ECG: SB / ST / AF / NORM from the machine reports, split by subject."""

    BUILDER_CONFIGS = [
        common.EcgConfig(
            name="default",
            description=(
                "Reference rules, fixed: four classes kept, subjects whose records disagree "
                "dropped, subjects split per class in ascending subject_id order 60/20/20."
            ),
            split_bounds=(0.6, 0.8),
        ),
        common.EcgConfig(
            name="reference_subset",
            description=(
                f"As 'default', restricted to subject_id <= {REFERENCE_MAX_SUBJECT_ID} "
                "(the subjects the reference code used)."
            ),
            split_bounds=(0.6, 0.8),
            max_subject_id=REFERENCE_MAX_SUBJECT_ID,
        ),
        common.EcgConfig(
            name="random_split",
            description="As 'default', but subjects shuffled per class with seed 0 first.",
            split_method="random",
            split_bounds=(0.6, 0.8),
            split_seed=0,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    MIMIC-IV-ECG v1.0 is open access. Download and unzip
    https://physionet.org/static/published-projects/mimic-iv-ecg/mimic-iv-ecg-diagnostic-electrocardiogram-matched-subset-1.0.zip
    and pass the unpacked folder (the one holding record_list.csv,
    machine_measurements.csv and files/), or its parent, as manual_dir. Without
    manual_dir the zip is downloaded (about 35 GB).
    """
    HOMEPAGE = "https://physionet.org/content/mimic-iv-ecg/1.0/"
    DOWNLOAD_URL = (
        "https://physionet.org/static/published-projects/mimic-iv-ecg/"
        "mimic-iv-ecg-diagnostic-electrocardiogram-matched-subset-1.0.zip"
    )
    SOURCE_MARKERS = ("record_list.csv", "machine_measurements.csv")
    CLASS_NAMES = labels.MIMIC_CLASSES
    LEAD_NAMES = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5",
                  "V6")
    MODE = "segments"
    SOURCE_FS = 500.0

    def _index(self, root: Path) -> common.SourceIndex:
        records = common.read_csv(
            root / "record_list.csv",
            required=("subject_id", "study_id", "path"),
        )
        skipped: collections.Counter = collections.Counter()
        max_subject = self.builder_config.max_subject_id
        if max_subject is not None:
            outside = records["subject_id"] > max_subject
            skipped["outside_subset"] += int(outside.sum())
            records = records[~outside]
        studies = set(records["study_id"].tolist())
        study_labels = _study_labels(root / "machine_measurements.csv", studies)

        by_subject: dict[int, list[int | None]] = collections.defaultdict(list)
        labelled = []  # (subject, study, path, label)
        for subject, study, path in records[["subject_id", "study_id", "path"]].itertuples(
            index=False
        ):
            if not isinstance(path, str) or not path.strip() or labels.is_missing(study):
                skipped["bad_metadata_row"] += 1
                continue
            if study not in study_labels:
                skipped["no_machine_report"] += 1
                continue
            label = study_labels[study]
            if label is None:
                skipped["excluded_abnormal"] += 1
                continue
            by_subject[int(subject)].append(label)
            labelled.append((int(subject), int(study), path.strip().strip("/"), label))

        subject_classes = labels.consistent_subject_labels(by_subject)
        tasks = []
        for subject, _, path, label in sorted(labelled):
            if subject not in subject_classes:
                skipped["subject_label_conflict"] += 1
                continue
            # MIMIC-IV-ECG carries no demographics (they live in MIMIC-IV proper).
            tasks.append(
                RecordTask(path=str(root / path), record_id=path, subject_id=subject, label=label)
            )
        return common.SourceIndex(tasks=tasks, subject_classes=subject_classes, skipped=skipped)


def _study_labels(path: Path, studies: set[int]) -> dict[int, int | None]:
    """study_id -> docs/data.md class (None: excluded) for the given studies, read in chunks."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    wanted = {"study_id", *labels.MIMIC_REPORT_COLUMNS}
    result: dict[int, int | None] = {}
    chunks = pd.read_csv(path, usecols=lambda c: c in wanted, dtype=str, chunksize=_CHUNK_ROWS)
    for chunk in chunks:
        columns = [c for c in labels.MIMIC_REPORT_COLUMNS if c in chunk.columns]
        if "study_id" not in chunk.columns or not columns:
            raise ValueError(f"{path} lacks the columns study_id and report_0..report_17")
        for study, *reports in chunk[["study_id", *columns]].itertuples(index=False):
            study_id = int(study)
            if study_id in studies:
                result[study_id] = labels.mimic_label(reports)
    return result
