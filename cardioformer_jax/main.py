"""Command line: train and evaluate Cardioformer with a config file.

    python -m cardioformer_jax.main --config=configs/ptbxl.py --workdir=DIR \
        [--config.train.batch_size=256 ...]

Any config field can be overridden (`ml_collections.config_flags`); unknown fields are an
error. Rerunning the same command resumes from the latest checkpoint in DIR. Multi-host
(TPU pods, GPU clusters): pass --jax_distributed on every process.
"""

from __future__ import annotations

import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cardioformer_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training configuration (a configs/*.py file).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False,
    "Call jax.distributed.initialize() first (multi-process runs; the cluster is detected).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax() -> None:
    """Drops Orbax's INFO lines (a dozen per checkpoint) from the console; its warnings and
    errors stay. Orbax logs through absl like this program, so filter by source path."""

    def keep(record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

    logging.get_absl_handler().addFilter(keep)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_orbax()
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)  # process 0 reports for everyone
    logging.info("JAX %s, %d processes, devices: %s", jax.__version__, jax.process_count(),
                 jax.devices())
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except FileNotFoundError as error:
        # A dataset that is not built: the message holds the command that builds it, a
        # traceback would only bury it. Other errors keep theirs.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
