"""Shared TFDS machinery of the ECG builders (docs/data.md, "Common steps"): a builder says
how to index its PhysioNet folder (`_index`) and how records become samples; features,
configs, splits, parallel record processing, skips and metadata live here.
"""
from __future__ import annotations

import abc
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import inspect
import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from cardioformer_jax.core import progress
from cardioformer_jax.data import preprocessing
from tfds_builders import fingerprint, parallel, processing, splits

logger = logging.getLogger(__name__)

SPLITS = splits.SPLITS
MAX_LISTED_SKIPS = 100  # skipped records listed by path in the metadata (all are counted)


@dataclasses.dataclass(eq=False)
class EcgConfig(tfds.core.BuilderConfig):
    """Builder config: how subjects are split and which records are used.

    split_method: "ordered" (docs/data.md, Splits: subjects in ascending id order per class),
        "random" (per class in an order shuffled with `split_seed`), "strat_fold"
        (PTB-XL's folds 1-8 / 9 / 10) or "record_hash" (each record by a hash of its name
        salted with `split_seed`, `splits.record_hash_split`; the builder's
        `SourceIndex.record_splits`).
    split_bounds: (a, b): per class the first floor(a*n) subjects go to train, those up to
        floor(b*n) to validation, the rest to test (cumulative fractions, docs/data.md).
    max_subject_id: keep only subjects with id <= this (MIMIC-IV reference subset).
    label_scheme: PTB-XL only: "spec" (single label and patient filter of docs/data.md) or
        "superdiagnostic" (multi-hot `labels` from scp_statements.csv, all records).
    beat_rule: PTB only: how heartbeats are cut, "port" or "reference"
        (`preprocessing.heartbeats`, docs/data.md).
    sample_rate: Hz every record is resampled to (segment datasets).
    window_seconds: duration of one example (segment datasets): 1 s in the paper, 10 s
        (whole PTB-XL records) in the PTB-XL benchmark.
    """

    split_method: str = "ordered"
    split_bounds: tuple[float, float] = (0.6, 0.8)
    split_seed: int = 0
    max_subject_id: int | None = None
    label_scheme: str = "spec"
    beat_rule: str = "port"
    sample_rate: int = preprocessing.TARGET_FS
    window_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.split_method not in ("ordered", "random", "strat_fold", "record_hash"):
            raise ValueError(f"unknown split_method {self.split_method!r}")
        a, b = self.split_bounds
        if not 0.0 <= a <= b <= 1.0:
            raise ValueError(f"split_bounds must satisfy 0 <= a <= b <= 1: {self.split_bounds}")
        if self.beat_rule not in preprocessing.BEAT_RULES:
            raise ValueError(f"unknown beat_rule {self.beat_rule!r}; use one of "
                             f"{preprocessing.BEAT_RULES}")
        window = self.sample_rate * self.window_seconds
        if self.sample_rate <= 0 or self.window_seconds <= 0 or window != round(window):
            raise ValueError(
                f"sample_rate={self.sample_rate} Hz and window_seconds={self.window_seconds} "
                "must be positive and give a whole number of samples per window")

    @property
    def window_length(self) -> int:
        """Samples per example of a segment dataset."""
        return round(self.sample_rate * self.window_seconds)

    def summary(self) -> dict[str, Any]:
        """The settings that shaped the data, for the metadata."""
        return {
            "name": self.name,
            "split_method": self.split_method,
            "split_bounds": list(self.split_bounds),
            "split_seed": self.split_seed
            if self.split_method in ("random", "record_hash") else None,
            "max_subject_id": self.max_subject_id,
            "label_scheme": self.label_scheme,
            "beat_rule": self.beat_rule,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
        }


def derive_config(
    base: EcgConfig,
    *,
    split_bounds: tuple[float, float] | None = None,
    split_seed: int | None = None,
) -> EcgConfig:
    """A copy of `base` with other split bounds and/or a seeded random subject split.

    The name records the change (e.g. `default-b0.7-0.85-seed3`), so differently split
    datasets get different directories under `data_dir`. A "record_hash" config stays one,
    the seed salting its hash.
    """
    name = base.name
    changes: dict[str, Any] = {}
    if split_bounds is not None:
        a, b = (float(v) for v in split_bounds)
        changes["split_bounds"] = (a, b)
        name += f"-b{a:g}-{b:g}"
    if split_seed is not None:
        method = "record_hash" if base.split_method == "record_hash" else "random"
        changes.update(split_method=method, split_seed=int(split_seed))
        name += f"-seed{int(split_seed)}"
    if not changes:
        return base
    description = f"{base.description} Derived: {changes}."
    return dataclasses.replace(base, name=name, description=description, **changes)


