"""Accelerator targets (``tpu:v5p:2x2x1``, ...), described, not present (docs/usage.md)."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

# Per chip: HBM bytes and dense bf16 peak FLOP/s, from the vendors' published figures.
TPU_CHIPS: dict[str, dict[str, float]] = {
    "v4": {"hbm_bytes": 32 * 2**30, "peak_bf16_flops": 275e12},
    "v5e": {"hbm_bytes": 16 * 2**30, "peak_bf16_flops": 197e12},
    "v5p": {"hbm_bytes": 95e9, "peak_bf16_flops": 459e12},
    "v6e": {"hbm_bytes": 32 * 2**30, "peak_bf16_flops": 918e12},
}
# GPU models: the plugin's description name, and the dense bf16 tensor-core peak.
GPU_MODELS: dict[str, dict[str, Any]] = {
    "h100": {"description": "NVIDIA H100 80GB HBM3", "peak_bf16_flops": 989e12},
    "h200": {"description": "NVIDIA H200 141GB HBM3e", "peak_bf16_flops": 989e12},
    "b200": {"description": "NVIDIA B200", "peak_bf16_flops": 2250e12},
}
EXAMPLES = ("tpu:v4:2x2x2", "tpu:v5e:2x2", "tpu:v5e:16x16", "tpu:v5p:2x2x1", "tpu:v5p:4x4x4",
            "tpu:v5p:2x2x1,slices=2", "gpu:h100:1", "gpu:h100:8", "gpu:h200:8", "gpu:b200:8")


@dataclasses.dataclass(frozen=True)
class Target:
    """One compile target: its devices (not runnable here), their memory and peak."""

    name: str
    platform: str  # "tpu" or "gpu"
    devices: tuple[Any, ...]
    device_kind: str
    device_memory_bytes: float  # per device
    peak_bf16_flops: float  # per device
    slices: int = 1

    @property
    def num_devices(self) -> int:
        return len(self.devices)


def parse(name: str) -> Target:
    """The `Target` of a name such as ``tpu:v5p:2x2x1`` or ``gpu:h100:8`` (ValueError,
    listing valid names, for anything else; RuntimeError when the compiler is missing)."""
    parts = name.strip().lower().split(",")
    options = {}
    for option in parts[1:]:
        key, _, value = option.partition("=")
        if key != "slices" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"target {name!r}: unknown option {option!r} (only slices=K, "
                             f"K >= 1); examples: {', '.join(EXAMPLES)}")
        options[key] = int(value)
    fields = parts[0].split(":")
    if len(fields) == 2 and fields[0] == "tpu" and "-" in fields[1]:
        fields = ["tpu", *accelerator_topology(fields[1]).split(":")]
    if len(fields) == 3 and fields[0] == "tpu" and fields[1] in TPU_CHIPS:
        if not re.fullmatch(r"\d+(x\d+){1,2}", fields[2]):
            raise ValueError(f"target {name!r}: TPU topology {fields[2]!r} must look like "
                             "2x2 or 2x2x1")
        return _tpu(name, fields[1], fields[2], options.get("slices", 1))
    if len(fields) == 3 and fields[0] == "gpu" and fields[1] in GPU_MODELS:
        count = re.fullmatch(r"(?:(\d+)x)?(\d+)", fields[2])  # GPUS or HOSTSxGPUS
        if count is None or int(count.group(2)) < 1 or int(count.group(1) or 1) < 1:
            raise ValueError(f"target {name!r}: the GPU count must be a positive integer, "
                             "or HOSTSxGPUS_PER_HOST (e.g. gpu:h100:2x8)")
        if options:
            raise ValueError(f"target {name!r}: slices= applies to TPU targets only")
        return _gpu(name, fields[1], int(count.group(1) or 1), int(count.group(2)))
    raise ValueError(f"unknown target {name!r}: use tpu:GEN:TOPOLOGY[,slices=K] with GEN in "
                     f"{sorted(TPU_CHIPS)} or gpu:MODEL:COUNT with MODEL in "
                     f"{sorted(GPU_MODELS)}; examples: {', '.join(EXAMPLES)}")


def accelerator_topology(accelerator_type: str) -> str:
    """``GEN:TOPOLOGY`` of a Cloud TPU accelerator type: ``v5p-128`` -> ``v5p:4x4x4``,
    ``v5litepod-16`` -> ``v5e:4x4``, ``v4-32`` -> ``v4:2x2x4`` (the default slice shapes;
    v4 and v5p count two cores per chip in the type's number)."""
    match = re.fullmatch(r"(v4|v5p|v5litepod|v5e|v6e)-(\d+)", accelerator_type.lower())
    if match is None:
        raise ValueError(f"unknown TPU accelerator type {accelerator_type!r} (e.g. v4-32, "
                         "v5p-128, v5litepod-16, v6e-16)")
    generation, number = match.group(1), int(match.group(2))
    generation = "v5e" if generation == "v5litepod" else generation
    if generation in ("v4", "v5p"):
        chips = number // 2
        shape = [2, 2, 1]
        if chips < 4 or chips & (chips - 1):
            raise ValueError(f"{accelerator_type}: expected a power of two of at least 8 cores")
        while shape[0] * shape[1] * shape[2] < chips:  # 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...
            if shape[2] == 1 or shape[0] == shape[1] == shape[2]:
                shape[2] *= 2
            else:
                shape[1 if shape[1] < shape[2] else 0] *= 2
    else:
        chips, shape = number, [1, 1]
        if chips & (chips - 1):
            raise ValueError(f"{accelerator_type}: expected a power of two of chips")
        while shape[0] * shape[1] < chips:  # 1x2, 2x2, 2x4, 4x4, 4x8, ...
            shape[0 if shape[0] < shape[1] else 1] *= 2
    return f"{generation}:{'x'.join(str(d) for d in shape)}"


def _tpu(name: str, generation: str, topology: str, slices: int) -> Target:
    try:
        import libtpu  # noqa: F401  (the TPU compiler)
    except ImportError as error:
        raise RuntimeError(
            f"target {name!r} needs the TPU compiler: python -m pip install -c "
            "requirements/lock.txt -e \".[aot]\" (libtpu; Python 3.12+, jax 0.12+)") from error
    # Compiling needs no exclusive hold on TPU chips: let other processes load libtpu too
    # (by default the first process to load it locks it for itself).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    kwargs = {"num_slices": slices} if slices > 1 else {}
    description = topologies.get_topology_desc(
        topology_name=f"{generation}:{topology}", platform="tpu", **kwargs)
    devices = tuple(description.devices)
    chips = math.prod(int(d) for d in topology.split("x")) * slices
    per_chip = len(devices) // chips  # 2 on v4, whose cores are devices of their own
    chip = TPU_CHIPS[generation]
    return Target(name=name, platform="tpu", devices=devices,
                  device_kind=devices[0].device_kind,
                  device_memory_bytes=chip["hbm_bytes"] / per_chip,
                  peak_bf16_flops=chip["peak_bf16_flops"] / per_chip, slices=slices)


def _gpu(name: str, model: str, hosts: int, per_host: int) -> Target:
    from jax.experimental import topologies

    config = gpu_target_config(GPU_MODELS[model]["description"])
    memory = re.search(r"device_memory_size:\s*(\d+)", config)
    topology = topologies.get_topology_desc(
        platform="cuda", target_config=config, topology=f"1x{hosts}x{per_host}")
    devices = tuple(topology.devices)
    return Target(name=name, platform="gpu", devices=devices,
                  device_kind=devices[0].device_kind,
                  device_memory_bytes=float(memory.group(1)) if memory else math.nan,
                  peak_bf16_flops=GPU_MODELS[model]["peak_bf16_flops"])


@functools.cache
def gpu_target_config(description_name: str) -> str:
    """The ``GpuTargetConfigProto`` text of a GPU, read from the CUDA plugin's binary."""
    import jaxlib

    # The [aot] extra's plugin, or a GPU install's.
    cuda = next((cuda for cuda in ("13", "12")
                 if importlib.util.find_spec(f"jax_plugins.xla_cuda{cuda}")), None)
    if cuda is None:
        raise RuntimeError(
            "GPU targets need the CUDA compiler plugin: python -m pip install -c "
            "requirements/lock.txt -e \".[aot]\" (Python 3.12+, jax 0.12+)")
    plugin = importlib.import_module(f"jax_plugins.xla_cuda{cuda}")
    plugin_version = importlib.metadata.version(f"jax-cuda{cuda}-plugin")
    if plugin_version != jaxlib.__version__:
        raise RuntimeError(f"the CUDA plugin is {plugin_version} but jaxlib is "
                           f"{jaxlib.__version__}: install the same version of both")
    binary = next(Path(plugin.__file__).parent.glob("xla_cuda_plugin*.so"), None)
    if binary is None:
        raise RuntimeError(f"no xla_cuda_plugin*.so beside {plugin.__file__}")
    data = binary.read_bytes()
    marker = f'device_description_str: "{description_name}"'.encode()
    end = data.find(marker)
    if end < 0:
        raise RuntimeError(f"the installed CUDA plugin ({binary}) carries no target "
                           f"description of {description_name!r}")
    end = data.index(b"\n", end) + 1
    start = data.rindex(b"\x00", 0, end) + 1  # the description is one C string
    text = data[start:end].decode()
    if "gpu_device_info" not in text:
        raise RuntimeError(f"could not read the target description of {description_name!r} "
                           f"from {binary}")
    return text
