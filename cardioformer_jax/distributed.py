"""Multi-process start-up: is this process one of many? If so, `jax.distributed.initialize`.

`maybe_initialize` must run before anything touches the devices (`jax.devices()`, a jit,
a mesh). It decides from, first match wins:

1. **explicit** values: the ``--coordinator_address``/``--num_processes``/``--process_id``
   flags of `main`, else the environment variables ``JAX_COORDINATOR_ADDRESS``,
   ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (values missing here may come from 2.-4.);
2. **SLURM**: inside an ``srun`` step (the variables JAX's own ``SlurmCluster`` reads:
   ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``,
   ``SLURM_LOCALID``) with ``SLURM_NTASKS > 1``; JAX then gives process ``SLURM_LOCALID``
   of a node the GPU of that number (one process per GPU) unless ``JAX_LOCAL_DEVICE_IDS``
   says otherwise;
3. **Open MPI**: ``mpirun`` (``OMPI_MCA_orte_hnp_uri``) with ``OMPI_COMM_WORLD_SIZE > 1``;
4. **Cloud TPU VM**: JAX's TPU cluster detection (GKE environment variables or the GCE
   metadata server) reports more than one worker, i.e. a pod slice or multislice. It is
   consulted only where JAX found TPU chips on the PCI bus at import (a local check), so
   a plain machine makes no network call;
5. otherwise a single process: nothing is initialised.

Steps 1-3 read only an environment mapping (`plan` is a pure function of it, tested in
``tests/test_distributed.py``); step 4 is an injected probe (`cloud_tpu_worker_count`).
What JAX detects itself (the coordinator of a SLURM job or TPU slice, a TPU worker's id)
is left to ``jax.distributed.initialize``, so both always agree.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

import jax
from absl import logging

# JAX's `SlurmCluster.is_env_present` needs all of these (set by srun for each task).
SLURM_VARS: tuple[str, ...] = (
    "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
# `OmpiCluster` (mpirun of Open MPI 4, ORTE).
OMPI_URI = "OMPI_MCA_orte_hnp_uri"
EXPLICIT_VARS: tuple[str, str, str] = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `maybe_initialize` does, and why.

    Attributes:
      initialize: whether to call ``jax.distributed.initialize``.
      source: ``"explicit"``, ``"slurm"``, ``"openmpi"``, ``"cloud-tpu"``, ``"forced"``
        (JAX's auto-detection on request), ``"single"`` (nothing to do) or ``"already"``
        (initialised before this call).
      reason: one human-readable sentence for the log.
      coordinator_address, num_processes, process_id: the arguments passed to JAX; None
        lets JAX detect the value from the cluster environment.
      cluster_detection_method: ``"deactivate"`` for purely explicit values (JAX must not
        restrict the local devices because of some unrelated cluster variable), else None.
    """

    initialize: bool
    source: str
    reason: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cluster_detection_method: str | None = None

    def initialize_kwargs(self) -> dict[str, object]:
        """Keyword arguments of ``jax.distributed.initialize`` (None values left out)."""
        kwargs = {"coordinator_address": self.coordinator_address,
                  "num_processes": self.num_processes, "process_id": self.process_id,
                  "cluster_detection_method": self.cluster_detection_method}
        return {k: v for k, v in kwargs.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class _Cluster:
    name: str
    num_processes: int | None  # None: SLURM_NTASKS etc. empty
    process_id: int | None  # None: JAX detects it (TPU worker number)
    detail: str


def _int(value: str | int | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={value!r} is not an integer") from None


def _check_address(address: str, what: str) -> str:
    # host:port, host may be a name, an IPv4 address or a bracketed IPv6 address.
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}", address):
        raise ValueError(f"{what}={address!r} must be HOST:PORT (e.g. 10.0.0.1:1234)")
    port = int(address.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise ValueError(f"{what}={address!r}: port {port} is not in 1-65535")
    return address


def _slurm(env: Mapping[str, str]) -> tuple[_Cluster | None, str | None]:
    """(the SLURM step, or None; a note when in a SLURM job that is not a usable step)."""
    if "SLURM_JOB_ID" not in env:
        return None, None
    missing = [v for v in SLURM_VARS if v not in env]
    if missing:
        return None, (f"SLURM job {env['SLURM_JOB_ID']} but not an srun step ({', '.join(missing)} "
                      f"unset): start one process per task with srun")
    count = _int(env["SLURM_NTASKS"], "SLURM_NTASKS")
    rank = _int(env["SLURM_PROCID"], "SLURM_PROCID")
    detail = (f"SLURM job {env['SLURM_JOB_ID']}: task {rank} of {count} on nodes "
              f"{env['SLURM_STEP_NODELIST']} (local id {env['SLURM_LOCALID']})")
    return _Cluster("slurm", count, rank, detail), None


def _openmpi(env: Mapping[str, str]) -> _Cluster | None:
    if OMPI_URI not in env:
        return None
    count = _int(env.get("OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE") or 1
    rank = _int(env.get("OMPI_COMM_WORLD_RANK"), "OMPI_COMM_WORLD_RANK")
    return _Cluster("openmpi", count, rank, f"Open MPI: rank {rank} of {count}")


def plan(
    env: Mapping[str, str],
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cloud_tpu_worker_count: Callable[[], int | None] = lambda: None,
    force: bool = False,
) -> Plan:
    """Decides what `maybe_initialize` does (pure: reads only its arguments).

    Args:
      env: the environment (``os.environ``).
      coordinator_address, num_processes, process_id: explicit values (command-line
        flags); each overrides its ``JAX_*`` environment variable.
      cloud_tpu_worker_count: returns the number of TPU VM workers (processes) when this
        is a Cloud TPU VM, else None; called only when nothing above decided.
      force: initialise even when no multi-process environment is found, letting JAX's
        own auto-detection try (e.g. Kubernetes, mpi4py).

    Raises:
      ValueError: contradictory or incomplete explicit values (e.g. a process count but
        no process id outside a cluster), malformed numbers or addresses.
    """
    coordinator = coordinator_address or env.get(EXPLICIT_VARS[0]) or None
    count = num_processes if num_processes is not None else _int(
        env.get(EXPLICIT_VARS[1]), EXPLICIT_VARS[1])
    rank = process_id if process_id is not None else _int(
        env.get(EXPLICIT_VARS[2]), EXPLICIT_VARS[2])
    explicit = [name for name, value in zip(
        ("coordinator_address", "num_processes", "process_id"), (coordinator, count, rank),
        strict=True) if value is not None]
    if coordinator is not None:
        _check_address(coordinator, "coordinator_address")
    if count is not None and count < 1:
        raise ValueError(f"num_processes={count} must be >= 1")
    if count == 1:
        return Plan(False, "single", "one process requested (num_processes=1)")

    slurm, slurm_note = _slurm(env)
    cluster = slurm or _openmpi(env)
    if cluster is None and count is None:
        workers = cloud_tpu_worker_count()
        if workers is not None:
            cluster = _Cluster("cloud-tpu", workers, None,
                               f"Cloud TPU VM with {workers} worker(s)")

    if explicit and cluster is None and len(explicit) < 3:
        missing = [n for n in ("coordinator_address", "num_processes", "process_id")
                   if n not in explicit]
        raise ValueError(
            f"multi-process run: {', '.join(explicit)} given but {', '.join(missing)} "
            f"missing, and no SLURM/Open MPI/Cloud TPU environment to take them from; pass "
            f"all of --coordinator_address, --num_processes, --process_id (or the "
            f"{', '.join(EXPLICIT_VARS)} environment variables)")
    if cluster is not None:
        if count is not None and count != cluster.num_processes:
            raise ValueError(f"num_processes={count} contradicts the {cluster.detail}")
        count = cluster.num_processes if count is None else count
        rank = cluster.process_id if rank is None else rank
    if count is None or count == 1:
        if force:
            return Plan(True, "forced", "no multi-process environment recognised; "
                        "--jax_distributed given: JAX's own cluster auto-detection decides")
        why = cluster.detail if cluster is not None else (
            slurm_note or "no explicit coordinator/process count, SLURM step, Open MPI "
            "or multi-worker Cloud TPU VM found")
        return Plan(False, "single", f"single process ({why})")
    if rank is not None and not 0 <= rank < count:
        raise ValueError(f"process_id={rank} must be in [0, {count})")

    if cluster is None:
        reason = (f"explicit: process {rank} of {count}, coordinator {coordinator}")
        return Plan(True, "explicit", reason, coordinator, count, rank, "deactivate")
    reason = cluster.detail + (f", coordinator {coordinator} (explicit)" if coordinator
                               else ", coordinator detected by JAX")
    return Plan(True, cluster.name, reason, coordinator, count, rank)


def cloud_tpu_worker_count() -> int | None:
    """Processes of this Cloud TPU slice (all slices of a multislice) by JAX's own TPU
    cluster classes, or None when this is not a Cloud TPU VM.

    ``jax._src.cloud_tpu_init.running_in_cloud_tpu_vm`` is set by ``import jax`` from the
    PCI bus and libtpu (no network); only then are GKE's environment variables or GCE's
    metadata server (link-local) consulted. Private JAX API, hence the guard: an
    incompatible JAX raises a RuntimeError instead of silently training one process per
    worker, each on its own.
    """
    try:
        from jax._src import cloud_tpu_init, clusters
    except ImportError as error:  # pragma: no cover - depends on the JAX version
        raise RuntimeError(f"JAX's cluster detection is not importable: {error}") from error
    if not getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False):
        return None
    for cluster in (clusters.GkeTpuCluster, clusters.GceTpuCluster):
        if cluster.is_env_present():
            return int(cluster.get_process_count())
    return None


_PLAN: Plan | None = None


def maybe_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Calls ``jax.distributed.initialize`` when this is one process of many (see the
    module docstring); logs the decision. Idempotent: later calls return the first plan.

    Raises RuntimeError when initialisation is needed but the devices were already used.
    """
    global _PLAN
    if _PLAN is not None:
        return _PLAN
    if jax.distributed.is_initialized():
        _PLAN = Plan(False, "already", "jax.distributed was initialised before")
        logging.info("jax.distributed: %s", _PLAN.reason)
        return _PLAN
    decided = plan(os.environ if env is None else env,
                   coordinator_address=coordinator_address, num_processes=num_processes,
                   process_id=process_id, cloud_tpu_worker_count=cloud_tpu_worker_count,
                   force=force)
    if not decided.initialize:
        logging.info("jax.distributed not initialised: %s", decided.reason)
        _PLAN = decided
        return decided
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            f"jax.distributed must be initialised ({decided.reason}) before anything uses "
            f"the devices, but a JAX backend is already up: call maybe_initialize() first")
    # Every process logs this line: a wrong id or count on one host is what it shows.
    logging.info("jax.distributed.initialize(%s): %s", decided.initialize_kwargs(),
                 decided.reason)
    jax.distributed.initialize(**decided.initialize_kwargs())
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    _PLAN = decided
    return decided
