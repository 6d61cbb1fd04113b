"""Multi-process start-up (`cardioformer_jax.training.distributed`): the decision.

The decision logic is a pure function of an environment mapping (`distributed.plan`),
tested on SLURM, Open MPI, Cloud TPU, explicit and empty environments;
`maybe_initialize` with a recorder in place of `jax.distributed.initialize`. Real processes
(`maybe_initialize` in a process whose devices are in use; two processes of
`python -m cardioformer_jax.main` against one): tests/integration/test_distributed_processes.py.
"""

from __future__ import annotations

import jax
import pytest

from cardioformer_jax.training import distributed

SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[07-10]",
              "SLURM_NTASKS": "16", "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}


def _no_tpu() -> int | None:
    return None


def _tpu_must_not_be_asked() -> int | None:
    raise AssertionError("the Cloud TPU probe was consulted")


# --- the decision -------------------------------------------------------------------------


def test_plain_machine_stays_single_process():
    plan = distributed.plan({"HOME": "/root", "PATH": "/usr/bin"}, cloud_tpu_worker_count=_no_tpu)
    assert not plan.initialize and plan.source == "single"
    assert "no explicit coordinator" in plan.reason


def test_explicit_flags_and_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "2"}
    plan = distributed.plan(env, cloud_tpu_worker_count=_tpu_must_not_be_asked)
    assert plan.initialize and plan.source == "explicit"
    # Explicit values only: JAX must not take the local devices from some cluster variable.
    assert plan.initialize_kwargs() == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2,
        "cluster_detection_method": "deactivate"}
    flags = distributed.plan(env, coordinator_address="[::1]:999", process_id=0)  # flags win
    assert (flags.coordinator_address, flags.num_processes, flags.process_id) == (
        "[::1]:999", 4, 0)
    single = distributed.plan(env, num_processes=1)
    assert not single.initialize and "num_processes=1" in single.reason


