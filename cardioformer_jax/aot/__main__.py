"""Compile a config's training programs for an accelerator target, without the hardware.

    python -m cardioformer_jax.aot --config=configs/ptbxl.py --target=tpu:v5p:2x2x1

JSON on stdout, exit status 1 when a program does not fit; docs/usage.md, "Accelerators".
"""

from __future__ import annotations

import json
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from cardioformer_jax import config_lib
from cardioformer_jax.aot import analysis, targets


def main() -> None:
    config_file = config_flags.DEFINE_config_file("config", None, "Config file.")
    target_name = flags.DEFINE_string(
        "target", None, f"What to compile for, e.g. {', '.join(targets.EXAMPLES)}.")
    batch = flags.DEFINE_string(
        "batch_size", "config", "Training batch per device (the global batch is this times "
        "the devices the batch is split over); 'config': the config's train.batch_size "
        "split over the target's devices; 'max': the largest that fits.")
    estimate = flags.DEFINE_bool(
        "estimate", True, "TPU: also compile the step with the layers unrolled for the "
        "compiler's loop-aware step-time estimate (a second compile).")
    programs = flags.DEFINE_list(
        "programs", list(analysis.PROGRAMS), "Which programs to compile (train always).")
    flags.mark_flags_as_required(["config", "target"])

    def run(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        # Compiles only: the host's own backend is the CPU whatever else is installed.
        jax.config.update("jax_platforms", "cpu")
        config = config_file.value
        config_lib.validate_config(config)
        try:
            target = targets.parse(target_name.value)
        except (ValueError, RuntimeError) as error:
            raise app.UsageError(str(error)) from error
        search = None
        if batch.value == "max":
            search = analysis.max_per_device_batch(config, target)
            per_device = search["max_per_device_batch"]
            if per_device == 0:
                print(json.dumps({"target": target.name, "fits": False,
                                  "batch_search": search}, indent=2))
                sys.exit(1)
        elif batch.value == "config":
            try:
                per_device = analysis.config_per_device_batch(config, target)
            except ValueError as error:
                raise app.UsageError(str(error)) from error
        elif batch.value.isdigit() and int(batch.value) > 0:
            per_device = int(batch.value)
        else:
            raise app.UsageError(f"--batch_size={batch.value!r}: a positive integer, "
                                 "'config' or 'max'")
        try:
            result = analysis.report(config, target, per_device, estimate=estimate.value,
                                     programs_to_compile=tuple(programs.value))
        except ValueError as error:  # a batch or mesh the target cannot take
            raise app.UsageError(str(error)) from error
        if search is not None:
            result["batch_search"] = search
        print(json.dumps(result, indent=2))
        print(analysis.summary(result), file=sys.stderr)
        if not result["fits"]:
            sys.exit(1)

    app.run(run, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    main()
