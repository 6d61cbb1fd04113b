"""The launch scripts of `launch/`: shellcheck, the commands their dry runs print, and the
rejection of bad parameters. Nothing reaches Google Cloud or SLURM: every run is a dry run
(or fails validation before running anything)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LAUNCH = REPO / "launch"
TPU = LAUNCH / "tpu_pod.sh"
SLURM = LAUNCH / "slurm_gpu.sbatch"
SINGLE = LAUNCH / "single_host_gpu.sh"
GPU_BENCHMARK = LAUNCH / "gpu_benchmark.sh"
SCRIPTS = (TPU, SLURM, SINGLE, GPU_BENCHMARK)

# Parameters the scripts read from the environment: cleared so the developer's or CI's
# environment cannot change what a test sees.
PARAMETER_VARS = (
    "TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "PROVISIONING",
    "SERVICE_ACCOUNT", "CONFIG", "WORKDIR", "DATA_DIR", "GIT_URL", "GIT_REF",
    "PYTHON_VERSION", "DETACH", "SKIP_SETUP", "DRY_RUN", "DRY_RUN_STATE", "EXTRA_ARGS",
    "PYTHON", "COORDINATOR_PORT", "PROCS_PER_NODE", "NODES", "GPUS_PER_NODE",
    "CPUS_PER_TASK", "TIME", "PARTITION", "ACCOUNT", "JOB_NAME", "REQUEUE", "GPUS",
    "MEM_FRACTION", "OUT_DIR", "BATCH_SIZES", "DTYPES", "STEPS", "PATIENTS", "WORKERS",
    "PIPELINE_BATCH", "WHEELS", "ALLOW_CPU", "NO_VENV", "PREFLIGHT", "LOCAL_PYTHON",
    "GPU_MODEL")

ZONE = "us-central2-b"
WORKDIR = "gs://my-bucket/runs/ptbxl"
DATA_DIR = "gs://my-bucket/tfds"


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in PARAMETER_VARS and not k.startswith("SLURM_")}
    env["TMPDIR"] = str(tmp_path)
    env.update(overrides)
    return env


def _run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _dry_run(script: Path, *args: str, env: dict[str, str]) -> list[list[str]]:
    """The printed commands, each split as a shell would split it."""
    proc = _run(script, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def _option(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def _check_remote_syntax(command: str) -> None:
    """A worker's --command string must be valid shell."""
    proc = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert proc.returncode == 0, (command, proc.stderr)


def _head_archive(tmp_path: Path) -> str:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return str(tmp_path / f"cardioformer_jax-{sha}.tar.gz")


# --- static checks ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian/Ubuntu: apt-get install -y shellcheck)")
    proc = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_bash_with_help(script, tmp_path):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert os.access(script, os.X_OK)
    proc = _run(script, "--help", env=_env(tmp_path))
    assert proc.returncode == 0 and proc.stdout.startswith("Usage:")
    assert "--dry-run" in proc.stdout


# --- Cloud TPU ----------------------------------------------------------------------------