@dataclasses.dataclass
class SourceIndex:
    """What a builder found in its source folder before reading any signal.

    `tasks` are the usable records sorted by (subject, record); `subject_classes` is the
    class of every kept subject (for the ordered / random splits); `record_splits` maps
    record_id to split for fold- and hash-based configs; `skipped` counts records left out
    by reason; `notes` counts recoverable quirks found while indexing (in the metadata's
    `record_notes`).
    """

    tasks: list[processing.RecordTask]
    subject_classes: dict[int, int] = dataclasses.field(default_factory=dict)
    record_splits: dict[str, str] | None = None
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)


# Written by `cardioformer_jax.synthetic` into the root of every synthetic twin.
SYNTHETIC_MARKER = "SYNTHETIC_TWIN.txt"


def find_source_root(base: Path, is_root: Callable[[Path], bool]) -> Path | None:
    """`base` if `is_root(base)`, else its first sub-folder (sorted) for which it holds.

    PhysioNet zips unpack into a versioned folder (e.g. `ptb-xl-...-1.0.3/`), so users may
    point `manual_dir` at either level.
    """
    if is_root(base):
        return base
    if base.is_dir():
        for child in sorted(base.iterdir()):
            if child.is_dir() and is_root(child):
                return child
    return None


def extract_zip(archive: Path) -> Path:
    """Unpacks a zip next to it (`extracted/<name>`), once: a partial unpacking is redone."""
    target = archive.parent / "extracted" / archive.name
    if target.is_dir():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(partial)  # zipfile drops absolute paths and '..' components
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive}: not a readable zip archive ({err}); delete it and "
                         "download again") from err
    partial.rename(target)  # atomic: `target` exists only complete
    return target


PHYSIONET_SUMS = "SHA256SUMS.txt"
"""PhysioNet's per-file digests, shipped at the top of every project archive."""


