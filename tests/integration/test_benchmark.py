"""The benchmark's JSON contract on a tiny model (`benchmarking`; speed itself is never
asserted)."""

import json
import subprocess
import sys

import pytest

from cardioformer_jax import benchmarking
from cardioformer_jax.training import steps
from configs import demo
from tests.helpers import REPO
from tests.helpers.tiny_models import SMALL

# Each test compiles a model's training step: slow lane.
pytestmark = pytest.mark.slow

DEMO_CONFIG = REPO / "configs" / "demo.py"


def _tiny_config():
    config = demo.get_config()
    config.model.update(**SMALL, patch_lens=(8, 16, 16))
    return config


def test_run_times_the_training_step_and_reports_every_field(monkeypatch):
    # The benchmark must time the step training runs: a wrapped `steps.train_step` is
    # what it traces (fresh programs, so none come from an earlier test's cache).
    traced = []

    def train_step(*args, **kwargs):
        traced.append(args[-1]["signal"].shape)
        return original(*args, **kwargs)

    original = steps.train_step
    monkeypatch.setattr(steps, "train_step", train_step)
    steps._programs.cache_clear()
    try:
        results = benchmarking.run(_tiny_config(), batch=4, eval_batch=4, num_steps=3)
    finally:
        steps._programs.cache_clear()
    assert traced and traced[0] == (4, 250, 12)
    assert results["parameters"] > 0 and results["batch_size"] == 4
    assert results["model_name"] == "cardioformer" and results["scan_unroll"] == 1
    for name in ("compile_seconds", "train_samples_per_second", "eval_samples_per_second",
                 "inference_latency_ms", "peak_host_memory_mib", "train_gflops_per_sample",
                 "achieved_tflops"):
        assert results[name] > 0, name
    slowest, fastest = results["train_samples_per_second_range"]
    # The mean and the median of three steps lie within the slowest and fastest step.
    assert slowest <= results["train_samples_per_second_median"] <= fastest
    assert slowest <= results["train_samples_per_second"] <= fastest
    # The steps ran on this host's CPU: they took user time and system time cannot be negative.
    assert results["train_host_user_seconds_per_step"] > 0
    assert results["train_host_system_seconds_per_step"] >= 0
    assert isinstance(results["train_page_faults_per_step"], int)
    assert results["train_page_faults_per_step"] >= 0
    assert results["final_loss"] == pytest.approx(results["final_loss"])  # finite, not NaN
    # One device holds everything: the per-device memory is the whole.
    assert results["device_count"] == 1
    assert results["param_mib_per_device"] == results["param_mib"] > 0
    assert results["train_state_mib_per_device"] == results["train_state_mib"]
    # Adam's two moments and the SWA average mirror the parameters.
    assert results["train_state_mib"] >= 4 * results["param_mib"]
    json.dumps(results, allow_nan=False)  # strict JSON


EIGHT_DEVICES = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
from cardioformer_jax import benchmarking
from tests.integration.test_benchmark import _tiny_config
out = {}
for name, shape in (("data", (8, 1)), ("fsdp", (1, 8))):
    config = _tiny_config()
    config.mesh.shape = shape
    out[name] = benchmarking.run(config, batch=16, eval_batch=16, num_steps=1, latency=False)
print(json.dumps(out))
"""


def test_eight_devices_report_per_device_throughput_and_fsdp_divides_memory():
    child = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    data, fsdp = out["data"], out["fsdp"]
    assert data["mesh"] == {"data": 8, "fsdp": 1} and fsdp["mesh"] == {"data": 1, "fsdp": 8}
    for result in (data, fsdp):
        assert result["device_count"] == 8
        assert result["train_samples_per_second_per_device"] == pytest.approx(
            result["train_samples_per_second"] / 8, rel=0.01)
    # Replicated on the data axis: every device holds all parameters.
    assert data["param_mib_per_device"] == data["param_mib"]
    # On the fsdp axis the large weights are split 8 ways; biases, norms and embeddings
    # (replicated) are what keeps it above an eighth.
    assert fsdp["param_mib"] == data["param_mib"]
    assert fsdp["param_mib"] / 8 <= fsdp["param_mib_per_device"] < fsdp["param_mib"] / 3
    assert fsdp["train_state_mib_per_device"] < data["train_state_mib_per_device"] / 3


def test_command_line_prints_one_json_object(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cardioformer_jax.benchmark", f"--config={DEMO_CONFIG}",
         "--batch_size=4", "--eval_batch_size=4", "--steps=1",
         # `_tiny_config`'s model: its programs come from the tests' shared XLA cache.
         *(f"--config.model.{k}={v}" for k, v in
           {**SMALL, "patch_lens": "(8, 16, 16)"}.items())],
        capture_output=True, text=True, check=True, timeout=600)
    results = json.loads(out.stdout)
    assert results["batch_size"] == 4 and results["device_count"] >= 1
    assert results["mesh"] == {"data": results["device_count"], "fsdp": 1}