def test_tpu_up_dry_run_prints_create_setup_and_train_on_all_workers(tmp_path):
    commands = _dry_run(
        TPU, f"--zone={ZONE}", "--accelerator-type", "v4-32", "--spot", "--project=my-proj",
        f"--workdir={WORKDIR}", f"--data-dir={DATA_DIR}", "--arg",
        "--config.train.batch_size=1024", "up", env=_env(tmp_path))
    where = [f"--zone={ZONE}", "--project=my-proj"]
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    archive = _head_archive(tmp_path)
    # First, before anything is created: the config compiled here for the slice.
    preflight, commands = commands[0], commands[1:]
    assert preflight == ["python3", "-m", "cardioformer_jax.aot", "--config=configs/ptbxl.py",
                         "--target=tpu:v4-32", "--batch_size=config", "--noestimate",
                         "--config.train.batch_size=1024"]
    assert commands[:4] == [
        [*tpu, "describe", "cardioformer", *where, "--format=value(state)"],
        [*tpu, "create", "cardioformer", *where, "--accelerator-type=v4-32",
         "--version=tpu-ubuntu2204-base",
         "--scopes=https://www.googleapis.com/auth/cloud-platform", "--spot"],
        ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
        [*tpu, "scp", archive, "cardioformer:cardioformer_jax.tar.gz", *where, "--worker=all"],
    ]
    assert len(commands) == 6
    setup, train = commands[4], commands[5]
    for ssh in (setup, train):
        assert ssh[:8] == [*tpu, "ssh", "cardioformer", *where] and ssh[8] == "--worker=all"
        _check_remote_syntax(_option(ssh, "--command"))
    install = _option(setup, "--command")
    assert "--python 3.12" in install and "pip install" in install and "'.[tpu]'" in install
    remote = _option(train, "--command")
    python = shlex.split(remote.split("exec ", 1)[1])
    assert python == ["$HOME/venv/bin/python", "-m", "cardioformer_jax.main",
                      "--config=configs/ptbxl.py", f"--workdir={WORKDIR}",
                      f"--config.dataset.data_dir={DATA_DIR}",
                      "--config.train.batch_size=1024"]
    assert remote.index("kill") < remote.index("exec ")  # a previous run stopped first


@pytest.mark.parametrize("state, expected", [
    ("PREEMPTED", ["aot", "describe", "delete", "create", "archive", "scp", "ssh", "ssh"]),
    ("NOT_FOUND", ["aot", "describe", "create", "archive", "scp", "ssh", "ssh"]),
    ("READY", ["aot", "describe", "archive", "scp", "ssh", "ssh"]),
])
def test_tpu_resume_recreates_only_a_lost_slice_then_reruns_training(tmp_path, state,
                                                                     expected):
    env = _env(tmp_path, ZONE=ZONE, WORKDIR=WORKDIR, PROVISIONING="preemptible",
               ACCELERATOR_TYPE="v5litepod-16", DRY_RUN_STATE=state)
    commands = _dry_run(TPU, "resume", env=env)
    verbs = [c[4] if c[0] == "gcloud" else "aot" if c[:3] == ["python3", "-m",
             "cardioformer_jax.aot"] else c[3] for c in commands]
    assert verbs == expected
    if "create" in verbs:
        create = commands[verbs.index("create")]
        assert "--preemptible" in create
        assert _option(create, "--version") == "v2-alpha-tpuv5-lite"
    if "delete" in verbs:
        assert commands[verbs.index("delete")][-1] == "--quiet"
    # The same train command as `train`: the run continues from its last checkpoint.
    train = _dry_run(TPU, "train", env=env)
    assert commands[-1] == train[-1]


def test_tpu_detached_train_git_setup_and_other_commands(tmp_path):
    env = _env(tmp_path, ZONE=ZONE, WORKDIR=WORKDIR, TPU_NAME="ecg-pod")
    (train,) = _dry_run(TPU, "--detach", "--skip-preflight", "train", env=env)
    remote = _option(train, "--command")
    _check_remote_syntax(remote)
    assert "nohup" in remote and ">>$HOME/train.log" in remote
    (setup,) = _dry_run(TPU, "--git-url=https://github.com/me/cardioformer-jax.git",
                        "--git-ref=v1", "setup", env=env)
    install = _option(setup, "--command")
    _check_remote_syntax(install)
    assert "git clone --quiet -- https://github.com/me/cardioformer-jax.git" in install
    # uv comes from the package registry, never from a script piped into a shell.
    assert "curl" not in install and "| sh" not in install
    assert "python3 -m pip install --quiet --user uv" in install
    assert "-c requirements/lock.txt '.[tpu]'" in install
    assert "checkout --quiet v1" in install
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert _dry_run(TPU, "delete", env=env) == [
        [*tpu, "delete", "ecg-pod", f"--zone={ZONE}", "--quiet"]]
    assert _dry_run(TPU, "status", env=env) == [
        [*tpu, "describe", "ecg-pod", f"--zone={ZONE}"]]
    (stop,) = _dry_run(TPU, "stop", env=env)
    _check_remote_syntax(_option(stop, "--command"))
    assert _dry_run(TPU, "--version=tpu-vm-base", "--accelerator-type=v3-8", "create",
                    env=env)[1][7:9] == ["--accelerator-type=v3-8", "--version=tpu-vm-base"]


