"""Programs compiled for a `targets.Target` and what the compiler says of them (docs/scaling.md)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cardioformer_jax import models
from cardioformer_jax.aot.targets import Target
from cardioformer_jax.core import sharding, tasks
from cardioformer_jax.data import tabular, windows
from cardioformer_jax.ops import resolve_kernels
from cardioformer_jax.training import steps

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute", "ragged-all-to-all")
# Rows of the one-record predict program: a 10 s record in 1 s windows, padded to a power
# of two as `evaluation.inference` pads it.
PREDICT_ROWS = 16
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8,
                "u64": 8, "c64": 8, "c128": 16}
_INSTRUCTION = re.compile(
    r"=\s*(?P<shape>.+?)\s+(?P<op>" + "|".join(sorted(COLLECTIVES, key=len, reverse=True))
    + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]")


def for_target(config: ml_collections.ConfigDict, target: Target, per_device_batch: int
               ) -> ml_collections.ConfigDict:
    """A copy of `config` as it runs on `target`, with `per_device_batch` per device."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.kernels = resolve_kernels(config.model.kernels, target.platform)
    config.resnet.kernels = resolve_kernels(config.resnet.kernels, target.platform)
    mesh = mesh_for(config, target)
    config.train.batch_size = per_device_batch * sharding.batch_divisor(mesh)
    config.train.eval_batch_size = config.train.batch_size
    return config


def config_per_device_batch(config: ml_collections.ConfigDict, target: Target) -> int:
    """The config's ``train.batch_size`` per device of the target (or ValueError)."""
    divisor = sharding.batch_divisor(mesh_for(config, target))
    size = int(config.train.batch_size)
    if size % divisor or size < divisor:
        raise ValueError(f"train.batch_size={size} cannot be split over the {divisor} devices "
                         f"of {target.name}; use a multiple of {divisor}")
    return size // divisor


def mesh_for(config: ml_collections.ConfigDict, target: Target) -> jax.sharding.Mesh:
    """The config's mesh over the target's devices."""
    return sharding.mesh_from_config(config, devices=target.devices)


# The records the crops protocol (`input.crop_seconds`) evaluates: PTB-XL's 10 s.
CROPS_RECORD_SECONDS = 10.0


