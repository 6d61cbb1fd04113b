"""Multi-process start-up (`cardioformer_jax.training.distributed`) with real processes.

`maybe_initialize` in a process whose devices are already in use, and (slow) a real
two-process run: `python -m cardioformer_jax.main` as two processes of 4 emulated CPU
devices each, joined over loopback (jax.distributed, Gloo), compared with one process of
8 devices fed the same global batches: same losses, same evaluation, and only process 0
writes. The decision logic itself: tests/unit/test_distributed.py.

That each process reads only its share of the data is tested in
`tests/integration/test_input_pipeline.py` (`test_process_shards_are_disjoint_and_drop_remainder`)
and, with two real processes, in `tests/integration/test_sharding_devices.py`
(`test_two_processes_train_resume_and_eval_gather`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cardioformer_jax.training import distributed
from tests.helpers import REPO


def test_maybe_initialize_after_the_devices_are_used_says_what_to_do():
    # The real jax.distributed.initialize, in a process whose backend is already up: JAX
    # refuses before it contacts any coordinator.
    code = textwrap.dedent(
        """
        import jax
        jax.devices()
        from cardioformer_jax.training import distributed
        env = {"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": "0"}
        try:
            distributed.maybe_initialize(env=env)
        except RuntimeError as error:
            print("REFUSED:", error)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    assert "REFUSED:" in done.stdout and "before anything uses the devices" in done.stdout



# --- two real processes -------------------------------------------------------------------

# The reference: one process with 8 devices running `main`, its training input replaced by
# the global batches that two processes form (process 0's rows, then process 1's), so both
# runs see the same data. Everything else is the unmodified command line.
REFERENCE = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np
    from absl import app
    from cardioformer_jax import main
    from cardioformer_jax.data import input_pipeline
    from cardioformer_jax.core import sharding

    create = input_pipeline.create_train_input

    class TwoProcessBatches:
        def __init__(self, config, mesh, **kwargs):
            self.parts = [create(config, None, process_index=i, process_count=2, **kwargs)
                          for i in range(2)]
            self.mesh = mesh
            self.steps_per_epoch = self.parts[0].steps_per_epoch
            self.global_batch_size = self.parts[0].global_batch_size

        def __iter__(self):
            return self

        def __next__(self):
            rows = [next(part) for part in self.parts]
            batch = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
            return sharding.global_batch(batch, self.mesh)

        def checkpoint_save_args(self):  # this run is never resumed
            return self.parts[0].checkpoint_save_args()

        def checkpoint_restore_args(self):
            return self.parts[0].checkpoint_restore_args()

        def close(self):
            for part in self.parts:
                part.close()

    input_pipeline.create_train_input = TwoProcessBatches
    app.run(main.main)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_process_and_only_process_0_writes(tiny_ptbxl, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           # main's persistent compilation cache: here, not in the user's home.
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache")}
    for name in ("XLA_FLAGS", *distributed.EXPLICIT_VARS):
        env.pop(name, None)
    args = ["--config=tests/helpers/train_fixtures.py",
            f"--config.dataset.data_dir={tiny_ptbxl[1]}", "--config.train.steps_per_epoch=3",
            "--config.train.log_every_steps=1", "--config.train.eval_batch_size=112",
            "--config.model.remat=False"]
    main = [sys.executable, "-m", "cardioformer_jax.main", *args]
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    address = f"localhost:{_free_port()}"
    worker_env = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    commands = [
        # Process 0 from the command-line flags, process 1 from the environment.
        ([*main, f"--workdir={multi}", f"--coordinator_address={address}",
          "--num_processes=2", "--process_id=0"], worker_env),
        ([*main, f"--workdir={multi}"],
         {**worker_env, "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": "1"}),
        ([sys.executable, "-c", REFERENCE, *args, f"--workdir={single}"], env),
    ]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd, e in commands]
    logs = []
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            logs.append(stderr)
            assert proc.returncode == 0, stderr[-4000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    log0, log1, _ = logs

    got, want = _records(multi), _records(single)
    train = [r for r in got if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]  # each step once: one writer
    want_train = [r for r in want if r["split"] == "train"]
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in train], [r[key] for r in want_train],
                                   rtol=2e-5)
    for split in ("validation", "test"):
        (mine,) = [r for r in got if r["split"] == split]
        (theirs,) = [r for r in want if r["split"] == split]
        assert mine["num_examples"] == 100
        for key in ("accuracy", "f1", "auroc", "loss"):
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-5, atol=1e-6)

    # Only process 0 writes summaries and results and logs the run.
    assert len(list(multi.glob("events.out.tfevents.*"))) == 1
    assert json.loads((multi / "results.json").read_text())["best_epoch"] == 1
    assert "jax.distributed.initialize(" in log0 and "process 0 of 2" in log0
    assert "jax.distributed.initialize(" in log1 and "process 1 of 2" in log1
    assert "[train] step 1" in log0 and "[validation epoch 1]" in log0
    for line in ("[train]", "[validation", "new run in", "JAX 0."):
        assert line not in log1
