"""Multi-process start-up: is this process one of many? If so, `jax.distributed.initialize`.

`plan` decides from the environment (explicit flags/variables, SLURM, Open MPI, Cloud TPU);
docs/usage.md, "Training" (multi-host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import re
import urllib.error
import urllib.request
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
_EXPLICIT_ARGS = ("coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `maybe_initialize` does, and why; `source`: ``"explicit"``, ``"slurm"``,
    ``"openmpi"``, ``"cloud-tpu"``, ``"forced"`` (JAX's auto-detection on request), ``"single"``
    or ``"already"``. The rest are JAX's arguments; None lets JAX detect the value."""

    initialize: bool
    source: str
    reason: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    # "deactivate" for purely explicit values: JAX must not restrict the local devices
    # because of some unrelated cluster variable.
    cluster_detection_method: str | None = None

    def initialize_kwargs(self) -> dict[str, object]:
        """Keyword arguments of ``jax.distributed.initialize`` (None values left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and k not in ("initialize", "source", "reason")}


@dataclasses.dataclass(frozen=True)
class _Cluster:
    name: str
    num_processes: int | None  # None: SLURM_NTASKS etc. empty
    process_id: int | None  # None: JAX detects it (TPU worker number)
    detail: str


def _int(env: Mapping[str, str], name: str) -> int | None:
    """The environment variable `name` as an integer; None when unset or empty."""
    value = env.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _check_address(address: str, what: str) -> None:
    # host:port, host may be a name, an IPv4 address or a bracketed IPv6 address.
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}", address):
        raise ValueError(f"{what}={address!r} must be HOST:PORT (e.g. 10.0.0.1:1234)")
    port = int(address.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise ValueError(f"{what}={address!r}: port {port} is not in 1-65535")


def _slurm(env: Mapping[str, str]) -> tuple[_Cluster | None, str | None]:
    """(the SLURM step, or None; a note when in a SLURM job that is not a usable step)."""
    if "SLURM_JOB_ID" not in env:
        return None, None
    missing = [v for v in SLURM_VARS if v not in env]
    if missing:
        return None, (f"SLURM job {env['SLURM_JOB_ID']} but not an srun step ({', '.join(missing)} "
                      f"unset): start one process per task with srun")
    count, rank = _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID")
    detail = (f"SLURM job {env['SLURM_JOB_ID']}: task {rank} of {count} on nodes "
              f"{env['SLURM_STEP_NODELIST']} (local id {env['SLURM_LOCALID']})")
    return _Cluster("slurm", count, rank, detail), None


def _openmpi(env: Mapping[str, str]) -> _Cluster | None:
    if OMPI_URI not in env:
        return None
    count = _int(env, "OMPI_COMM_WORLD_SIZE") or 1
    rank = _int(env, "OMPI_COMM_WORLD_RANK")
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
    """Decides what `maybe_initialize` does from its arguments alone: explicit values override
    their ``JAX_*`` variables; `cloud_tpu_worker_count` is asked last; `force` lets JAX's own
    detection try. ValueError for contradictory, incomplete or malformed values."""
    coordinator = coordinator_address or env.get(EXPLICIT_VARS[0]) or None
    count = num_processes if num_processes is not None else _int(env, EXPLICIT_VARS[1])
    rank = process_id if process_id is not None else _int(env, EXPLICIT_VARS[2])
    given = dict(zip(_EXPLICIT_ARGS, (coordinator, count, rank), strict=True))
    explicit = [name for name, value in given.items() if value is not None]
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
        missing = [name for name, value in given.items() if value is None]
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


# PCI vendor id of Google's TPU chips, as sysfs spells it.
GOOGLE_PCI_VENDOR = "0x1ae0"
_METADATA_URL = "http://{host}/computeMetadata/v1/instance/attributes/{key}"


def tpu_chips_present(pci_devices: str | os.PathLike[str] = "/sys/bus/pci/devices") -> bool:
    """Whether the PCI bus holds a Google TPU chip (a local file read, no network)."""
    for vendor in pathlib.Path(pci_devices).glob("*/vendor"):
        with contextlib.suppress(OSError):
            if vendor.read_text().strip().lower() == GOOGLE_PCI_VENDOR:
                return True
    return False


def on_cloud_tpu_vm() -> bool:
    """TPU chips on the PCI bus and libtpu installed: what makes a Cloud TPU VM here."""
    return importlib.util.find_spec("libtpu") is not None and tpu_chips_present()


def gce_metadata(key: str) -> str | None:
    """An instance attribute from the GCE metadata server (link-local), None if absent."""
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(_METADATA_URL.format(host=host, key=key),
                                     headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def _tpu_env_value(key: str, env: Mapping[str, str],
                   metadata: Callable[[str], str | None]) -> str | None:
    """A TPU runtime variable: the environment first, else the VM's `tpu-env` attribute
    (lines like ``MEGASCALE_NUM_SLICES: '2'``)."""
    if env.get(key):
        return env[key]
    for line in (metadata("tpu-env") or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip().strip("'\"")
    return None


def cloud_tpu_worker_count(
    env: Mapping[str, str] | None = None,
    *,
    on_tpu_vm: Callable[[], bool] = on_cloud_tpu_vm,
    metadata: Callable[[str], str | None] = gce_metadata,
) -> int | None:
    """Processes of this Cloud TPU slice (all slices of a multislice); None off a Cloud TPU VM
    (`on_tpu_vm`; no network call then). RuntimeError when the worker list cannot be read."""
    env = os.environ if env is None else env
    if not on_tpu_vm():
        return None
    hosts = env.get("TPU_WORKER_HOSTNAMES") or metadata("worker-network-endpoints")
    if not hosts:
        raise RuntimeError(
            "this is a Cloud TPU VM, but neither TPU_WORKER_HOSTNAMES nor the metadata "
            "server's worker-network-endpoints lists its workers; pass --num_processes, "
            "--process_id and --coordinator_address explicitly")
    workers = len([h for h in hosts.split(",") if h.strip()])
    slices = _tpu_env_value("MEGASCALE_NUM_SLICES", env, metadata)
    return workers * (int(slices) if slices else 1)


_PLAN: Plan | None = None


def maybe_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Calls ``jax.distributed.initialize`` when this is one process of many (`plan`) and
    logs why; later calls return the first plan. RuntimeError when the devices were
    already used."""
    global _PLAN
    if _PLAN is not None:
        return _PLAN
    if jax.distributed.is_initialized():
        _PLAN = Plan(False, "already", "jax.distributed was initialised before")
        logging.info("jax.distributed: %s", _PLAN.reason)
        return _PLAN
    env = os.environ if env is None else env
    decided = plan(env, coordinator_address=coordinator_address, num_processes=num_processes,
                   process_id=process_id,
                   cloud_tpu_worker_count=lambda: cloud_tpu_worker_count(env), force=force)
    if not decided.initialize:
        logging.info("jax.distributed not initialised: %s", decided.reason)
        _PLAN = decided
        return decided
    # Every process logs this line: a wrong id or count on one host is what it shows.
    logging.info("jax.distributed.initialize(%s): %s", decided.initialize_kwargs(),
                 decided.reason)
    try:
        jax.distributed.initialize(**decided.initialize_kwargs())
    except RuntimeError as error:
        # JAX refuses once a backend is up; say what to do rather than only that.
        if "before" not in str(error):
            raise
        raise RuntimeError(
            f"jax.distributed must be initialised ({decided.reason}) before anything uses "
            f"the devices, but a JAX backend is already up: call maybe_initialize() "
            f"first ({error})") from error
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    _PLAN = decided
    return decided