def test_tpu_quotes_arguments_for_the_remote_shell(tmp_path):
    env = _env(tmp_path, ZONE=ZONE, WORKDIR=WORKDIR, PREFLIGHT="0")
    (train,) = _dry_run(TPU, "--arg=--config.model.augmentations=jitter0.2, it's", "train",
                        env=env)
    remote = _option(train, "--command")
    _check_remote_syntax(remote)
    assert shlex.split(remote.split("exec ", 1)[1])[-1] == (
        "--config.model.augmentations=jitter0.2, it's")


@pytest.mark.parametrize("args, env, message", [
    (["train"], {}, r"--zone \(or ZONE\) is required"),
    (["--zone", ZONE, "train"], {}, r"--workdir \(or WORKDIR\) is required for 'train'"),
    (["--zone", ZONE, "--workdir=/tmp/run", "resume"], {}, r"must be a gs://BUCKET/PATH"),
    (["--zone", ZONE, f"--workdir={WORKDIR}", "--data-dir=/data/tfds", "up"], {},
     r"--data-dir '/data/tfds' must be a gs://"),
    (["--zone", ZONE, "--accelerator-type=v4_32", "create"], {},
     r"unknown accelerator type format 'v4_32'"),
    (["--zone", ZONE, "create"], {"ACCELERATOR_TYPE": "tpu-v4"},
     r"unknown accelerator type format 'tpu-v4'"),
    (["--zone", ZONE, "--accelerator-type=v4-24", "create"], {}, r"power of two"),
    (["--zone=uscentral", "create"], {}, r"invalid --zone 'uscentral'"),
    (["--zone", ZONE, "--name=My_TPU", "create"], {}, r"invalid --name 'My_TPU'"),
    (["--zone", ZONE, "launch"], {}, r"unknown command 'launch'"),
    (["--zone", ZONE], {}, r"no command given"),
    (["--zone", ZONE, "create", "delete"], {}, r"one command only"),
    (["--zone", ZONE, "--frobnicate", "create"], {}, r"unknown option: --frobnicate"),
    (["--zone"], {}, r"option --zone needs a value"),
    (["--zone", ZONE, "create"], {"PROVISIONING": "cheap"}, r"PROVISIONING must be spot"),
    (["--zone", ZONE, "--python=3.11", "setup"], {}, r"needs >= 3.12"),
    (["--zone", ZONE, "create"], {"DRY_RUN": "yes"}, r"DRY_RUN must be 0 or 1"),
    (["--zone", ZONE, "create"], {"PREFLIGHT": "no"}, r"PREFLIGHT must be 0 or 1"),
])
def test_tpu_rejects_bad_parameters(tmp_path, args, env, message):
    proc = _run(TPU, *args, env=_env(tmp_path, **env))
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.search(message, proc.stderr), proc.stderr
    assert "tpu_pod.sh: error:" in proc.stderr


# --- SLURM --------------------------------------------------------------------------------


