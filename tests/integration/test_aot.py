"""The training programs compiled by the real TPU and GPU compilers, without the hardware
(`cardioformer_jax.aot`; target names and HLO reading: unit/test_aot_targets.py).

Needs the [aot] compilers (libtpu and the CUDA 13 plugin), which the [test] extra
installs; skipped, saying so, without them.
"""

import functools
import importlib.util
import json
import math
import subprocess
import sys

import jax
import pytest

from cardioformer_jax.aot import analysis, targets
from configs import demo
from tests.helpers import REPO
from tests.helpers.tiny_models import TINY, tiny_model

_MISSING = [m for m in ("libtpu", "jax_plugins.xla_cuda13")
            if importlib.util.find_spec(m.split(".")[0]) is None
            or (m == "jax_plugins.xla_cuda13" and importlib.util.find_spec(m) is None)]
pytestmark = [pytest.mark.skipif(bool(_MISSING),
                                 reason=f"needs the [aot] compilers (missing: {_MISSING})"),
              pytest.mark.usefixtures("optimized_compilation")]

PER_DEVICE = 8


@functools.cache
def _tiny_train(target_name: str, mesh_shape: tuple[int, int]) -> dict:
    """The tiny model's train step at PER_DEVICE samples per device, compiled once."""
    config = tiny_model(demo.get_config())
    config.mesh.shape = mesh_shape
    target = targets.parse(target_name)
    config = analysis.for_target(config, target, PER_DEVICE)
    compiled, _ = analysis.compile_train(config, target)
    return {"config": config, "target": target, "compiled": compiled,
            **analysis.memory(compiled, target.device_memory_bytes),
            "collectives": analysis.collectives(compiled.as_text()),
            "flops": compiled.cost_analysis()["flops"]}


def test_per_device_memory_and_work_do_not_grow_with_the_chip_count():
    four, sixteen = _tiny_train("tpu:v5e:2x2", (-1, 1)), _tiny_train("tpu:v5e:4x4", (-1, 1))
    assert four["config"].train.batch_size * 4 == sixteen["config"].train.batch_size
    for part in ("arguments", "outputs", "temporaries"):
        assert four["bytes"][part] == sixteen["bytes"][part], part
    assert four["flops"] == sixteen["flops"]
    # Data parallelism: the gradient all-reduce is the only collective, of the same size.
    assert set(four["collectives"]) == set(sixteen["collectives"]) == {"all-reduce"}
    assert four["collectives"] == sixteen["collectives"]
    assert four["fits"] and sixteen["fits"]


def test_an_fsdp_mesh_gathers_weights_and_keeps_the_batch_split():
    data, fsdp = _tiny_train("tpu:v5e:2x2", (-1, 1)), _tiny_train("tpu:v5e:2x2", (1, -1))
    # The weights and their Adam moments are split four ways: less state per device.
    assert fsdp["bytes"]["arguments"] < 0.6 * data["bytes"]["arguments"]
    assert "all-gather" in fsdp["collectives"]
    # Weights move, activations do not: no all-to-all or permute (resharding activations),
    # and the gathers move at most the weights twice (forward, and again for the
    # rematerialised backward pass).
    assert not {"all-to-all", "collective-permute"} & set(fsdp["collectives"])
    parameters = sum(math.prod(x.shape) * x.dtype.itemsize
                     for x in jax.tree.leaves(_state_shapes(fsdp).params))
    assert fsdp["collectives"]["all-gather"]["bytes"] <= 2 * parameters
    # A data mesh gathers nothing.
    assert "all-gather" not in data["collectives"]


def _state_shapes(compiled: dict):
    from cardioformer_jax.core import sharding
    from cardioformer_jax.training import steps

    mesh = sharding.mesh_from_config(compiled["config"], devices=compiled["target"].devices)
    return steps.programs(compiled["config"], mesh).abstract_state


def test_tpu_estimate_is_labelled_and_loop_aware():
    tiny = _tiny_train("tpu:v5e:2x2", (-1, 1))
    flops = analysis.model_flops_per_sample(tiny["config"], PER_DEVICE)
    estimate = analysis._tpu_estimate(tiny["config"], tiny["target"], tiny["compiled"], flops)
    assert "estimate" in estimate["what"] and "not a measurement" in estimate["what"]
    # One layer: the compiled step is already loop-free, nothing more was compiled.
    assert estimate["unrolled_compile_seconds"] == 0.0
    if estimate["estimated_step_seconds"] is None:
        assert estimate["why_absent"]
    else:
        rows = tiny["config"].train.batch_size
        assert estimate["estimated_samples_per_second"] == pytest.approx(
            rows / estimate["estimated_step_seconds"])
        assert 0 < estimate["estimated_mfu"] < 1


def _aot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cardioformer_jax.aot", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_config_compiles_for_a_tpu_slice():
    proc = _aot("--config=configs/demo.py", "--target=tpu:v5e:2x2", f"--batch_size={PER_DEVICE}",
                "--noestimate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["fits"] and result["num_devices"] == 4 and result["kernels"] == "xla"
    assert result["batch"] == {"global": 4 * PER_DEVICE, "per_device": PER_DEVICE}
    assert set(result["programs"]) == {"train", "eval", "predict"}
    assert set(result["programs"]["train"]["collectives"]) == {"all-reduce"}
    assert result["programs"]["eval"]["collectives"] == {}
    assert result["programs"]["predict"]["devices"] == 1
    assert result["estimate"] is None  # --noestimate
    assert "tpu:v5e:2x2 train:" in proc.stderr


@pytest.mark.slow
def test_demo_train_step_compiles_for_a_gpu():
    target = targets.parse("gpu:h100:1")
    assert target.device_kind == "NVIDIA H100 80GB HBM3"
    assert 79 < target.device_memory_bytes / 2**30 < 80
    config = analysis.for_target(demo.get_config(), target, 64)
    compiled, _ = analysis.compile_train(config, target)
    fields = analysis.memory(compiled, target.device_memory_bytes)
    assert fields["fits"] and fields["bytes"]["temporaries"] > 0
    assert analysis.collectives(compiled.as_text()) == {}  # one GPU: nothing to exchange


@pytest.mark.slow
def test_a_batch_that_does_not_fit_is_refused_with_its_numbers():
    tiny = [f"--config.model.{k}={v}" for k, v in TINY.items() if k != "patch_lens"]
    proc = _aot("--config=configs/demo.py", "--target=tpu:v5e:2x2", "--batch_size=4000000",
                "--noestimate", *tiny, "--config.model.patch_lens=(16,32)")
    assert proc.returncode == 1, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    train = result["programs"]["train"]
    assert result["fits"] is False and train["fits"] is False
    # The TPU compiler refuses such a program itself, naming what it needed.
    assert "HBM" in train["compiler_error"]
    assert train["bytes"]["total"] > 16 * 2**30 and train["headroom_gib"] < 0
    assert "DOES NOT FIT" in proc.stderr
