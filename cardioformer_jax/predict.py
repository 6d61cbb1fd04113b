r"""Command line: class probabilities of raw WFDB records with a trained model.

    python -m cardioformer_jax.predict --workdir=RUN [--workdir=RUN_B ...] \
        RECORD_OR_FOLDER... [--json] [--seed=S] [--batch_size=N]

A record is a path without extension or its ``.hea``; a folder stands for every record
under it. Each record is prepared as the model's training data were, and its class
probabilities are the mean over its samples (`cardioformer_jax.evaluation.predictions`).
A record that cannot be used gets a one-line reason on stderr; the others are still
predicted. Several ``--workdir`` runs predict as an ensemble: the mean of their
probabilities. Exit status: 0 when at least one record was predicted, 1 when none was (or the
command line is wrong), 2 when the workdir cannot be loaded.
"""

from __future__ import annotations

import sys


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags

    from cardioformer_jax.core import paths
    from cardioformer_jax.evaluation import inference, predictions

    workdir = paths.DEFINE_multi_path(
        "workdir", None, "The training --workdir (single run or multi-seed; a local path or "
        "a URL such as gs://bucket/run); repeat it for an ensemble (mean probabilities).",
        required=True)
    as_json = flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
    seed = flags.DEFINE_integer(
        "seed", None, "Multi-seed workdir: the seed's run (default: the best "
        "by the validation selection metric).")
    batch_size = flags.DEFINE_integer("batch_size", inference.DEFAULT_BATCH_SIZE,
                                      "Samples per model call.", lower_bound=1)

    def main(argv: list[str]) -> None:
        if len(argv) < 2:
            raise app.UsageError("give at least one RECORD_OR_FOLDER: record paths (without "
                                 "extension, or .hea) or folders")
        try:
            # A quoted '~/x' or '$DATA/x' reaches us unexpanded, as in a flag.
            records = [paths.expand_path(r, "record") for r in argv[1:]]
        except ValueError as error:
            raise app.UsageError(str(error)) from error
        sys.exit(predictions.run_cli(workdir.value, records, as_json=as_json.value,
                                     seed=seed.value, batch_size=batch_size.value))

    app.run(main)


if __name__ == "__main__":
    _main()
