"""Command line: build a Cardioformer ECG dataset as TFDS ArrayRecord (no TensorFlow).

    python -m cardioformer_jax.build_dataset {ptbxl|ptb|mimic_iv_ecg|cinc2021} --data_dir=DIR

docs/usage.md, "Datasets"; exit status 1 with an ``error:`` line when the source cannot be used.
"""

from __future__ import annotations

import sys


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags

    from cardioformer_jax.core import paths
    from cardioformer_jax.data import datasets

    manual_dir = paths.DEFINE_path(
        "manual_dir", None,
        "Unpacked PhysioNet folder (or its parent); omit to download the open-access zip.")
    data_dir = paths.DEFINE_path("data_dir", None, "Where the TFDS datasets are written.",
                                   required=True)
    builder_config = flags.DEFINE_string(
        "builder_config", None, f"TFDS builder config (default: {datasets.DEFAULT_CONFIG}).")
    num_workers = flags.DEFINE_integer(
        "num_workers", None, "Record-processing processes (default: all cores; 0: in this "
        "process).", lower_bound=0)
    split_bounds = flags.DEFINE_list(
        "split_bounds", None,
        "Cumulative split bounds a,b: per class floor(a*n) train, up to floor(b*n) "
        "validation, the rest test (derives a config named <config>-b<a>-<b>).")
    split_seed = flags.DEFINE_integer(
        "split_seed", None, "Shuffle the subjects of each class with this seed before "
        "splitting (derives a config named <config>-seed<N>).")
    no_progress = flags.DEFINE_bool("no_progress", False, "No progress bar.")
    register_checksums = flags.DEFINE_bool(
        "register_checksums", False,
        "Record the downloaded archive's size and SHA-256 in the builder's checksums.tsv.")

    def _bounds_ok(value: list[str] | None) -> bool:
        try:
            return value is None or bool(datasets.parse_split_bounds(value))
        except ValueError:
            return False

    flags.register_validator(split_bounds, _bounds_ok,
                             "expected two numbers a,b (e.g. 0.6,0.8)")

    def main(argv: list[str]) -> None:
        if len(argv) != 2 or argv[1] not in datasets.DATASETS:
            raise app.UsageError(f"give one dataset name, one of {', '.join(datasets.DATASETS)}"
                                 f"; got {argv[1:]}")
        bounds = None if split_bounds.value is None else datasets.parse_split_bounds(
            split_bounds.value)
        try:
            builder = datasets.build(
                argv[1], manual_dir.value, data_dir.value, builder_config.value,
                num_workers=num_workers.value, split_bounds=bounds, split_seed=split_seed.value,
                progress=not no_progress.value, register_checksums=register_checksums.value)
        except (FileNotFoundError, ValueError) as error:
            # A missing source folder or file, an unknown config, no usable record: the
            # message says what is wrong; a traceback would only bury it.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        print(datasets.summary(builder))

    app.run(main)


if __name__ == "__main__":
    _main()