def test_slurm_submission_dry_run_prints_sbatch_of_itself(tmp_path):
    preflight, submit = _dry_run(
        SLURM, "--nodes", "4", "--gpus-per-node=4", "--partition=gpu", "--account=ecg",
        "--requeue", "--workdir=/shared/runs/a", "--data-dir=/shared/tfds",
        "--arg=--config.train.batch_size=512", "--gpu-model=h200",
        env=_env(tmp_path, CPUS_PER_TASK="6", TIME="2-00:00:00"))
    # Before submitting: the config compiled for the allocation's 4 x 4 GPUs.
    assert preflight == ["python", "-m", "cardioformer_jax.aot", "--config=configs/ptbxl.py",
                         "--target=gpu:h200:4x4", "--batch_size=config",
                         "--config.train.batch_size=512"]
    assert submit == [
        "sbatch", "--job-name=cardioformer", f"--chdir={REPO}", "--nodes=4",
        "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=6",
        "--time=2-00:00:00", "--output=slurm-%x-%j.out", "--partition=gpu",
        "--account=ecg", "--requeue", str(SLURM), "--config=configs/ptbxl.py",
        "--workdir=/shared/runs/a", "--python=python", "--procs-per-node=gpu",
        "--data-dir=/shared/tfds", "--arg=--config.train.batch_size=512"]


def _job_env(tmp_path, **extra):
    """The variables a batch job of 4 nodes with 8 tasks each sees (job 4242)."""
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "4", "SLURM_JOB_NODELIST": "gpu07",
           "SLURM_NTASKS_PER_NODE": "8"}
    return _env(tmp_path, **{**job, **extra})


def test_slurm_job_dry_run_prints_srun_one_process_per_gpu(tmp_path):
    (step,) = _dry_run(SLURM, "--workdir=gs://b-1/runs/a", "--python=/sw/venv/bin/python",
                       env=_job_env(tmp_path))
    assert step == [
        "srun", "--nodes=4", "--kill-on-bad-exit=1", "--ntasks-per-node=8",
        "--gpu-bind=none", "/sw/venv/bin/python", "-m", "cardioformer_jax.main",
        "--config=configs/ptbxl.py", "--workdir=gs://b-1/runs/a",
        # 61440 + 4242 % 4096: the port JAX itself derives for SLURM jobs.
        "--coordinator_address=gpu07:61586"]


