"""Command line: time the PyTorch re-creation of the reference model's training step."""

from __future__ import annotations

import json

from cardioformer_jax.interop.torch_reference import time_training


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    from absl import app, flags
    from ml_collections import config_flags

    from cardioformer_jax import config_lib, models

    config = config_flags.DEFINE_config_file("config", "configs/ptbxl.py", "Config file.")
    batch = flags.DEFINE_integer("batch_size", 128, "Training batch size.")
    steps = flags.DEFINE_integer("steps", 5, "Timed training steps (after one warm-up).")
    threads = flags.DEFINE_integer("threads", 0, "PyTorch intra-op threads (0: default).")

    def run(argv: list[str]) -> None:
        del argv
        result = time_training(models.network_config(config.value), batch.value, steps.value,
                               threads.value)
        print(json.dumps(result, indent=2))

    app.run(run, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    _main()
