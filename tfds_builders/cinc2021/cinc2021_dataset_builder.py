"""PhysioNet/Computing in Cardiology Challenge 2021 training set as ArrayRecord.

docs/data.md, "CinC 2021".
"""

from __future__ import annotations

import collections
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cardioformer_jax.data import challenge_format
from cardioformer_jax.data.preprocessing import RecordError
from tfds_builders import common, labels, processing, splits

_TABLE_DIR = Path(__file__).resolve().parent
SCORED_TABLE = "dx_mapping_scored.csv"
UNSCORED_TABLE = "dx_mapping_unscored.csv"
_TABLE_COLUMNS = ("SNOMEDCTCode", "Abbreviation")
MAX_LISTED_UNKNOWN = 100  # distinct unknown Dx tokens listed in the metadata


def _config(name: str, description: str, rate: int, seconds: float) -> common.EcgConfig:
    return common.EcgConfig(
        name=name,
        description=description + " Records split by a hash of their name 60/20/20.",
        split_method="record_hash",
        split_bounds=(0.6, 0.8),
        label_scheme="cinc2021",
        sample_rate=rate,
        window_seconds=seconds,
    )


class Builder(common.EcgBuilder):
    """CinC 2021: the Challenge's scored classes and the PTB-XL superclasses, any source rate."""

    BUILDER_CONFIGS = [
        _config("default", "Consecutive 1 s windows (250, 12) at 250 Hz, as the paper's "
                "PTB-XL default.", 250, 1.0),
        _config("records_100hz", "Consecutive 10 s windows (1000, 12) at 100 Hz, as the "
                "PTB-XL benchmark's records100.", 100, 10.0),
        _config("records_500hz", "Consecutive 10 s windows (5000, 12) at 500 Hz, as the "
                "PTB-XL benchmark's records500.", 500, 10.0),
    ]
    DEFAULT_CONFIG_NAME = "default"

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    The Challenge 2021 training data are open access (CC BY 4.0) but not downloaded by this
    builder. Download the training set from https://physionet.org/content/challenge-2021/
    (e.g. `wget -r -N -c -np https://physionet.org/files/challenge-2021/1.0.3/training/`),
    and pass the folder holding the records (NAME.hea + NAME.mat, in sub-folders at any
    depth, e.g. training/georgia/g1/E00001.hea) as manual_dir.
    """
    HOMEPAGE = "https://physionet.org/content/challenge-2021/"
    DOWNLOAD_URL = None  # manual only
    SOURCE_MARKERS = ("*.hea",)
    CLASS_NAMES = labels.PTBXL_CLASSES
    LEAD_NAMES = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
    MODE = "segments"
    SOURCE_FS = None  # any rate (257 Hz INCART, 1000 Hz PTB, 500 Hz the others)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._extras: dict[str, dict[str, Any]] = {}
        self._split_of: dict[str, str] = {}
        self._written: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self._unknown_dx: collections.Counter = collections.Counter()
        self._indexed: collections.Counter = collections.Counter()

    # --- label tables ----------------------------------------------------------------------

    @classmethod
    def _tables(cls) -> tuple[Any, Any]:
        scored = common.read_csv(_TABLE_DIR / SCORED_TABLE, required=(*_TABLE_COLUMNS, "Notes"),
                                 dtype=str)
        unscored = common.read_csv(_TABLE_DIR / UNSCORED_TABLE, required=_TABLE_COLUMNS,
                                   dtype=str)
        return scored, unscored

    @classmethod
    def scored_classes(cls) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, int]]:
        """(names, codes, code -> index) of the scored classes (`labels`' order)."""
        scored, _ = cls._tables()
        rows = list(zip(scored["SNOMEDCTCode"], scored["Abbreviation"], strict=True))
        return labels.cinc2021_scored_classes(rows, labels.cinc2021_equivalences(scored["Notes"]))

    def _multilabel_names(self) -> tuple[str, ...]:
        return self.scored_classes()[0]

    def _expected_fs(self) -> None:
        return None

    def _record_reader(self) -> processing.Reader:
        return challenge_format.read_signal

    def _preparation_extras(self) -> dict[str, Any]:
        return {
            "label_tables_sha256": {
                name: hashlib.sha256((_TABLE_DIR / name).read_bytes()).hexdigest()
                for name in (SCORED_TABLE, UNSCORED_TABLE)},
            "gain_rule": challenge_format.GAIN_RULE,
        }

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "superclasses": tfds.features.Tensor(
                shape=(len(labels.PTBXL_CLASSES),), dtype=np.int32,
                doc=f"multi-hot PTB-XL superclasses, order {' '.join(labels.PTBXL_CLASSES)}"),
            "source_database": tfds.features.Text(
                doc="the Challenge's source database, from the record name prefix"),
        }

    def _extra_example_fields(self, task: processing.RecordTask) -> dict[str, Any]:
        extra = self._extras[task.record_id]
        # Called once per written record: counted here for the metadata.
        written = self._written[self._split_of[task.record_id]]
        written[f"source:{extra['source_database']}"] += 1
        for name, value in zip(labels.PTBXL_CLASSES, extra["superclasses"], strict=True):
            written[f"superclass:{name}"] += int(value)
        return {"superclasses": np.asarray(extra["superclasses"], dtype=np.int32),
                "source_database": extra["source_database"]}

    # --- source ----------------------------------------------------------------------------

    def _is_source_root(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        for _, _, files in os.walk(path):
            if any(f.endswith(".hea") for f in files):
                return True
        return False

    def _index(self, root: Path) -> common.SourceIndex:
        scored, unscored = self._tables()
        _, _, class_of_code = self.scored_classes()
        n_classes = len(self._multilabel_names())
        rows = [(c, a) for table in (scored, unscored)
                for c, a in zip(table["SNOMEDCTCode"], table["Abbreviation"], strict=True)]
        known_codes = {str(c).strip() for c, _ in rows}
        abbreviations = labels.cinc2021_abbreviations(rows)
        config = self.builder_config

        skipped: collections.Counter = collections.Counter()
        notes: collections.Counter = collections.Counter()
        headers = []
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            headers += [os.path.join(directory, f[:-4]) for f in sorted(files)
                        if f.endswith(".hea")]
        seen: dict[str, str] = {}
        tasks, record_splits = [], {}
        for path in headers:
            record_id = os.path.relpath(path, root).replace(os.sep, "/")
            try:
                header = challenge_format.parse_header(path)
            except RecordError as err:
                self._record_skip(err.kind, path, str(err))
                continue
            name = os.path.basename(path)
            if name in seen:
                # Splits and subject ids come from the name: a second copy would leak.
                self._record_skip("duplicate_record", path,
                                  f"{path}: record name {name} also at {seen[name]}")
                continue
            seen[name] = record_id
            notes.update(header.quirks)
            if not header.dx:
                skipped["no_dx"] += 1
                continue
            codes = []
            for token in header.dx:
                code, how = labels.cinc2021_dx_code(token, known_codes, abbreviations)
                if how == "abbreviation":
                    notes["dx_abbreviation"] += 1
                elif how == "unknown":
                    notes["dx_unknown_token"] += 1
                    self._unknown_dx[token] += 1
                if code is not None:
                    codes.append(code)
            if not codes:
                skipped["no_known_dx"] += 1
                continue
            hot = [0] * n_classes
            for code in codes:
                if code in class_of_code:
                    hot[class_of_code[code]] = 1
            if not any(hot):
                notes["no_scored_class"] += 1
            superclasses = labels.cinc2021_superclasses(codes)
            source = labels.cinc2021_source_database(name)
            self._indexed[f"source:{source}"] += 1
            record_splits[record_id] = splits.record_hash_split(
                name, config.split_bounds, seed=config.split_seed)
            self._extras[record_id] = {"superclasses": superclasses, "source_database": source}
            tasks.append(processing.RecordTask(
                path=path,
                record_id=record_id,
                subject_id=splits.stable_id(name),
                label=labels.single_class(superclasses),
                age=labels.parse_age(header.comment("Age")),
                sex=labels.parse_sex(header.comment("Sex")),
                labels=tuple(hot),
            ))
        self._split_of = record_splits
        tasks.sort(key=lambda t: (t.subject_id, t.record_id))
        return common.SourceIndex(tasks=tasks, record_splits=record_splits, skipped=skipped,
                                  notes=notes)

    # --- metadata --------------------------------------------------------------------------

    def _finish_metadata(self) -> None:
        super()._finish_metadata()
        _, codes, _ = self.scored_classes()
        mapped = set(labels.CINC2021_SUPERCLASS_OF_CODE.values()) | {"NORM"}
        per_split = {}
        for split, counts in sorted(self._written.items()):
            per_split[split] = {
                "records_by_source": {k.split(":", 1)[1]: v for k, v in sorted(counts.items())
                                      if k.startswith("source:")},
                "records_by_superclass": {
                    c: counts[f"superclass:{c}"] for c in labels.PTBXL_CLASSES},
            }
        self.info.metadata.update({
            "split_unit": "record",
            "split_rule": "SHA-256 of '<split_seed>:<record name>' (tfds_builders.splits."
                          "record_hash_split) against split_bounds",
            "multilabel_codes": list(codes),
            "superclass_names": list(labels.PTBXL_CLASSES),
            "superclasses_unexpressible": [c for c in labels.PTBXL_CLASSES if c not in mapped],
            "gain_rule": challenge_format.GAIN_RULE,
            "written_records": per_split,
            "indexed_records_by_source": {k.split(":", 1)[1]: v
                                          for k, v in sorted(self._indexed.items())},
            "unknown_dx_tokens": dict(self._unknown_dx.most_common(MAX_LISTED_UNKNOWN)),
        })