def verify_physionet_sums(root: Path) -> int:
    """Checks every file listed in `root`'s SHA256SUMS.txt against its SHA-256.

    Returns the number of files checked. Raises FileNotFoundError when the list is missing
    and ValueError naming the files that are missing or differ (a truncated, corrupted or
    altered download).
    """
    listing = root / PHYSIONET_SUMS
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found: the download is not a complete "
                                "PhysioNet project archive")
    expected = {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != 64 or not name:
            raise ValueError(f"{listing}:{number}: not a 'sha256  path' line: {line!r}")
        expected[name] = digest.lower()

    def actual(name: str) -> str | None:
        path = root / name
        if not path.is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    # hashlib releases the GIL: threads hash several files at once.
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        digests = dict(zip(expected, pool.map(actual, expected), strict=True))
    missing = [n for n, d in digests.items() if d is None]
    differ = [n for n, d in digests.items() if d is not None and d != expected[n]]
    if missing or differ:
        raise ValueError(
            f"{root}: the download does not match its {PHYSIONET_SUMS}: "
            f"{len(differ)} file(s) differ {differ[:5]}, {len(missing)} missing "
            f"{missing[:5]}; delete the download and try again")
    logger.info("%s: %d files match %s", root, len(expected), PHYSIONET_SUMS)
    return len(expected)


def read_csv(path: Path, *, required: tuple[str, ...] = (), **kwargs: Any):
    """pandas.read_csv with clear errors for a missing file or missing columns."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    frame = pd.read_csv(path, **kwargs)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}")
    return frame


class EcgBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the ECG builders; subclasses set the class attributes and `_index`."""

    # Bump when the preparation changes what a build contains: a build of another version
    # is then rebuilt instead of silently reused.
    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Leads are matched by name: a record storing them in another order is "
                 "reordered, one lacking a lead is skipped (lead_mismatch).",
        "1.2.0": "PTB config reference_beats (heartbeats cut by the reference code's rule); "
                 "downloads are unpacked without TensorFlow and checked against the "
                 "archive's SHA256SUMS.txt.",
        "1.3.0": "Configs choose the sampling rate and window length of segment datasets; "
                 "PTB-XL benchmark configs benchmark_<task>_<100|500>hz (whole 10 s records, "
                 "multi-hot labels of the six benchmark tasks); multi-hot class names in the "
                 "metadata. New builder cinc2021 (PhysioNet/CinC Challenge 2021, Challenge-format "
                 "records, split by record hash).",
    }

    HOMEPAGE: ClassVar[str]
    # None: the data are manual only (manual_dir required).
    DOWNLOAD_URL: ClassVar[str | None]
    SOURCE_MARKERS: ClassVar[tuple[str, ...]]
    CLASS_NAMES: ClassVar[tuple[str, ...]]
    # Heartbeat datasets: the beat shape. Segment datasets take theirs from the config.
    SIGNAL_SHAPE: ClassVar[tuple[int, int]]
    # The dataset's leads in channel order; records are read by these names (any case).
    LEAD_NAMES: ClassVar[tuple[str, ...]]
    MODE: ClassVar[processing.Mode]
    SOURCE_FS: ClassVar[float]

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        progress: bool = True,
        file_format: str | None = None,
        **kwargs: Any,
    ):
        """`num_workers`: record-processing processes (default: all cores; 0 = in-process).

        The file format defaults to ArrayRecord (random access, no TensorFlow).
        """
        super().__init__(file_format=file_format or "array_record", **kwargs)
        self._num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        self._progress = progress
        self._explicit_manual_dir: str | None = None
        self._split_stats: dict[str, dict[str, Any]] = {}
        self._skipped: collections.Counter = collections.Counter()
        self._notes: collections.Counter = collections.Counter()
        self._skip_list: list[dict[str, str]] = []
        self._pool = parallel.OrderedPool(0)  # replaced by the build's pool
        self._source_dir: str | None = None

    # --- where the builder's files are ---------------------------------------------------
    # TFDS finds a builder's folder (README.md, CITATIONS.bib, checksums.tsv) through
    # importlib.resources, and `code_path` then tests the result against the *backport*
    # package `importlib_resources` (not a TFDS dependency, absent here): building any
    # builder that lives in a package fails with ModuleNotFoundError without it. The
    # folder is simply where the subclass's module file is.

    @classmethod
    def _get_pkg_dir_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls)).parent

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))

    # --- to be provided by each dataset --------------------------------------------------

    @abc.abstractmethod
    def _index(self, root: Path) -> SourceIndex:
        """Reads the metadata under `root` and lists the usable records (no signals)."""

    def _is_source_root(self, path: Path) -> bool:
        """Whether `path` is the unpacked PhysioNet folder (default: holds SOURCE_MARKERS)."""
        return all((path / marker).exists() for marker in self.SOURCE_MARKERS)

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {}

    def _multilabel_names(self) -> tuple[str, ...] | None:
        """The classes of the multi-hot `labels` feature; None: the config has none."""
        return None

    def _expected_fs(self) -> float | None:
        """The sampling rate every source record must have (None: any, resampled)."""
        return self.SOURCE_FS

    def _record_reader(self) -> processing.Reader | None:
        """Reads records other than through wfdb (`processing.Reader`); None: WFDB records."""
        return None

    def _preparation_extras(self) -> dict[str, Any]:
        """More of what shapes the data, for the fingerprint (e.g. digests of label tables)."""
        return {}

    @property
    def signal_shape(self) -> tuple[int, int]:
        """(time, leads) of one example under the builder config."""
        if self.MODE == "segments":
            return (self.builder_config.window_length, len(self.LEAD_NAMES))
        return self.SIGNAL_SHAPE

    def _extra_example_fields(self, task: processing.RecordTask) -> dict[str, Any]:
        return {}

    # --- TFDS hooks ----------------------------------------------------------------------

    def _info(self) -> tfds.core.DatasetInfo:
        length, leads = self.signal_shape
        rate = self.builder_config.sample_rate if self.MODE == "segments" else \
            preprocessing.TARGET_FS
        multilabel = self._multilabel_names()
        if multilabel is not None:
            names = " ".join(multilabel) if len(multilabel) <= 12 else \
                f"{len(multilabel)} classes (metadata 'multilabel_names')"
            multilabel_feature = {"labels": tfds.features.Tensor(
                shape=(len(multilabel),), dtype=np.int32,
                doc=f"multi-hot classes, order {names}")}
        else:
            multilabel_feature = {}
        features = {
            "signal": tfds.features.Tensor(
                shape=(length, leads),
                dtype=np.float32,
                # Raw bytes instead of a float list: ~15x faster to serialise and parse,
                # and identical arrays after decoding.
                encoding=tfds.features.Encoding.BYTES,
                doc=f"{length} samples x {leads} leads at {rate} Hz, standardised per lead",
            ),
            "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
            "subject_id": tfds.features.Scalar(np.int64, doc="patient / subject id"),
            "record_id": tfds.features.Text(doc="record path relative to the source root"),
            "segment": tfds.features.Scalar(np.int32, doc="segment / beat index in record"),
            "age": tfds.features.Scalar(np.float32, doc="years; -1 unknown"),
            "sex": tfds.features.Scalar(np.int32, doc="0 male, 1 female, -1 unknown"),
            **multilabel_feature,
            **self._extra_features(),
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("signal", "label"),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config, **kwargs):
        # Remembered so that a mistyped --manual_dir is an error, never a silent download.
        self._explicit_manual_dir = download_config.manual_dir
        # One set of worker processes serves all splits (TFDS generates them in turn).
        with parallel.OrderedPool(self._num_workers) as self._pool:
            result = super()._download_and_prepare(dl_manager, download_config, **kwargs)
        self._finish_metadata()
        return result

    def _source_root(self, dl_manager) -> Path:
        """The unpacked PhysioNet folder: manual_dir if there is one, else downloaded."""
        manual = Path(self._explicit_manual_dir or dl_manager._manual_dir).expanduser()
        if self._explicit_manual_dir is not None or (manual.is_dir() and any(manual.iterdir())):
            if not manual.is_dir():
                raise FileNotFoundError(f"manual_dir {manual} does not exist")
            root = find_source_root(manual, self._is_source_root)
            if root is None:
                raise FileNotFoundError(
                    f"{manual / self.SOURCE_MARKERS[0]} not found (nor in a sub-folder of "
                    f"{manual}); expected the unpacked PhysioNet folder.\n"
                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                )
            return root
        if not self.DOWNLOAD_URL:
            raise FileNotFoundError(
                f"{self.name} cannot be downloaded automatically: pass --manual_dir.\n"
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        logger.info("No manual_dir: downloading %s", self.DOWNLOAD_URL)
        if self.DOWNLOAD_URL not in (self.url_infos or {}):
            logger.warning(
                "%s has no recorded checksum in %s: the archive itself is not pinned (its "
                "files are still checked against its %s); record it with "
                "build_dataset --register_checksums", self.DOWNLOAD_URL,
                self._checksums_path, PHYSIONET_SUMS)
        # TFDS checks the archive's size and SHA-256 against checksums.tsv when recorded.
        # Its extractor needs TensorFlow, so the zip is unpacked here.
        extracted = extract_zip(Path(dl_manager.download(self.DOWNLOAD_URL)))
        root = find_source_root(extracted, self._is_source_root)
        if root is None:
            raise FileNotFoundError(
                f"{self.SOURCE_MARKERS[0]} not found in the download {extracted}"
            )
        verify_physionet_sums(root)
        return root

    def _split_generators(self, dl_manager):
        config: EcgConfig = self.builder_config
        root = self._source_root(dl_manager)
        index = self._index(root)
        self._skipped.update(index.skipped)
        self._notes.update(index.notes)
        if not index.tasks:
            raise ValueError(
                f"no usable record under {root} (left out by reason: {dict(index.skipped)})"
            )
        if config.split_method in ("strat_fold", "record_hash"):
            if index.record_splits is None:
                raise ValueError(
                    f"{self.name} does not support split_method={config.split_method!r}")
            split_of = {t.record_id: index.record_splits[t.record_id] for t in index.tasks}
        else:
            seed = config.split_seed if config.split_method == "random" else None
            by_subject = splits.subject_splits(
                index.subject_classes, config.split_bounds, seed=seed
            )
            split_of = {t.record_id: by_subject[t.subject_id] for t in index.tasks}
        plan: dict[str, list[processing.RecordTask]] = {s: [] for s in SPLITS}
        for task in index.tasks:
            plan[split_of[task.record_id]].append(task)
        splits.check_disjoint({s: (t.subject_id for t in plan[s]) for s in SPLITS})

        self._source_dir = os.fspath(root)
        self._synthetic = (root / SYNTHETIC_MARKER).is_file()
        self._fingerprint = fingerprint.fingerprint(
            builder_version=str(self.VERSION),
            preparation={
                "config": config.summary(),
                "mode": self.MODE,
                "source_fs": self._expected_fs(),
                "target_fs": config.sample_rate if self.MODE == "segments"
                else preprocessing.TARGET_FS,
                "signal_shape": list(self.signal_shape),
                "lead_names": list(self.LEAD_NAMES),
                "class_names": list(self.CLASS_NAMES),
                "multilabel_names": list(self._multilabel_names() or []),
                **self._preparation_extras(),
            },
            source=fingerprint.source_summary(
                root, (*self.SOURCE_MARKERS, "scp_statements.csv"),
                (t.path for t in index.tasks)),
        )
        for split in SPLITS:
            self._split_stats[split] = {
                "planned_records": len(plan[split]),
                "planned_subjects": len({t.subject_id for t in plan[split]}),
            }
        empty = [s for s in SPLITS if not plan[s]]
        if empty:
            # TFDS cannot write a split without examples; tiny sources can produce one.
            logger.warning("%s: no subject falls into split(s) %s; not written", root, empty)
        return {s: self._generate_examples(s, plan[s]) for s in SPLITS if plan[s]}

    def _generate_examples(self, split: str, tasks: list[processing.RecordTask]):
        process = functools.partial(
            processing.process_record,
            mode=self.MODE,
            expected_fs=self._expected_fs(),
            lead_names=self.LEAD_NAMES,
            beat_rule=self.builder_config.beat_rule,
            target_fs=self.builder_config.sample_rate,
            segment_length=self.builder_config.window_length,
            reader=self._record_reader(),
        )
        results = self._pool.map(process, tasks)
        stats = self._split_stats[split]
        class_examples: collections.Counter = collections.Counter()
        class_records: collections.Counter = collections.Counter()
        class_subjects: dict[int, set[int]] = collections.defaultdict(set)
        hot_names = self._multilabel_names() or ()
        hot_examples = np.zeros(len(hot_names), dtype=np.int64)
        desc = f"building {self.name}/{self.builder_config.name} {split}"
        # A bar on a terminal, plain lines in a log file (`progress`).
        with progress.progress(len(tasks), desc, "records", enabled=self._progress) as bar:
            for task, result in zip(tasks, results, strict=True):
                bar.update()
                if result.samples is None:
                    self._record_skip(result.error_kind or "error", task.path, result.error)
                    continue
                self._notes.update(result.notes)
                fixed = {
                    "label": task.label,
                    "subject_id": task.subject_id,
                    "record_id": task.record_id,
                    "age": task.age,
                    "sex": task.sex,
                    **({"labels": np.asarray(task.labels, dtype=np.int32)}
                       if self._multilabel_names() is not None else {}),
                    **self._extra_example_fields(task),
                }
                for k, sample in enumerate(result.samples):
                    yield f"{task.record_id}#{k}", {"signal": sample, "segment": k, **fixed}
                n = len(result.samples)
                class_examples[task.label] += n
                class_records[task.label] += 1
                class_subjects[task.label].add(task.subject_id)
                if hot_names:
                    hot_examples += n * np.asarray(task.labels, dtype=np.int64)
        names = self._label_names()
        stats.update(
            records=sum(class_records.values()),
            examples=sum(class_examples.values()),
            subjects=len(set().union(*class_subjects.values())) if class_subjects else 0,
            class_examples={names[c]: class_examples[c] for c in sorted(class_examples)},
            class_records={names[c]: class_records[c] for c in sorted(class_records)},
            class_subjects={names[c]: len(class_subjects[c]) for c in sorted(class_subjects)},
        )
        if hot_names:
            stats["multilabel_examples"] = dict(
                zip(hot_names, hot_examples.tolist(), strict=True)
            )
        if stats["examples"] == 0:
            raise ValueError(
                f"{self._source_dir}: none of the {len(tasks)} records of split '{split}' "
                f"could be used (skipped by reason: {dict(self._skipped)})"
            )

    # --- bookkeeping ---------------------------------------------------------------------

    def _label_names(self) -> dict[int, str]:
        return {-1: "unlabelled", **dict(enumerate(self.CLASS_NAMES))}

    def _record_skip(self, kind: str, path: str, message: str | None) -> None:
        self._skipped[kind] += 1
        logger.warning("skipping record: %s", message or f"{path} [{kind}]")
        if len(self._skip_list) < MAX_LISTED_SKIPS:
            self._skip_list.append({"record": path, "reason": kind, "message": message or ""})

    def _finish_metadata(self) -> None:
        """Writes the build's statistics into `info.metadata` (saved as metadata.json)."""
        self.info.metadata.update(
            {
                "config": self.builder_config.summary(),
                "class_names": list(self.CLASS_NAMES),
                "multilabel_names": list(self._multilabel_names() or []) or None,
                "source_dir": self._source_dir,
                "fingerprint": getattr(self, "_fingerprint", None),
                # A synthetic twin (cardioformer_jax.synthetic) is never compared with the
                # paper's numbers, whatever its layout.
                "synthetic": bool(getattr(self, "_synthetic", False)),
                "splits": self._split_stats,
                "empty_splits": [
                    s for s in SPLITS if self._split_stats.get(s, {}).get("planned_records") == 0
                ],
                "skipped_records": dict(sorted(self._skipped.items())),
                # Recoverable quirks: found while indexing, or corrected in a written record.
                "record_notes": dict(sorted(self._notes.items())),
                "skipped_record_list": self._skip_list,
            }
        )
