"""Command line: a report on a trained run's best checkpoint (or an ensemble, or external data).

    python -m cardioformer_jax.evaluate --workdir=RUN [--split=test] [--dataset=NAME[/config]]

docs/usage.md, "After training"; exit status 1 when the run or its dataset cannot be read.
"""

from __future__ import annotations

import sys


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags

    from cardioformer_jax.core import paths
    from cardioformer_jax.evaluation import analysis, report
    from cardioformer_jax.training import train

    workdir = paths.DEFINE_multi_path(
        "workdir", None, "The training --workdir (a local path or a URL such as "
        "gs://bucket/run); repeat it to evaluate several runs as an ensemble (with --out).",
        required=True)
    out = paths.DEFINE_path("out", None, "Ensemble: the folder for its report.")
    split = flags.DEFINE_enum(
        "split", train.TEST_SPLIT, [train.TRAIN_SPLIT, train.VALIDATION_SPLIT, train.TEST_SPLIT],
        "The split to evaluate.")
    seed = flags.DEFINE_integer(
        "seed", None, "Multi-seed workdir: the seed of the detailed sections (default: best "
        "validation F1).")
    data_dir = paths.DEFINE_path(
        "data_dir", None, "Where the dataset is built, if not where training read it.")
    bootstrap = flags.DEFINE_integer(
        "bootstrap", analysis.BOOTSTRAP_RESAMPLES, "Bootstrap resamples for the 95% "
        "confidence intervals (subjects resampled as clusters); 0: no intervals.",
        lower_bound=0)

    dataset = flags.DEFINE_string(
        "dataset", None, "External validation: evaluate on this dataset, NAME[/config] "
        "(e.g. cinc2021/records_100hz), built in --data_dir.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if len(workdir.value) > 1:
            from cardioformer_jax.evaluation import ensemble

            sys.exit(ensemble.run_cli(workdir.value, out.value, split.value,
                                      data_dir=data_dir.value,
                                      bootstrap_resamples=bootstrap.value))
        sys.exit(report.run_cli(workdir.value[0], split.value, seed=seed.value,
                                data_dir=data_dir.value,
                                bootstrap_resamples=bootstrap.value,
                                dataset=dataset.value))

    app.run(main)


if __name__ == "__main__":
    _main()
