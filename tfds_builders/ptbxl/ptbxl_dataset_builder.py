"""PTB-XL v1.0.3 as ArrayRecord: 1 s samples (250, 12) of the 500 Hz records (docs/data.md)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import common, labels, splits
from tfds_builders.processing import RecordTask

_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_hr")


class Builder(common.EcgBuilder):
    """PTB-XL: docs/data.md single-label default, plus the literature's superdiagnostic protocol."""

    BUILDER_CONFIGS = [
        common.EcgConfig(
            name="default",
            description=(
                "Label = superclass of the highest-likelihood SCP code; patients "
                "kept only if all their records share one superclass (none 'other'); "
                "subjects split per class in ascending patient_id order 60/20/20."
            ),
            split_bounds=(0.6, 0.8),
        ),
        common.EcgConfig(
            name="random_split",
            description="As 'default', but subjects shuffled per class with seed 0 first.",
            split_method="random",
            split_bounds=(0.6, 0.8),
            split_seed=0,
        ),
        common.EcgConfig(
            name="superdiagnostic",
            description=(
                "Literature standard protocol (Strodthoff et al. 2020): multi-hot `labels` "
                "over the 5 diagnostic superclasses from scp_statements.csv, all records "
                "with at least one, strat_fold 1-8 train / 9 validation / 10 test. `label` "
                "is the default config's single label, -1 where the top code is 'other'."
            ),
            split_method="strat_fold",
            label_scheme="superdiagnostic",
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    PTB-XL is open access. Download and unzip
    https://physionet.org/static/published-projects/ptb-xl/ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip
    and pass the unpacked folder (the one holding ptbxl_database.csv, scp_statements.csv
    and records500/), or its parent, as manual_dir. Without manual_dir the zip is
    downloaded (about 1.7 GB).
    """
    HOMEPAGE = "https://physionet.org/content/ptb-xl/1.0.3/"
    DOWNLOAD_URL = (
        "https://physionet.org/static/published-projects/ptb-xl/"
        "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip"
    )
    SOURCE_MARKERS = ("ptbxl_database.csv",)
    CLASS_NAMES = labels.PTBXL_CLASSES
    SIGNAL_SHAPE = (250, 12)
    LEAD_NAMES = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
    MODE = "segments"
    SOURCE_FS = 500.0

    def _superdiagnostic(self) -> bool:
        return self.builder_config.label_scheme == "superdiagnostic"

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        if not self._superdiagnostic():
            return {}
        return {
            "labels": tfds.features.Tensor(
                shape=(len(self.CLASS_NAMES),),
                dtype=np.int32,
                doc="multi-hot superdiagnostic classes, order NORM MI STTC CD HYP",
            )
        }

    def _extra_example_fields(self, task: RecordTask) -> dict[str, np.ndarray]:
        if not self._superdiagnostic():
            return {}
        return {"labels": np.asarray(task.labels, dtype=np.int32)}

    def _index(self, root: Path) -> common.SourceIndex:
        if self._superdiagnostic() and self.builder_config.split_method != "strat_fold":
            raise ValueError(
                "the superdiagnostic labels are multi-label: only split_method='strat_fold' "
                "applies (per-class subject splits need one class per subject)"
            )
        database = common.read_csv(
            root / "ptbxl_database.csv", required=_COLUMNS, dtype={"scp_codes": str}
        )
        code_to_superclass: dict[str, str] = {}
        if self._superdiagnostic():
            statements = common.read_csv(
                root / "scp_statements.csv",
                required=("diagnostic", "diagnostic_class"),
                index_col=0,
            )
            diagnostic = statements[statements["diagnostic"] == 1]
            code_to_superclass = {
                str(code): str(cls) for code, cls in diagnostic["diagnostic_class"].items()
            }

        skipped: collections.Counter = collections.Counter()
        rows = []  # (patient, ecg_id, filename, label, hot, age, sex, fold)
        for row in database.itertuples(index=False):
            filename = row.filename_hr
            if (
                not isinstance(filename, str)
                or not filename.strip()
                or labels.is_missing(row.patient_id)
                or labels.is_missing(row.ecg_id)
            ):
                skipped["bad_metadata_row"] += 1
                continue
            try:
                codes = labels.parse_scp_codes(row.scp_codes)
            except ValueError:
                skipped["bad_scp_codes"] += 1
                continue
            label = labels.ptbxl_top_code_class(codes)
            hot = None
            if self._superdiagnostic():
                hot = labels.ptbxl_superdiagnostic(codes, code_to_superclass)
                if not any(hot):
                    skipped["no_superdiagnostic_label"] += 1
                    continue
            fold = None if labels.is_missing(row.strat_fold) else int(row.strat_fold)
            rows.append(
                (
                    int(row.patient_id),
                    int(row.ecg_id),
                    filename.strip(),
                    label,
                    hot,
                    labels.parse_age(row.age),
                    labels.parse_sex(row.sex),
                    fold,
                )
            )

        if self._superdiagnostic():
            kept_rows = rows
            subject_classes: dict[int, int] = {}
        else:
            by_subject: dict[int, list[int | None]] = collections.defaultdict(list)
            for patient, _, _, label, *_ in rows:
                by_subject[patient].append(label)
            subject_classes = labels.consistent_subject_labels(by_subject)
            kept_rows = []
            for r in rows:
                if r[3] is None:
                    skipped["label_other"] += 1
                elif r[0] not in subject_classes:
                    skipped["subject_label_conflict"] += 1
                else:
                    kept_rows.append(r)

        tasks, record_splits = [], {}
        for patient, _, filename, label, hot, age, sex, fold in sorted(
            kept_rows, key=lambda r: (r[0], r[1])
        ):
            if fold is not None:
                record_splits[filename] = splits.fold_split(fold)
            elif self.builder_config.split_method == "strat_fold":
                skipped["bad_metadata_row"] += 1
                continue
            tasks.append(
                RecordTask(
                    path=str(root / filename),
                    record_id=filename,
                    subject_id=patient,
                    label=-1 if label is None else label,
                    age=age,
                    sex=sex,
                    labels=hot,
                )
            )
        return common.SourceIndex(
            tasks=tasks,
            subject_classes=subject_classes,
            record_splits=record_splits,
            skipped=skipped,
        )


