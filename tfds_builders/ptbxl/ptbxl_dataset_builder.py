"""PTB-XL v1.0.3 as ArrayRecord (docs/data.md, "PTB-XL"; benchmark configs: docs/benchmarks.md)."""

from __future__ import annotations

import collections
from pathlib import Path

from tfds_builders import common, labels, splits
from tfds_builders.processing import RecordTask

_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_hr")
_STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
BENCHMARK_RATES = (100, 500)


def benchmark_config_name(task: str, rate: int) -> str:
    """The builder config of a PTB-XL benchmark task at a sampling rate (Hz)."""
    return f"benchmark_{task}_{rate}hz"


def _benchmark_config(task: str, rate: int) -> common.EcgConfig:
    return common.EcgConfig(
        name=benchmark_config_name(task, rate),
        description=(
            f"PTB-XL benchmark (Strodthoff et al. 2020), task '{task}': multi-hot `labels` "
            f"over its {len(labels.PTBXL_TASK_CLASSES[task])} classes, records with at least "
            f"one, whole 10 s records at {rate} Hz "
            f"({'records100, as distributed' if rate == 100 else 'records500'}), "
            "strat_fold 1-8 train / 9 validation / 10 test."
        ),
        split_method="strat_fold",
        label_scheme=task,
        sample_rate=rate,
        window_seconds=10.0,
    )


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
        *(_benchmark_config(task, rate)
          for task in labels.PTBXL_BENCHMARK_TASKS for rate in BENCHMARK_RATES),
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
    LEAD_NAMES = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
    MODE = "segments"
    SOURCE_FS = 500.0

    def _task(self) -> str | None:
        """The benchmark task of a multi-label config (None: the single-label configs)."""
        scheme = self.builder_config.label_scheme
        return scheme if scheme in labels.PTBXL_BENCHMARK_TASKS else None

    def _multilabel_names(self) -> tuple[str, ...] | None:
        task = self._task()
        return None if task is None else labels.PTBXL_TASK_CLASSES[task]

    def _expected_fs(self) -> float:
        # records100/ hold the 100 Hz version PTB-XL distributes; everything else is read
        # from records500/ and resampled.
        return 100.0 if self._low_rate_files() else self.SOURCE_FS

    def _low_rate_files(self) -> bool:
        return self._task() is not None and self.builder_config.sample_rate == 100

    def _code_map(self, root: Path) -> dict[str, str]:
        """SCP code -> class of the config's task; refuses a table whose classes differ."""
        task = self._task()
        table = common.read_csv(root / "scp_statements.csv", required=_STATEMENT_COLUMNS,
                                index_col=0)
        rows = {str(code): row for code, row in table[list(_STATEMENT_COLUMNS)].iterrows()}
        code_map = labels.ptbxl_task_code_map(rows, task)
        expected = labels.PTBXL_TASK_CLASSES[task]
        if set(code_map.values()) != set(expected):
            raise ValueError(
                f"{root / 'scp_statements.csv'}: task {task!r} has the classes "
                f"{sorted(set(code_map.values()))}, this builder expects PTB-XL 1.0.3's "
                f"{sorted(expected)}")
        return code_map

    def _index(self, root: Path) -> common.SourceIndex:
        task = self._task()
        if task is not None and self.builder_config.split_method != "strat_fold":
            raise ValueError(
                "the superdiagnostic labels are multi-label: only split_method='strat_fold' "
                "applies (per-class subject splits need one class per subject)"
            )
        database = common.read_csv(
            root / "ptbxl_database.csv", required=_COLUMNS, dtype={"scp_codes": str}
        )
        code_map = self._code_map(root) if task is not None else {}
        filename_column = "filename_lr" if self._low_rate_files() else "filename_hr"
        if filename_column not in database.columns:
            raise ValueError(f"{root / 'ptbxl_database.csv'} lacks the column "
                             f"{filename_column!r}")

        skipped: collections.Counter = collections.Counter()
        rows = []  # (patient, ecg_id, filename, label, hot, age, sex, fold)
        for row in database.itertuples(index=False):
            filename = getattr(row, filename_column)
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
            if task is not None:
                hot = labels.ptbxl_task_labels(codes, code_map, labels.PTBXL_TASK_CLASSES[task])
                if not any(hot):
                    skipped[f"no_{task}_label"] += 1
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

        if task is not None:
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


