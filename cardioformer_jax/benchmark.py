"""Speed of the model on this machine, as one JSON object.

    python -m cardioformer_jax.benchmark --config=configs/ptbxl.py [--batch_size=128]
        [--config.model.dtype=bfloat16] [--steps=5] [--eval_batch_size=256]

Measures, on random inputs of the config's shape: compile time of the training step,
training samples/s (forward, backward and Adam update), evaluation samples/s (eval-mode
forward), single-sample inference latency, peak host memory, model FLOPs per training
sample from XLA's cost analysis and the achieved FLOP/s (and MFU where the device's peak
is known or given with --peak_tflops).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from cardioformer_jax.models.cardioformer import Cardioformer, ModelConfig, count_params

# Dense peak TFLOP/s per device (bf16 / fp32 non-tensor-core) for MFU; others need --peak_tflops.
_KNOWN_PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 19.5},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0},
}


def _make_train_step(graphdef: nnx.GraphDef) -> Callable:
    def train_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return train_step


def _model_and_optimizer(config: ModelConfig, tx: optax.GradientTransformation):
    model = Cardioformer(config, rngs=nnx.Rngs(params=0, dropout=1))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _create_state(config: ModelConfig, tx: optax.GradientTransformation):
    # Initialising under jit builds the 8.7 M parameters in one compiled program instead of
    # hundreds of eager ops.
    graphdef = nnx.split(nnx.eval_shape(lambda: _model_and_optimizer(config, tx)))[0]
    state = jax.jit(lambda: nnx.state(_model_and_optimizer(config, tx)))()
    return graphdef, state


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Mean seconds per call, after the caller's own warm-up."""
    start = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _step_seconds(compiled: Callable, state: Any, x: jax.Array, y: jax.Array, steps: int
                  ) -> tuple[np.ndarray, Any, jax.Array]:
    """Seconds of each of ``steps`` training steps, without a host sync between them.

    Every step is dispatched first; each step's duration is then the gap between the
    moments its loss and the previous one become ready (the donated state makes the steps
    run one after the other), so the device stays as busy as in a training loop. Returns
    the seconds, the final state and the last loss.
    """
    start = time.perf_counter()
    losses = []
    for _ in range(steps):
        state, loss = compiled(state, x, y)
        losses.append(loss)
    done = []
    for loss in losses:
        jax.block_until_ready(loss)
        done.append(time.perf_counter())
    return np.diff(np.asarray([start, *done])), state, losses[-1]


def train_speed_fields(batch: int, step_seconds: Sequence[float]) -> dict[str, Any]:
    """Mean step seconds and training samples/s (mean, median, slowest and fastest step).

    Shared with ``torch_reference`` so that both report the same fields the same way.
    """
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


