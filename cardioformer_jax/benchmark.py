"""Command line: speed of training on this machine, as one JSON object (docs/benchmarks.md).

    python -m cardioformer_jax.benchmark --config=configs/ptbxl.py [--compare_reference] [--seeds=K]

The measurements are `cardioformer_jax.benchmarking`; docs/usage.md, "Benchmark".
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from cardioformer_jax import benchmarking, config_lib


def _main() -> None:
    # Flags are defined here, not at import: importing this module must not define flags.
    config_file = config_flags.DEFINE_config_file("config", "configs/ptbxl.py", "Config file.")
    batch = flags.DEFINE_integer("batch_size", 128, "Global training batch size.")
    eval_batch = flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
    num_steps = flags.DEFINE_integer("steps", 5, "Timed training steps (after one warm-up step).")
    peak = flags.DEFINE_float("peak_tflops", 0.0,
                              "Peak dense TFLOP/s of one device for MFU (0: known devices only).")
    pipeline = flags.DEFINE_bool(
        "input_pipeline", False, "Time the training input pipeline alone, on the config's "
        "built dataset (--config.dataset.data_dir), instead of the model.")
    workers = flags.DEFINE_list("pipeline_workers", ["0"],
                                "With --input_pipeline: Grain worker process counts to compare.")
    batches = flags.DEFINE_integer("pipeline_batches", 50,
                                   "With --input_pipeline: batches timed (after 5 warm-up).")
    batch_sizes = flags.DEFINE_list(
        "sweep_batch_sizes", [], "Run every measurement at each of these batch sizes (training "
        "and evaluation) and each --sweep_dtypes, e.g. 256,1024,4096.")
    dtypes = flags.DEFINE_list("sweep_dtypes", ["float32", "bfloat16"],
                               "With --sweep_batch_sizes: the compute dtypes to run.")
    reference = flags.DEFINE_bool(
        "compare_reference", False, "Also time the PyTorch re-creation of the reference "
        "(needs the [torch] extra) in this process, and print both and the ratios.")
    rounds = flags.DEFINE_integer("rounds", 1, "With --compare_reference: reference-then-"
                                  "this-port rounds (their spread shows the host's noise).")
    threads = flags.DEFINE_integer("torch_threads", 0, "With --compare_reference: PyTorch "
                                   "intra-op threads (0: PyTorch's default).")

    seeds = flags.DEFINE_integer(
        "seeds", 0, "> 1: time K seeds trained together (one vmapped step) against one "
        "after another (train.vectorize_seeds), instead of the other measurements.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        config = config_file.value
        if seeds.value > 1:
            results = benchmarking.seeds_speed(config, batch.value, num_steps.value,
                                               seeds.value)
        elif pipeline.value:
            results = benchmarking.input_pipeline_rates(
                config, batch.value, [int(w) for w in workers.value], batches.value)
        elif batch_sizes.value:
            results = benchmarking.sweep(config, [int(b) for b in batch_sizes.value],
                                         dtypes.value, num_steps.value, peak.value)
        elif reference.value:
            from cardioformer_jax.interop import torch_reference  # the comparison's children

            results = torch_reference.compare_reference(config, batch.value, eval_batch.value,
                                                        num_steps.value, rounds.value,
                                                        threads.value)
        else:
            results = benchmarking.run(config, batch.value, eval_batch.value, num_steps.value,
                                       peak.value)
        print(json.dumps(results, indent=2))

    app.run(main, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    _main()
