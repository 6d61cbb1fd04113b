"""Command line: a trained model as a self-contained `jax.export` artifact for serving.

    python -m cardioformer_jax.export --workdir=RUN --out=model.jax_exported [--seed=S]

docs/usage.md, "After training"; exit status 1 when the workdir cannot be loaded.
"""

from __future__ import annotations

import sys


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags

    from cardioformer_jax.core import paths
    from cardioformer_jax.evaluation import export

    workdir = paths.DEFINE_path("workdir", None, "The training --workdir (a local path or "
                                  "a URL such as gs://bucket/run).", required=True)
    out = paths.DEFINE_path("out", None, "The exported model file, e.g. model.jax_exported "
                              "(its metadata goes next to it, with .json); a local path or a "
                              "URL.", required=True)
    seed = flags.DEFINE_integer(
        "seed", None, "Multi-seed workdir: the seed's run (default: the best "
        "by the validation selection metric).")
    platforms = flags.DEFINE_list(
        "platforms", None, "Comma-separated: cpu, cuda, rocm, tpu (default: this machine's).")
    batch_size = flags.DEFINE_integer(
        "batch_size", None, "Fix the batch size (default: symbolic, any batch size).",
        lower_bound=1)

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        sys.exit(export.run_cli(workdir.value, out.value, seed=seed.value,
                                platforms=platforms.value, batch_size=batch_size.value))

    app.run(main)


if __name__ == "__main__":
    _main()