def test_slurm_job_expands_the_node_list_and_runs_one_process_per_node(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"  # `scontrol show hostnames LIST`, as SLURM prints it
    fake.write_text('#!/usr/bin/env bash\n[[ "$*" == "show hostnames gpu[07-10]" ]] || exit 1\n'
                    'printf "gpu07\\ngpu08\\ngpu09\\ngpu10\\n"\n')
    fake.chmod(0o755)
    env = _job_env(tmp_path, SLURM_JOB_NODELIST="gpu[07-10]", SLURM_GPUS_ON_NODE="4",
                   PATH=f"{bin_dir}:{os.environ['PATH']}")
    (step,) = _dry_run(SLURM, "--workdir=/shared/run", "--procs-per-node=1", "--port=23456",
                       env=env)
    assert step[:5] == ["srun", "--nodes=4", "--kill-on-bad-exit=1", "--ntasks-per-node=1",
                        "--export=ALL,JAX_LOCAL_DEVICE_IDS=0,1,2,3"]
    assert step[-1] == "--coordinator_address=gpu07:23456"


@pytest.mark.parametrize("args, env, message", [
    ([], {}, r"--workdir \(or WORKDIR\) is required"),
    (["--workdir=runs/a"], {}, r"must be an absolute path on a file system all nodes share"),
    (["--workdir=/w", "--data-dir=tfds"], {}, r"--data-dir 'tfds' must be an absolute"),
    (["--workdir=/w", "--nodes=0"], {}, r"--nodes must be a positive integer, got '0'"),
    (["--workdir=/w"], {"GPUS_PER_NODE": "eight"}, r"--gpus-per-node must be a positive"),
    (["--workdir=/w", "--time=tomorrow"], {}, r"--time 'tomorrow' must be a SLURM time"),
    (["--workdir=/w", "--port=80"], {}, r"--port must be an integer in 1024-65535"),
    (["--workdir=/w", "--procs-per-node=2"], {}, r"--procs-per-node must be 'gpu'"),
    (["--workdir=/w", "--config=configs/ptbxl"], {}, r"must be a configs/\*\.py file"),
    (["--workdir=/w", "extra"], {}, r"unknown argument: extra"),
    (["--workdir=/w"], {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2",
                        "SLURM_JOB_NODELIST": "n1"}, r"SLURM_NTASKS_PER_NODE"),
])
def test_slurm_rejects_bad_parameters(tmp_path, args, env, message):
    proc = _run(SLURM, "--dry-run", *args, env=_env(tmp_path, **env))
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.search(message, proc.stderr), proc.stderr


# --- single host --------------------------------------------------------------------------


def test_single_host_dry_run(tmp_path):
    preflight, command = _dry_run(
        SINGLE, "--workdir", "runs/ptbxl", "--gpus=0,1", "--mem-fraction=0.9", "--arg",
        "--config.train.batch_size=512", env=_env(tmp_path, DATA_DIR="/data/tfds",
                                                  PYTHON="python3"))
    assert preflight == ["python3", "-m", "cardioformer_jax.aot", "--config=configs/ptbxl.py",
                         "--target=gpu:h100:2", "--batch_size=config",
                         "--config.train.batch_size=512"]
    assert command == [
        "env", "JAX_NUM_PROCESSES=1", "CUDA_VISIBLE_DEVICES=0,1",
        "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "python3", "-m", "cardioformer_jax.main",
        "--config=configs/ptbxl.py", "--workdir=runs/ptbxl",
        "--config.dataset.data_dir=/data/tfds", "--config.train.batch_size=512"]
    (plain,) = _dry_run(SINGLE, "--skip-preflight", env=_env(tmp_path, WORKDIR=WORKDIR))
    assert plain == ["env", "JAX_NUM_PROCESSES=1", "python", "-m", "cardioformer_jax.main",
                     "--config=configs/ptbxl.py", f"--workdir={WORKDIR}"]


@pytest.mark.parametrize("args, message", [
    ([], r"--workdir \(or WORKDIR\) is required"),
    (["--workdir=gs://"], r"names no bucket"),
    (["--workdir=w", "--gpus=first"], r"--gpus 'first' must be a comma-separated list"),
    (["--workdir=w", "--mem-fraction=1.5"], r"--mem-fraction '1.5' must be a number in"),
    (["--workdir=w", "--config=ptbxl"], r"must be a configs/\*\.py file"),
    (["--workdir"], r"option --workdir needs a value"),
    (["--workdir=w", "--gpu-model=a100"], r"--gpu-model 'a100' must be h100, h200 or b200"),
])
def test_single_host_rejects_bad_parameters(tmp_path, args, message):
    proc = _run(SINGLE, "--dry-run", *args, env=_env(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.search(message, proc.stderr), proc.stderr


# --- GPU benchmark --------------------------------------------------------------------------


def test_gpu_benchmark_dry_run_uses_the_machines_jax_and_sweeps_both_dtypes(tmp_path):
    out = tmp_path / "bench"
    commands = _dry_run(GPU_BENCHMARK, f"--out={out}", "--wheels", str(tmp_path),
                        "--arg=--peak_tflops=989", env=_env(tmp_path, PYTHON="python3.12"))
    setup, install, check, model, seeds, twin, build, pipeline = commands
    # A venv that sees the machine's packages (its JAX and CUDA plugin), installing only
    # what is missing, from the wheels folder alone.
    assert setup == ["python3.12", "-m", "venv", "--system-site-packages", f"{out}/venv"]
    assert install[:4] == [f"{out}/venv/bin/python", "-m", "pip", "install"]
    assert install[-2:] == ["-e", "."] and "--no-index" in install
    assert install[install.index("--find-links") + 1] == str(tmp_path)
    assert "default_backend" in check[-1]
    assert model[1:3] == ["-m", "cardioformer_jax.benchmark"]
    assert _option(model, "--sweep_batch_sizes") == "256,1024,4096"
    assert _option(model, "--sweep_dtypes") == "float32,bfloat16"
    assert _option(model, "--peak_tflops") == "989"
    assert _option(seeds, "--seeds") == "5" and _option(seeds, "--batch_size") == "256"
    assert _option(twin, "--patients") == "1000"
    assert _option(build, "--data_dir") == _option(pipeline, "--config.dataset.data_dir")
    assert "--input_pipeline" in pipeline and _option(pipeline, "--pipeline_workers") == "0,4,8"


@pytest.mark.parametrize("args, message", [
    (["--dtypes=float16"], "--dtypes"),
    (["--batch-sizes=256,x"], "--batch-sizes"),
    (["--steps=0"], "STEPS"),
    (["--seeds=1"], "--seeds"),
    (["--wheels=/no/such/folder"], "no such folder"),
    (["--bogus"], "unknown argument"),
])
def test_gpu_benchmark_rejects_bad_parameters(tmp_path, args, message):
    proc = _run(GPU_BENCHMARK, "--dry-run", *args, env=_env(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_the_cpu_when_allowed(tmp_path):
    # Also the benchmark's sweep (`benchmarking.sweep`) and seeds (`seeds_speed`) contracts,
    # on the results the script's commands write.
    out = tmp_path / "bench"
    proc = subprocess.run(
        ["bash", str(GPU_BENCHMARK), "--no-venv", "--allow-cpu", f"--python={sys.executable}",
         f"--out={out}", "--batch-sizes=2,4", "--dtypes=float32,bfloat16", "--steps=1",
         "--seeds=2", "--patients=40", "--workers=0", "--pipeline-batch=16",
         *(f"--arg=--config.model.{k}={v}" for k, v in
           dict(d_model=8, d_ff=8, e_layers=1, n_heads=2, patch_lens="16,32").items())],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = json.loads((out / "model.json").read_text())
    pipeline = json.loads((out / "input_pipeline.json").read_text())
    bf16 = model["best_by_dtype"]["bfloat16"]
    assert proc.stdout.strip().splitlines()[-1] == (
        f"best bfloat16 training: {bf16['train_samples_per_second']:.0f} samples/s, "
        f"MFU unknown (pass --arg=--peak_tflops=...), batch {bf16['batch_size']}")
    assert pipeline["input_samples_per_second_by_workers"]["0"] > 0

    runs = model["runs"]
    assert [(r["dtype"], r["batch_size"], r["eval_batch_size"]) for r in runs] == [
        ("float32", 2, 2), ("float32", 4, 4), ("bfloat16", 2, 2), ("bfloat16", 4, 4)]
    # The latency once per dtype, at its first batch size.
    assert [r["inference_latency_ms"] is not None for r in runs] == [True, False, True, False]
    for dtype, best in model["best_by_dtype"].items():
        assert best["train_samples_per_second"] == max(
            r["train_samples_per_second"] for r in runs if r["dtype"] == dtype)

    seeds = json.loads((out / "seeds.json").read_text())
    assert seeds["seeds"] == 2 and seeds["batch_size"] == 256
    # The one-seed program may come from the persistent compilation cache, so its compile
    # time can round to zero.
    for name in ("one_seed_compile_seconds", "together_compile_seconds"):
        assert seeds[name] >= 0, name
    for name in ("one_seed_step_seconds", "together_step_seconds"):
        assert seeds[name] > 0, name
    # All seeds' samples per second: one after another is the one-seed rate.
    assert seeds["one_after_another_samples_per_second"] == pytest.approx(
        256 / seeds["one_seed_step_seconds"], rel=0.05)
    assert seeds["together_samples_per_second"] == pytest.approx(
        2 * 256 / seeds["together_step_seconds"], rel=0.05)
    assert seeds["speedup"] == pytest.approx(
        2 * seeds["one_seed_step_seconds"] / seeds["together_step_seconds"], rel=0.05)
    # Two stacked states: twice one state (params, Adam, SWA of each seed), up to the
    # rounding of both figures to 0.001 MiB.
    assert seeds["together_state_mib_per_device"] == pytest.approx(
        2 * runs[0]["train_state_mib_per_device"], abs=2e-3)