@pytest.mark.parametrize("env, kwargs, message", [
    ({}, {"coordinator_address": "h:1", "num_processes": 2}, r"process_id missing"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, {}, r"coordinator_address missing"),
    ({}, {"coordinator_address": "h:1"}, r"num_processes, process_id missing"),
    ({}, {"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
     r"process_id=2 must be in \[0, 2\)"),
    ({"JAX_NUM_PROCESSES": "two"}, {}, r"JAX_NUM_PROCESSES='two' is not an integer"),
    ({}, {"num_processes": 0}, r"num_processes=0 must be >= 1"),
    ({}, {"coordinator_address": "localhost", "num_processes": 2, "process_id": 0},
     r"must be HOST:PORT"),
    ({}, {"coordinator_address": "h:70000", "num_processes": 2, "process_id": 0},
     r"port 70000 is not in 1-65535"),
    (SLURM_STEP, {"num_processes": 8}, r"num_processes=8 contradicts the SLURM job 4242"),
])
def test_incomplete_or_bad_explicit_values_are_errors(env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        distributed.plan(env, cloud_tpu_worker_count=_no_tpu, **kwargs)


def test_slurm_step_with_several_tasks():
    plan = distributed.plan(SLURM_STEP, cloud_tpu_worker_count=_tpu_must_not_be_asked)
    assert plan.initialize and plan.source == "slurm"
    # Coordinator and local device left to JAX's SlurmCluster (one process per GPU).
    assert plan.initialize_kwargs() == {"num_processes": 16, "process_id": 3}
    assert "task 3 of 16" in plan.reason and "coordinator detected by JAX" in plan.reason
    # The coordinator the sbatch script passes on the command line.
    with_address = distributed.plan(SLURM_STEP, coordinator_address="gpu07:61586")
    assert with_address.initialize_kwargs() == {
        "coordinator_address": "gpu07:61586", "num_processes": 16, "process_id": 3}


def test_slurm_without_a_multi_task_step_stays_single():
    one_task = distributed.plan({**SLURM_STEP, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert not one_task.initialize and "task 0 of 1" in one_task.reason
    batch_script = {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}
    plan = distributed.plan(batch_script, cloud_tpu_worker_count=_no_tpu)
    assert not plan.initialize and "not an srun step" in plan.reason


def test_open_mpi():
    env = {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1:34911",
           "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}
    plan = distributed.plan(env, cloud_tpu_worker_count=_tpu_must_not_be_asked)
    assert plan.initialize and plan.source == "openmpi"
    assert plan.initialize_kwargs() == {"num_processes": 4, "process_id": 1}


def test_cloud_tpu_vm_uses_jax_detection():
    pod = distributed.plan({}, cloud_tpu_worker_count=lambda: 4)
    assert pod.initialize and pod.source == "cloud-tpu"
    assert pod.initialize_kwargs() == {"num_processes": 4}  # id and coordinator: JAX's
    single_host = distributed.plan({}, cloud_tpu_worker_count=lambda: 1)
    assert not single_host.initialize and "1 worker" in single_host.reason
    # This machine has no TPU: the probe answers without any network access.
    assert distributed.cloud_tpu_worker_count() is None


def test_force_leaves_detection_to_jax():
    plan = distributed.plan({}, cloud_tpu_worker_count=_no_tpu, force=True)
    assert plan.initialize and plan.source == "forced" and plan.initialize_kwargs() == {}


# --- maybe_initialize ---------------------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """No cached plan, and a recorder instead of `jax.distributed.initialize`."""
    monkeypatch.setattr(distributed, "_PLAN", None)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    return calls


def test_maybe_initialize_skips_a_single_process_and_is_idempotent(fresh):
    first = distributed.maybe_initialize(env={})
    assert not first.initialize and fresh == []
    assert distributed.maybe_initialize(coordinator_address="h:1", num_processes=2,
                                        process_id=0, env={}) is first


def test_maybe_initialize_passes_the_plan_to_jax_once(fresh):
    env = {"JAX_COORDINATOR_ADDRESS": "localhost:1234", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "0"}
    plan = distributed.maybe_initialize(env=env)
    assert fresh == [plan.initialize_kwargs()] and plan.source == "explicit"
    assert distributed.maybe_initialize(env=env) is plan and len(fresh) == 1


def test_cloud_tpu_worker_count_reads_gke_or_gce_only_on_a_tpu_vm():
    def no_metadata(key):
        raise AssertionError(f"metadata server asked for {key}")

    gke = {"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}
    assert distributed.cloud_tpu_worker_count(
        gke, on_tpu_vm=lambda: False, metadata=no_metadata) is None
    assert distributed.cloud_tpu_worker_count(
        gke, on_tpu_vm=lambda: True, metadata=lambda key: None) == 4
    assert distributed.cloud_tpu_worker_count(
        {**gke, "MEGASCALE_NUM_SLICES": "2"}, on_tpu_vm=lambda: True, metadata=no_metadata) == 8
    gce = {"worker-network-endpoints": "a:10.0.0.2:8470,b:10.0.0.3:8470",
           "tpu-env": "ACCELERATOR_TYPE: 'v5litepod-16'\nMEGASCALE_NUM_SLICES: '3'\n"}
    assert distributed.cloud_tpu_worker_count({}, on_tpu_vm=lambda: True,
                                              metadata=gce.get) == 6
    with pytest.raises(RuntimeError, match="worker-network-endpoints"):
        distributed.cloud_tpu_worker_count({}, on_tpu_vm=lambda: True, metadata=lambda k: None)


def test_tpu_chips_are_recognised_by_their_pci_vendor(tmp_path):
    (tmp_path / "0000:00:04.0").mkdir()
    (tmp_path / "0000:00:04.0" / "vendor").write_text("0x8086\n")
    assert not distributed.tpu_chips_present(tmp_path)
    (tmp_path / "0000:00:05.0").mkdir()
    (tmp_path / "0000:00:05.0" / "vendor").write_text("0x1ae0\n")
    assert distributed.tpu_chips_present(tmp_path)
