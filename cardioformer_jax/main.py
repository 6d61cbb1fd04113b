"""Command line: train and evaluate Cardioformer with a config file.

    python -m cardioformer_jax.main --config=configs/ptbxl.py --workdir=DIR [--config.FIELD=V ...]

Rerunning resumes; multi-host runs are detected. docs/usage.md, "Training".
"""

from __future__ import annotations

import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cardioformer_jax import config_lib
from cardioformer_jax.core import logging_utils, paths
from cardioformer_jax.training import checkpointing, distributed, train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training configuration (a configs/*.py file).", lock_config=True)
_WORKDIR = paths.DEFINE_path("workdir", None, "Directory for checkpoints, logs and results.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False,
    "Initialise jax.distributed even when no cluster is recognised (JAX auto-detects).")
_CACHE_DIR = paths.DEFINE_path(
    "compilation_cache_dir", None,
    "Persistent XLA compilation cache ('' disables). Default: $JAX_COMPILATION_CACHE_DIR, "
    "else ~/.cache/cardioformer_jax/xla. A restarted or resumed run then starts in seconds "
    "instead of recompiling.")
_ALLOW_CHANGE = flags.DEFINE_list(
    "allow_config_change", [],
    "Config fields (e.g. train.learning_rate,model.dropout) that may differ from the saved "
    "config when resuming; a resumed run refuses any other change that alters what it "
    "computes. Shapes, dataset and seed can never change.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Orbax's INFO lines leave the console; its warnings and errors stay.
    logging_utils.quiet_orbax(std_logging.WARNING, logging.get_absl_handler())
    # Before anything touches the devices.
    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                 force=_DISTRIBUTED.value)
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)  # process 0 reports for everyone
    train.set_compilation_cache(_CACHE_DIR.value)
    logging.info("JAX %s, %d processes, devices: %s", jax.__version__, jax.process_count(),
                 jax.devices())
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 allow_config_change=_ALLOW_CHANGE.value)
    except (FileNotFoundError, checkpointing.ResumeConfigError) as error:
        # A dataset that is not built, or a workdir whose run does not fit this config:
        # the message says what to do, a traceback would only bury it. Other errors keep
        # theirs.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=config_lib.parse_flags)
