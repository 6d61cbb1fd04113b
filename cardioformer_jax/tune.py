"""Command line: hyper-parameter tuning with Optuna, one worker per invocation.

    python -m cardioformer_jax.tune --config=configs/ptbxl.py --workdir=DIR --trials=50

docs/tuning.md; exit status 1 for a dataset that is not built or a study of another config.
"""

from __future__ import annotations

import sys


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags, logging
    from ml_collections import config_flags

    from cardioformer_jax import config_lib
    from cardioformer_jax.core import paths
    from cardioformer_jax.tuning import study

    defaults = study.Settings(trials=1)
    config = config_flags.DEFINE_config_file(
        "config", None, "The base training configuration (a configs/*.py file).",
        lock_config=True)
    flags.mark_flag_as_required("config")
    workdir = paths.DEFINE_path(
        "workdir", None, "Local folder of the trials' runs and the outputs (and of the "
        "default SQLite study).", required=True)
    trials = flags.DEFINE_integer(
        "trials", None, "Finished (complete + pruned) trials wanted in the study, over all "
        "its workers.", required=True, lower_bound=1)
    storage = flags.DEFINE_string(
        "storage", None, "SQLAlchemy URL of the study database (default: "
        "sqlite:///WORKDIR/study.db); e.g. postgresql://user:pass@host/db for many hosts.")
    study_name = flags.DEFINE_string(
        "study", None, "Study name (default: <model_name>-<dataset>).")
    search = paths.DEFINE_path(
        "search", None, "Search-space file defining search_space(trial, config) (default: "
        "configs/search/<model_name>.py).")
    pruner = flags.DEFINE_enum("pruner", defaults.pruner, list(study.PRUNERS),
                               "Pruning of trials on their per-epoch validation metric.")
    integers = {  # Settings field: (lower bound, help); the default is the field's
        "seed": (None, "Seed of the TPE sampler."),
        "worker": (0, "This worker's index (0, 1, ...): concurrent workers need distinct ones, "
                   "or their samplers propose the same first trials."),
        "pruner_startup_trials": (0, "No pruning before this many trials have finished."),
        "pruner_warmup_epochs": (0, "No trial is pruned before it has reported this many "
                                 "epochs."),
        "heartbeat_interval": (1, "Seconds between a running trial's heartbeats."),
        "grace_period": (2, "Seconds without a heartbeat after which a trial's worker counts "
                         "as dead: its trial is failed and retried."),
        "max_retry": (0, "Retries of a dead worker's trial."),
    }
    integer_flags = {name: flags.DEFINE_integer(name, getattr(defaults, name), text,
                                                lower_bound=low)
                     for name, (low, text) in integers.items()}
    cache_dir = paths.DEFINE_path(
        "compilation_cache_dir", None, "Persistent XLA compilation cache ('' disables). "
        "Default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/cardioformer_jax/xla.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        import logging as std_logging

        from cardioformer_jax.core import logging_utils
        from cardioformer_jax.training import train

        train.set_compilation_cache(cache_dir.value)

        logging_utils.quiet_orbax(std_logging.WARNING, logging.get_absl_handler())
        try:
            settings = study.Settings(
                trials=trials.value, storage=storage.value, study_name=study_name.value,
                search=search.value, pruner=pruner.value,
                **{name: flag.value for name, flag in integer_flags.items()})
            summary = study.run(config.value, workdir.value, settings)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        best = summary["best"]
        if best is None:
            print(f"study {summary['study']}: no complete trial; report: "
                  f"{workdir.value}/tuning_report.md")
        else:
            print(f"study {summary['study']}: best trial {best['number']} validation "
                  f"{summary['selection_metric']}={best['value']:.4f} of {summary['counted']} "
                  f"trials; config: {summary['best_config']}")

    app.run(main, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    _main()