def abstract_batch(config: ml_collections.ConfigDict, rows: int, mesh: jax.sharding.Mesh,
                   evaluation: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes of a global batch of `rows` as the input pipeline feeds it, split over the
    mesh; an `evaluation` batch of a crops config holds records of `CROPS_RECORD_SECONDS`."""
    model = config.model
    data = sharding.data_sharding(mesh)

    def shape(dims: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(dims, dtype, sharding=data)

    length = config.input.seq_len
    windowing = windows.from_config(config)
    if evaluation and windowing is not None:
        length = round(CROPS_RECORD_SECONDS * config.input.seq_len
                       / float(config.input.crop_seconds))
    batch = {"signal": shape((rows, length, config.input.num_channels), jnp.float32)}
    task = tasks.from_config(config)
    batch["label"] = shape((rows, *task.label_shape(config.dataset.num_classes)),
                           task.label_dtype)
    if model.tabular != "none":
        batch["tabular"] = shape((rows, len(tabular.TABULAR_FEATURES)), jnp.float32)
    if evaluation:
        batch["mask"] = shape((rows,), jnp.int32)
    return batch


def model_flops_per_sample(config: ml_collections.ConfigDict, rows: int) -> float:
    """Training FLOPs per sample (MFU's): XLA's count, layers unrolled, no remat."""
    config = ml_collections.ConfigDict(config.to_dict())
    spec = models.network_config(config)
    if isinstance(spec, models.CardioformerConfig):
        config.model.scan_unroll = spec.e_layers
        config.model.remat = False
    mesh = sharding.create_mesh((1, 1), devices=jax.devices("cpu")[:1])
    programs = steps.programs(config, mesh)
    batch = abstract_batch(config, rows, mesh)
    cost = _cost(programs.train.lower(programs.abstract_state, batch))
    return float(cost["flops"]) / rows if cost and "flops" in cost else math.nan


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Collectives of a compiled HLO module by kind: instruction count and result bytes. Each
    counts once as written (a loop body's once); an asynchronous pair by its ``-start``."""
    found: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.search(line)
        if match is None:
            continue
        sizes = [_DTYPE_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
                 for dtype, dims in _ARRAY.findall(match["shape"])]
        if not sizes:
            continue
        # An async start's result is a tuple holding its operand and result (and, for a
        # permute, two scalars): the result is the largest; an all-reduce's are all results.
        delivered = (sum(sizes) if not match["start"] or match["op"] == "all-reduce"
                     else max(sizes))
        found[match["op"]]["count"] += 1
        found[match["op"]]["bytes"] += delivered
    return dict(sorted(found.items()))


# `memory`'s parts: the fields ``<field>_size_in_bytes`` of XLA's memory analysis.
_MEMORY_PARTS = {"arguments": "argument", "outputs": "output", "aliased": "alias",
                 "temporaries": "temp", "code": "generated_code"}


def memory(compiled: Any, capacity: float) -> dict[str, Any]:
    """Per-device bytes of a compiled program and whether they fit `capacity` bytes."""
    stats = compiled.memory_analysis()
    stats = stats[0] if isinstance(stats, list) else stats
    parts = {name: int(getattr(stats, f"{field}_size_in_bytes"))
             for name, field in _MEMORY_PARTS.items()}
    total = (parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temporaries"]
             + parts["code"])
    return {"bytes": {**parts, "total": total}, **_fit_fields(total, capacity)}


def _fit_fields(total: float, capacity: float) -> dict[str, Any]:
    return {"total_gib": round(total / 2**30, 3), "device_memory_gib": round(capacity / 2**30, 3),
            "headroom_gib": round((capacity - total) / 2**30, 3), "fits": bool(total <= capacity)}


def _cost(compiled: Any) -> dict[str, float] | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # GPU: no cost analysis through the public API
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return dict(cost) if cost else None


@dataclasses.dataclass(frozen=True)
class DoesNotFit:
    """A program the (TPU) compiler refused for want of device memory, with its message."""

    message: str

    def fields(self, capacity: float) -> dict[str, Any]:
        match = _HBM_OOM.search(self.message)  # e.g. "(17.5G)": number and unit
        required = (float(match[1]) * 1024 ** "_KMGT".index(match[2] or "_") if match
                    else math.nan)
        return {"bytes": {"temporaries": required, "total": required},
                **_fit_fields(required, capacity), "fits": False,
                "compiler_error": self.message.strip().splitlines()[0][:500]}


_HBM_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\)")


def _compile(fn: Any, *args: Any) -> tuple[Any, float]:
    """``(compiled or DoesNotFit, seconds)``: DoesNotFit when memory refuses the program."""
    start = time.perf_counter()
    try:
        compiled = fn.lower(*args).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        compiled = DoesNotFit(str(error))
    return compiled, time.perf_counter() - start


def _program_fields(compiled: Any, seconds: float, target: Target, rows: int
                    ) -> dict[str, Any]:
    fields: dict[str, Any] = {"global_batch": rows}
    if isinstance(compiled, DoesNotFit):
        return {**fields, **compiled.fields(target.device_memory_bytes), "collectives": {},
                "compile_seconds": round(seconds, 2)}
    fields.update(memory(compiled, target.device_memory_bytes))
    cost = _cost(compiled)
    if cost and "flops" in cost:
        # The compiler's own count, per device; a loop body (the layers) counted once.
        fields["compiler_flops_per_device_loop_body_once"] = float(cost["flops"])
    fields["collectives"] = collectives(compiled.as_text())
    fields["compile_seconds"] = round(seconds, 2)
    return fields


def compile_train(config: ml_collections.ConfigDict, target: Target) -> tuple[Any, float]:
    """The train step of `config` (already `for_target`) compiled for `target`."""
    mesh = mesh_for(config, target)
    steps.check_fits(config, mesh)
    programs = steps.programs(config, mesh)
    return _compile(programs.train, programs.abstract_state,
                    abstract_batch(config, config.train.batch_size, mesh))


def max_per_device_batch(config: ml_collections.ConfigDict, target: Target,
                         start: int = 64, granularity: int = 8, limit: int = 1 << 16
                         ) -> dict[str, Any]:
    """`largest_fitting` per-device batch of the train step, with the batches tried."""
    tried: dict[int, bool] = {}

    def fits(batch: int) -> bool:
        compiled, _ = compile_train(for_target(config, target, batch), target)
        tried[batch] = (not isinstance(compiled, DoesNotFit)
                        and memory(compiled, target.device_memory_bytes)["fits"])
        return tried[batch]

    best = largest_fitting(fits, start, granularity, limit)
    return {"max_per_device_batch": best, "tried": dict(sorted(tried.items()))}


def largest_fitting(fits: Callable[[int], bool], start: int, granularity: int, limit: int
                    ) -> int:
    """The largest multiple of `granularity` up to `limit` for which `fits` holds, assuming
    it holds below some size and not above: doubling from `start`, then bisection; each
    size is tried once. 0 when not even `granularity` fits."""
    check = functools.cache(fits)
    # The largest size that fits (0: none yet), the next one to try (at last: the smallest
    # that does not fit).
    low, high = 0, min(max(granularity, start // granularity * granularity), limit)
    while check(high):
        low = high
        if high >= limit:
            return low
        high = min(high * 2 // granularity * granularity, limit)
    if low == 0 and high > granularity:
        if not check(granularity):
            return 0
        low = granularity
    while high - low > granularity:
        middle = (low + high) // 2 // granularity * granularity
        if check(middle):
            low = middle
        else:
            high = middle
    return low


PROGRAMS = ("train", "eval", "predict")


def report(config: ml_collections.ConfigDict, target: Target, per_device_batch: int,
           estimate: bool = True, programs_to_compile: tuple[str, ...] = PROGRAMS
           ) -> dict[str, Any]:
    """Everything the compiler says about the config's programs on `target` (one JSON-ready
    dict; `fits` is true only when every program compiled fits the device memory).
    `programs_to_compile`: some of `PROGRAMS` (the train step is always compiled)."""
    unknown = set(programs_to_compile) - set(PROGRAMS)
    if unknown:
        raise ValueError(f"unknown programs {sorted(unknown)}; choose from {PROGRAMS}")
    config = for_target(config, target, per_device_batch)
    mesh = mesh_for(config, target)
    train, seconds = compile_train(config, target)  # checks the batch against the mesh
    rows = config.train.batch_size
    out: dict[str, Any] = {
        "target": target.name, "platform": target.platform, "device_kind": target.device_kind,
        "num_devices": target.num_devices, "slices": target.slices,
        "mesh": {"shape": dict(mesh.shape), "axes": list(mesh.axis_names)},
        "model_name": models.model_name(config), "dtype": config.model.dtype,
        "kernels": config.model.kernels,
        "batch": {"global": rows, "per_device": per_device_batch},
        "device_memory_gib": round(target.device_memory_bytes / 2**30, 3),
        "matmul_precision": matmul_precision(config, target),
    }

    def evaluation(on: jax.sharding.Mesh, batch_rows: int) -> dict[str, Any]:
        programs = steps.programs(config, on)  # on the train mesh: from the cache
        state = programs.abstract_state
        compiled = _compile(programs.eval, state.swa_params, state.rngs,
                            abstract_batch(config, batch_rows, on, evaluation=True))
        return _program_fields(*compiled, target, batch_rows)

    out["programs"] = {"train": _program_fields(train, seconds, target, rows)}
    if "eval" in programs_to_compile:
        out["programs"]["eval"] = evaluation(mesh, rows)
    if "predict" in programs_to_compile:
        one = sharding.create_mesh((1, 1), devices=target.devices[:1])
        out["programs"]["predict"] = {**evaluation(one, PREDICT_ROWS), "devices": 1}
    flops = model_flops_per_sample(config, per_device_batch)
    out["model_flops_per_sample"] = flops
    out["estimate"] = (_tpu_estimate(config, target, train, flops)
                       if estimate and target.platform == "tpu"
                       and not isinstance(train, DoesNotFit) else None)
    out["fits"] = all(p["fits"] for p in out["programs"].values())
    return out


def matmul_precision(config: ml_collections.ConfigDict, target: Target) -> str:
    """What the programs' matmuls compute in on `target` (jax_default_matmul_precision)."""
    setting = jax.config.jax_default_matmul_precision or "default"
    if config.model.dtype == "bfloat16":
        return f"{setting}: bfloat16 inputs, float32 accumulation"
    if setting in ("default", "bfloat16", "fastest"):
        kind = ("one bfloat16 pass per float32 matmul" if target.platform == "tpu"
                else "TensorFloat-32 tensor cores")
        return (f"{setting}: {kind}; JAX_DEFAULT_MATMUL_PRECISION=highest for full float32 "
                "matmuls (several times the matmul cost)")
    return f"{setting}: full float32 matmuls"


def _tpu_estimate(config: ml_collections.ConfigDict, target: Target, compiled: Any,
                  model_flops_per_sample: float) -> dict[str, Any]:
    """The TPU compiler's step-time estimate, of the step with its layers unrolled."""
    spec = models.network_config(config)
    unrolled = compiled
    seconds_compile = 0.0
    if isinstance(spec, models.CardioformerConfig) and spec.scan_unroll < spec.e_layers:
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.scan_unroll = spec.e_layers
        unrolled, seconds_compile = compile_train(config, target)
    cost = {} if isinstance(unrolled, DoesNotFit) else _cost(unrolled) or {}
    seconds = float(cost.get("optimal_seconds", -1.0))
    rows = config.train.batch_size
    result: dict[str, Any] = {
        "what": "the TPU compiler's estimate (optimal_seconds of the step with the layers "
                "unrolled), not a measurement",
        "compiler_flops_per_device_per_step": float(cost.get("flops", math.nan)),
        "unrolled_compile_seconds": round(seconds_compile, 2),
    }
    if not isinstance(unrolled, DoesNotFit):
        # Unrolled, every layer's collectives appear: what one step really exchanges.
        result["collectives_per_step"] = collectives(unrolled.as_text())
    if seconds <= 0:
        result.update(estimated_step_seconds=None, estimated_samples_per_second=None,
                      estimated_mfu=None,
                      why_absent="the compiler returned no positive optimal_seconds")
        return result
    peak = target.peak_bf16_flops * target.num_devices
    result.update(
        estimated_step_seconds=seconds,
        estimated_samples_per_second=rows / seconds,
        estimated_mfu=model_flops_per_sample * rows / seconds / peak,
        mfu_basis="model FLOPs (no remat) over the chips' dense bf16 peak",
    )
    return result


def summary(result: Mapping[str, Any]) -> str:
    """One line per program for a terminal (the JSON has everything)."""
    lines = []
    for name, program in result["programs"].items():
        kinds = ", ".join(f"{kind} x{c['count']} ({c['bytes'] / 2**20:.1f} MiB)"
                          for kind, c in program["collectives"].items()) or "none"
        lines.append(f"{result['target']} {name}: {program['total_gib']:.2f} of "
                     f"{program['device_memory_gib']:.2f} GiB per device "
                     f"({'fits' if program['fits'] else 'DOES NOT FIT'}); collectives: {kinds}")
    estimate = result.get("estimate") or {}
    if estimate.get("estimated_step_seconds"):
        lines.append(f"estimated (TPU compiler): {estimate['estimated_step_seconds'] * 1e3:.1f} "
                     f"ms/step, {estimate['estimated_samples_per_second']:.0f} samples/s, MFU "
                     f"{estimate['estimated_mfu']:.1%}")
    return "\n".join(lines)
