r"""Command line: a report on a trained run's best checkpoint.

    python -m cardioformer_jax.evaluate --workdir=RUN [--split=test] [--seed=S] \
        [--data_dir=DIR] [--bootstrap=1000] [--dataset=NAME[/config]]
    python -m cardioformer_jax.evaluate --workdir=RUN_A --workdir=RUN_B [...] --out=DIR

Writes ``report.md`` (``report_<split>.md`` for another split), ``plots/<split>_*.png``,
``evaluation.json`` (``evaluation_<split>.json``, with 95% bootstrap confidence intervals;
``--bootstrap=0`` leaves them out), ``predictions.csv`` and ``MODEL_CARD.md`` (suffixed
likewise) to the workdir (local or ``gs://...``) and prints a one-line summary
(`cardioformer_jax.evaluation.report`). A multi-seed workdir is evaluated seed by seed for
the mean ± std; the detailed sections and plots are of one seed (``--seed``, default the
best validation selection metric). A multi-label run (the PTB-XL benchmark) gets the
multi-label report: macro AUROC, Fmax, per-class AUROC. With ``--dataset`` (and
``--data_dir``, where it is built) the run is validated externally on another dataset
(`cardioformer_jax.evaluation.external`), written to ``RUN/external_<name>-<config>/``.
Several ``--workdir`` runs with ``--out=DIR`` are evaluated together as an ensemble: each
member, their mean and a stacked logistic regression fitted on validation
(`cardioformer_jax.evaluation.ensemble`). Exit status 1 when the run or its dataset cannot
be read.
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