def _flops_per_sample(config: ModelConfig, tx, batch: int) -> float:
    """Training FLOPs per sample from XLA's cost analysis of the unrolled step.

    Cost analysis counts a scan body once, so this lowers (without compiling) a variant
    with every layer unrolled.
    """
    unrolled = dataclasses.replace(config, scan_unroll=config.e_layers)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: _model_and_optimizer(unrolled, tx)))
    x = jax.ShapeDtypeStruct((batch, config.seq_len, config.num_channels), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    cost = jax.jit(_make_train_step(graphdef)).lower(state, x, y).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / batch if cost and "flops" in cost else float("nan")


def run(config: ModelConfig, batch: int, eval_batch: int, steps: int,
        peak_tflops: float = 0.0) -> dict[str, Any]:
    """Runs every measurement and returns the JSON-ready results."""
    devices = jax.devices()
    tx = optax.chain(optax.clip_by_global_norm(4.0), optax.adam(1e-4))
    rng = np.random.default_rng(0)
    shape = (config.seq_len, config.num_channels)
    x = jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, config.num_classes, batch), jnp.int32)

    start = time.perf_counter()
    graphdef, state = _create_state(config, tx)
    jax.block_until_ready(state)
    init_seconds = time.perf_counter() - start

    step = jax.jit(_make_train_step(graphdef), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, x, y).compile()
    compile_seconds = time.perf_counter() - start
    state, loss = compiled(state, x, y)  # warm-up
    jax.block_until_ready(loss)

    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    step_seconds, state, loss = _step_seconds(compiled, state, x, y, steps)
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    train_step_seconds = float(np.mean(step_seconds))

    model = nnx.merge(graphdef, state)[0]
    model.eval()
    model_def, model_state = nnx.split(model)
    forward = jax.jit(lambda s, v: nnx.merge(model_def, s)(v))
    x_eval = jnp.asarray(rng.standard_normal((eval_batch, *shape)), jnp.float32)
    start = time.perf_counter()
    jax.block_until_ready(forward(model_state, x_eval))
    eval_compile_seconds = time.perf_counter() - start
    eval_seconds = _timed(lambda: forward(model_state, x_eval), max(2, steps))
    x_one = x_eval[:1]
    jax.block_until_ready(forward(model_state, x_one))
    latency_seconds = _timed(lambda: forward(model_state, x_one), 20)

    flops = _flops_per_sample(config, tx, batch)
    achieved = flops * batch / train_step_seconds
    kind = devices[0].device_kind
    peak = peak_tflops or _KNOWN_PEAK_TFLOPS.get(kind, {}).get(config.dtype, 0.0)
    device_memory = devices[0].memory_stats() or {}
    return {
        "device_kind": kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "jax_version": jax.__version__,
        "dtype": config.dtype,
        "parameters": count_params(nnx.merge(graphdef, state)[0]),
        "batch_size": batch,
        "parallel_chains": config.chains_for_batch(batch),
        "remat": config.remat,
        "scan_unroll": config.scan_unroll,
        "init_seconds": round(init_seconds, 2),
        "compile_seconds": round(compile_seconds, 2),
        **train_speed_fields(batch, step_seconds),
        # Host CPU time and minor page faults of the whole process per step. High system
        # time means costly page faults (fresh temp buffers each step), which on a shared
        # virtual machine vary with what else runs there: it explains slow runs.
        "train_host_user_seconds_per_step": round(
            (usage_after.ru_utime - usage_before.ru_utime) / steps, 4),
        "train_host_system_seconds_per_step": round(
            (usage_after.ru_stime - usage_before.ru_stime) / steps, 4),
        "train_page_faults_per_step": round(
            (usage_after.ru_minflt - usage_before.ru_minflt) / steps),
        "eval_batch_size": eval_batch,
        "eval_compile_seconds": round(eval_compile_seconds, 2),
        "eval_samples_per_second": round(eval_batch / eval_seconds, 2),
        "inference_latency_ms": round(latency_seconds * 1e3, 3),
        "peak_host_memory_mib": peak_host_memory_mib(),
        "peak_device_memory_mib": round(device_memory.get("peak_bytes_in_use", 0) / 2**20, 1)
        or None,
        "train_gflops_per_sample": round(flops / 1e9, 4),
        "achieved_tflops": round(achieved / 1e12, 4),
        "mfu": round(achieved / (peak * 1e12 * len(devices)), 4) if peak else None,
        "final_loss": float(loss),
    }


def _main() -> None:
    # Flags are defined here, not at import, so that other modules (torch_reference) can
    # import this one's helpers and define flags of the same names.
    config_file = config_flags.DEFINE_config_file("config", "configs/ptbxl.py", "Config file.")
    batch = flags.DEFINE_integer("batch_size", 128, "Global training batch size.")
    eval_batch = flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
    steps = flags.DEFINE_integer("steps", 5, "Timed training steps (after one warm-up step).")
    peak = flags.DEFINE_float("peak_tflops", 0.0,
                              "Peak dense TFLOP/s of one device for MFU (0: known devices only).")

    def main(argv: list[str]) -> None:
        del argv
        config = ModelConfig.from_config(config_file.value.model)
        results = run(config, batch.value, eval_batch.value, steps.value, peak.value)
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")

    app.run(main)


if __name__ == "__main__":
    _main()
