"""Command line: class probabilities of raw WFDB records with a trained model.

    python -m cardioformer_jax.predict --workdir=RUN RECORD_OR_FOLDER... [--json]

docs/usage.md, "After training"; exit status 1 when no record was predicted, 2 for a bad RUN.
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
