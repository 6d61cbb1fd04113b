"""The benchmark's measurements of the very programs training runs (docs/benchmarks.md)."""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from cardioformer_jax import config_lib, models
from cardioformer_jax.aot import analysis
from cardioformer_jax.core import sharding, tasks
from cardioformer_jax.data import input_pipeline, tabular
from cardioformer_jax.training import steps

# Dense peak TFLOP/s per device (bf16 / fp32 non-tensor-core) for MFU; others need --peak_tflops.
_KNOWN_PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 19.5},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0},
}


def _setup(config: ml_collections.ConfigDict, batch: int, eval_batch: int
           ) -> tuple[ml_collections.ConfigDict, jax.sharding.Mesh, np.random.Generator,
                      dict[str, jax.Array]]:
    """The config at the benchmark's batches, its checked mesh, the rng and a training batch."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.batch_size = batch
    config.train.eval_batch_size = eval_batch
    mesh = sharding.mesh_from_config(config)
    steps.check_fits(config, mesh)
    rng = np.random.default_rng(0)
    return config, mesh, rng, _random_batch(config, batch, rng, mesh)


def _random_batch(config: ml_collections.ConfigDict, rows: int, rng: np.random.Generator,
                  mesh: jax.sharding.Mesh, evaluation: bool = False) -> dict[str, jax.Array]:
    """A global batch of `rows` random examples, split over `mesh` like the pipeline's."""
    model = config.model
    if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        rows //= jax.process_count()  # each process feeds its own rows
    host = {
        "signal": rng.standard_normal((rows, config.input.seq_len, config.input.num_channels)
                                      ).astype(np.float32),
        "label": tasks.from_config(config).random_labels(rng, rows, config.dataset.num_classes),
    }
    if model.tabular != "none":
        host["tabular"] = tabular.tabular_features(rng.uniform(20, 90, rows),
                                                   rng.integers(0, 2, rows))
    if evaluation:
        host["mask"] = np.ones(rows, np.int32)
    return sharding.global_batch(host, mesh)


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Mean seconds per call, after the caller's own warm-up."""
    start = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def seconds_per_call(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn` (which waits), after one warm-up."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _compile_and_warm_up(program: Any, state: Any, batch: Any) -> tuple[Callable, float, Any]:
    """`program` compiled for (`state`, `batch`), the seconds, the state after one step."""
    start = time.perf_counter()
    step = program.lower(state, batch).compile()
    seconds = time.perf_counter() - start
    state, step_metrics = step(state, batch)  # warm-up
    jax.block_until_ready(step_metrics)
    return step, seconds, state


def _step_seconds(step: Callable, state: steps.TrainState, batch: Mapping[str, jax.Array],
                  num_steps: int) -> tuple[np.ndarray, steps.TrainState, jax.Array]:
    """Seconds of each of ``num_steps`` training steps, all dispatched first as the loop does
    (a step's time: the gap between its loss and the previous one becoming ready), the final
    state and the last loss."""
    start = time.perf_counter()
    losses = []
    for _ in range(num_steps):
        state, step_metrics = step(state, batch)
        losses.append(step_metrics["loss"])
    done = []
    for loss in losses:
        jax.block_until_ready(loss)
        done.append(time.perf_counter())
    return np.diff(np.asarray([start, *done])), state, losses[-1]


def train_speed_fields(batch: int, step_seconds: Sequence[float]) -> dict[str, Any]:
    """Mean step seconds and training samples/s (mean, median, slowest and fastest step);
    ``torch_reference`` reports the same fields."""
    step_seconds = np.asarray(step_seconds, np.float64)
    mean = float(step_seconds.mean())
    return {
        "train_step_seconds": round(mean, 4),
        "train_samples_per_second": round(batch / mean, 2),
        # Per-step spread: on a shared machine one run's steps can differ by 20% or more.
        "train_samples_per_second_median": round(batch / float(np.median(step_seconds)), 2),
        "train_samples_per_second_range": [round(batch / float(step_seconds.max()), 2),
                                           round(batch / float(step_seconds.min()), 2)],
    }


def peak_host_memory_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _latency_ms(config: ml_collections.ConfigDict, state: steps.TrainState,
                device: jax.Device, rng: np.random.Generator) -> float:
    """Median milliseconds of the compiled evaluation of one sample on `device`."""
    one_device = sharding.create_mesh((1, 1), devices=[device])
    single = steps.programs(config, one_device)
    params = jax.device_put(state.swa_params, single.shardings.swa_params)
    model_rngs = jax.device_put(state.rngs, single.shardings.rngs)
    sample = _random_batch(config, 1, rng, one_device, evaluation=True)
    forward = single.eval.lower(params, model_rngs, sample).compile()
    seconds = seconds_per_call(
        lambda: jax.block_until_ready(forward(params, model_rngs, sample)), 20)
    return round(float(np.median(seconds)) * 1e3, 3)


def sweep(config: ml_collections.ConfigDict, batch_sizes: Sequence[int],
          dtypes: Sequence[str], num_steps: int, peak_tflops: float = 0.0) -> dict[str, Any]:
    """`run` per compute dtype and batch size, and the best training throughput per dtype."""
    runs, best = [], {}
    for dtype in dtypes:
        dtype_config = ml_collections.ConfigDict(config.to_dict())
        dtype_config.model.dtype = dtype
        for index, batch in enumerate(batch_sizes):
            result = run(dtype_config, batch, batch, num_steps, peak_tflops,
                         latency=index == 0)
            runs.append(result)
            if result["train_samples_per_second"] > best.get(dtype, {}).get(
                    "train_samples_per_second", 0.0):
                best[dtype] = {name: result[name] for name in (
                    "batch_size", "train_samples_per_second", "mfu", "compile_seconds",
                    "eval_samples_per_second", "peak_device_memory_mib")}
    return {"runs": runs, "best_by_dtype": best}


def mib_per_device(tree: Any) -> dict[str, float]:
    """MiB of `tree`'s arrays (shards, replicas) held by each of this process's devices."""
    held: dict[str, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", ()):
            held[str(shard.device)] = held.get(str(shard.device), 0) + shard.data.nbytes
    return {device: round(size / 2**20, 3) for device, size in held.items()}


def _memory_fields(state: steps.TrainState) -> dict[str, Any]:
    """Parameter and whole-state MiB: in all, and on the most loaded device."""
    def total(tree: Any) -> float:
        return round(sum(leaf.nbytes for leaf in jax.tree.leaves(tree)) / 2**20, 3)

    return {
        "param_mib": total(state.params),
        "param_mib_per_device": max(mib_per_device(state.params).values()),
        "train_state_mib": total(state),
        "train_state_mib_per_device": max(mib_per_device(state).values()),
    }


def run(config: ml_collections.ConfigDict, batch: int, eval_batch: int, num_steps: int,
        peak_tflops: float = 0.0, latency: bool = True) -> dict[str, Any]:
    """Runs every measurement of `config`'s model at `batch` and `eval_batch` (both must
    divide over the config's mesh) and returns the JSON-ready results (docs/benchmarks.md).
    ``latency=False`` skips the single-sample latency (reported as None).
    """
    config, mesh, rng, train_batch = _setup(config, batch, eval_batch)
    spec = models.network_config(config)
    devices = list(mesh.devices.flat)

    start = time.perf_counter()
    state, programs = steps.create_train_state(config, mesh)
    jax.block_until_ready(state)
    init_seconds = time.perf_counter() - start

    step, compile_seconds, state = _compile_and_warm_up(programs.train, state, train_batch)

    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    step_seconds, state, loss = _step_seconds(step, state, train_batch, num_steps)
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    train_step_seconds = float(np.mean(step_seconds))

    # As at an epoch end: the SWA update, then evaluation of the averaged parameters.
    state = programs.swa(state)
    eval_batch_arrays = _random_batch(config, eval_batch, rng, mesh, evaluation=True)
    start = time.perf_counter()
    evaluate = programs.eval.lower(state.swa_params, state.rngs, eval_batch_arrays).compile()
    eval_compile_seconds = time.perf_counter() - start
    jax.block_until_ready(evaluate(state.swa_params, state.rngs, eval_batch_arrays))
    eval_seconds = _timed(lambda: evaluate(state.swa_params, state.rngs, eval_batch_arrays),
                          max(2, num_steps))

    latency_ms = _latency_ms(config, state, devices[0], rng) if latency else None

    flops = analysis.model_flops_per_sample(config, batch)
    achieved = flops * batch / train_step_seconds
    kind = devices[0].device_kind
    dtype = getattr(spec, "dtype", "float32")
    peak = peak_tflops or _KNOWN_PEAK_TFLOPS.get(kind, {}).get(dtype, 0.0)
    device_memory = devices[0].memory_stats() or {}
    return {
        "device_kind": kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "jax_version": jax.__version__,
        "model_name": models.model_name(config),
        "dtype": dtype,
        "parameters": models.count_params(state.params),
        "batch_size": batch,
        # The Cardioformer's execution settings (None for other models).
        "kernels": getattr(spec, "kernels", None),
        "remat": getattr(spec, "remat", None),
        "scan_unroll": getattr(spec, "scan_unroll", None),
        "init_seconds": round(init_seconds, 2),
        "compile_seconds": round(compile_seconds, 3),
        **train_speed_fields(batch, step_seconds),
        "train_samples_per_second_per_device": round(batch / train_step_seconds / len(devices),
                                                     2),
        **_memory_fields(state),
        # Host CPU time and minor page faults of the whole process per step. High system
        # time means costly page faults (fresh temp buffers each step), which on a shared
        # virtual machine vary with what else runs there: it explains slow runs.
        "train_host_user_seconds_per_step": round(
            (usage_after.ru_utime - usage_before.ru_utime) / num_steps, 4),
        "train_host_system_seconds_per_step": round(
            (usage_after.ru_stime - usage_before.ru_stime) / num_steps, 4),
        "train_page_faults_per_step": round(
            (usage_after.ru_minflt - usage_before.ru_minflt) / num_steps),
        "eval_batch_size": eval_batch,
        "eval_compile_seconds": round(eval_compile_seconds, 3),
        "eval_samples_per_second": round(eval_batch / eval_seconds, 2),
        "inference_latency_ms": latency_ms,
        "peak_host_memory_mib": peak_host_memory_mib(),
        "peak_device_memory_mib": round(device_memory.get("peak_bytes_in_use", 0) / 2**20, 1)
        or None,
        "train_gflops_per_sample": round(flops / 1e9, 4),
        "achieved_tflops": round(achieved / 1e12, 4),
        "mfu": round(achieved / (peak * 1e12 * len(devices)), 4) if peak else None,
        "final_loss": float(loss),
    }


def seeds_speed(config: ml_collections.ConfigDict, batch: int, num_steps: int,
                num_seeds: int) -> dict[str, Any]:
    """`num_seeds` seeds trained one after another against together (docs/benchmarks.md)."""
    config, mesh, rng, train_batch = _setup(config, batch, batch)
    state, one = steps.create_train_state(config, mesh)
    step, one_compile, state = _compile_and_warm_up(one.train, state, train_batch)
    one_seconds, state, _ = _step_seconds(step, state, train_batch, num_steps)
    del state

    together = steps.seed_programs(one, num_seeds)
    seed, learning_rate = steps.init_args(config)
    stacked = together.stack(*(one.init(seed + i, learning_rate) for i in range(num_seeds)))
    batches = tuple(_random_batch(config, batch, rng, mesh) for _ in range(num_seeds))
    vstep, together_compile, stacked = _compile_and_warm_up(together.train, stacked, batches)
    together_seconds, stacked, _ = _step_seconds(vstep, stacked, batches, num_steps)
    one_mean, together_mean = float(np.mean(one_seconds)), float(np.mean(together_seconds))
    return {
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "model_name": models.model_name(config),
        "seeds": num_seeds,
        "batch_size": batch,
        # A persistent compilation cache can make a compile nearly free.
        "one_seed_compile_seconds": round(one_compile, 3),
        "together_compile_seconds": round(together_compile, 3),
        "one_seed_step_seconds": round(one_mean, 6),
        "together_step_seconds": round(together_mean, 6),
        # Samples of all seeds per second: one after another runs K one-seed steps.
        "one_after_another_samples_per_second": round(batch / one_mean, 2),
        "together_samples_per_second": round(num_seeds * batch / together_mean, 2),
        "speedup": round(num_seeds * one_mean / together_mean, 3),
        "together_state_mib_per_device": _memory_fields(stacked)["train_state_mib_per_device"],
        "peak_host_memory_mib": peak_host_memory_mib(),
    }


def input_pipeline_rates(config: ml_collections.ConfigDict, batch: int,
                         workers: Sequence[int], num_batches: int) -> dict[str, Any]:
    """Samples/s of the training input pipeline alone, per Grain worker count."""
    config = copy.deepcopy(config)
    config.train.batch_size = batch
    config_lib.validate_config(config)
    mesh = sharding.mesh_from_config(config)
    input_pipeline.check_dataset(config, ("train",))
    rates = {}
    for count in workers:
        config.dataset.num_workers = count
        rates[str(count)] = round(input_pipeline.measure_throughput(
            config, num_batches=num_batches, mesh=mesh), 1)
    return {
        "dataset": input_pipeline.DataSpec.from_config(config).label,
        "batch_size": batch,
        "num_threads": int(config.dataset.num_threads),
        "mesh": dict(mesh.shape),
        "input_samples_per_second_by_workers": rates,
    }
