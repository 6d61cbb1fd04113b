"""Sharding on several devices: 8 emulated CPU devices in a child process (mesh, parameter
and batch placement), and two JAX processes joined by jax.distributed (slow). The rules
themselves: tests/unit/test_sharding.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from tests.helpers import REPO

CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    import numpy as np
    import optax
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from cardioformer_jax.data import input_pipeline
    from cardioformer_jax import models
    from cardioformer_jax.core import sharding
    from cardioformer_jax.models.cardioformer import Cardioformer
    from configs import ptbxl

    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.create_mesh((4, -1))
    out = {"mesh": dict(mesh.shape)}
    try:
        sharding.create_mesh((3, -1))
    except ValueError as err:
        out["mesh_error"] = str(err)

    config = ptbxl.get_config()
    config.model.d_model, config.model.d_ff, config.model.e_layers = 16, 32, 1
    config.model.n_heads, config.model.patch_lens = 2, (8, 16, 32)

    def create():
        model = Cardioformer(models.network_config(config), rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)

    # Params-like tree with the model's real structure and shapes (eager init of the
    # model on 8 emulated devices would take ~10 s).
    model, optimizer = nnx.eval_shape(create)
    shapes = {"params": nnx.state(model, nnx.Param), "opt": nnx.state(optimizer)}
    ones = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
    state = jax.device_put(ones, sharding.tree_shardings(ones, mesh))
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    out["leaves"] = {
        sharding.path_name(path): [str(leaf.sharding.spec), list(leaf.shape),
                                   sorted({tuple(s.data.shape) for s in leaf.addressable_shards}),
                                   len(leaf.addressable_shards)]
        for path, leaf in leaves if leaf.ndim}

    config.dataset.data_dir = sys.argv[1]
    config.train.batch_size = 16
    train_input = input_pipeline.create_train_input(config, mesh)
    batch = next(train_input)
    train_input.close()
    signal = batch["signal"]
    out["batch"] = [str(signal.sharding.spec), list(signal.shape),
                    sorted({tuple(s.data.shape) for s in signal.addressable_shards}),
                    len(signal.addressable_shards)]
    rows = jax.jit(lambda x: 2 * x[:, :, 0])(signal)  # batch-sharded like logits
    out["rows_roundtrip"] = bool(np.array_equal(sharding.host_local_rows(rows),
                                                2 * np.asarray(signal)[:, :, 0]))
    loss = jax.jit(lambda p, x: (x.mean() * p["projection"]["kernel"]).sum())(
        state["params"], signal)
    out["loss_finite"] = bool(np.isfinite(loss))
    print("RESULT" + json.dumps(out))
    """
)


def test_eight_devices_mesh_params_and_batch(tiny_ptbxl, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(script), str(tiny_ptbxl[1])], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])

    assert out["mesh"] == {"data": 4, "fsdp": 2}
    assert "does not divide the 8 devices" in out["mesh_error"]
    leaves = out["leaves"]
    # Head: (16 * (32 + 16 + 8), 5) = (896, 5) split in two halves along fsdp.
    spec, shape, shards, count = leaves["params/projection/kernel"]
    assert spec == str(P("fsdp")) and shape == [896, 5]
    assert shards == [[448, 5]] and count == 8
    assert leaves["opt/opt_state/0/mu/projection/kernel"][0] == str(P("fsdp"))
    assert leaves["opt/opt_state/0/nu/projection/kernel"][2] == [[448, 5]]
    spec, shape, shards, _ = leaves["params/layers/resblock1/conv1/kernel"]
    assert spec == str(P(None, None, "fsdp")) and shards == [[1, 16, 16]]
    spec, _, shards, _ = leaves["params/layers/intra_attentions/0/query_kernel"]
    assert spec == str(P(None, None, None, "fsdp")) and shards == [[1, 1, 16, 8]]
    spec, shape, shards, _ = leaves["params/norm/scale"]
    assert spec == str(P()) and shards == [shape]
    # Batch of 16 over all 8 devices: 2 rows each.
    assert out["batch"] == [str(P(("data", "fsdp"))), [16, 250, 12], [[2, 250, 12]], 8]
    assert out["rows_roundtrip"] and out["loss_finite"]


# Two JAX processes (2 emulated CPU devices each) joined by jax.distributed over Gloo: the
# multi-host code paths of the input pipeline, of Orbax iterator checkpoints and of the
# gathering of evaluation results.
MULTIPROCESS_CHILD = textwrap.dedent(
    """
    import json, os, sys
    pid, nproc, port, data_dir, ckpt = sys.argv[1:]
    pid, nproc = int(pid), int(nproc)
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", nproc, pid)
    import numpy as np
    import orbax.checkpoint as ocp
    from cardioformer_jax.data import datasets
    from cardioformer_jax.data import eval_input, preprocessing
    from cardioformer_jax.data import input_pipeline as ip
    from cardioformer_jax.core import sharding
    from configs import ptbxl
    config = ptbxl.get_config()
    config.dataset.data_dir = data_dir
    config.train.batch_size = 8
    config.train.eval_batch_size = 24
    mesh = sharding.create_mesh((2, 2))
    out = {"process_count": jax.process_count()}
    ti = ip.create_train_input(config, mesh)
    first = next(ti)
    out["train"] = [list(first["signal"].shape), len(first["signal"].addressable_shards)]
    with ocp.CheckpointManager(ckpt) as manager:
        manager.save(1, args=ocp.args.Composite(data=ti.checkpoint_save_args()))
        manager.wait_until_finished()
    want = sharding.host_local_rows(next(ti)["signal"])
    ti.close()
    fresh = ip.create_train_input(config, mesh)
    with ocp.CheckpointManager(ckpt) as manager:
        manager.restore(1, args=ocp.args.Composite(data=fresh.checkpoint_restore_args()))
    out["resumed"] = bool(np.array_equal(sharding.host_local_rows(next(fresh)["signal"]), want))
    fresh.close()
    out["files"] = sorted(os.listdir(os.path.join(ckpt, "1", "data")))
    local = {k: [] for k in ("index", "record_id", "mask")}
    firsts = []
    for batch in eval_input.eval_batches(config, "validation", mesh):
        rows = jax.jit(lambda x: x[:, 0, :])(batch.device["signal"])  # batch-sharded output
        firsts.append(sharding.host_local_rows(rows))
        for k in local:
            local[k].append(batch.host[k])
    local = {k: np.concatenate(v) for k, v in local.items()}
    local["first"] = np.concatenate(firsts)
    gathered = eval_input.allgather_host(local)
    real = gathered["mask"] == 1
    source = datasets.data_source("ptbxl", data_dir, "validation")
    order = gathered["index"][real]
    out["eval_once"] = sorted(order.tolist()) == list(range(len(source)))
    out["eval_aligned"] = all(
        np.allclose(preprocessing.standardize(source[i]["signal"])[0], row, atol=1e-6)
        and source[i]["record_id"] == rid
        for i, row, rid in zip(order, gathered["first"][real], gathered["record_id"][real]))
    print("RESULT" + json.dumps(out), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_resume_and_eval_gather(tiny_ptbxl, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(MULTIPROCESS_CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, str(script), str(pid), "2", port,
                          str(tiny_ptbxl[1]), str(tmp_path / "ckpt")],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for pid in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for stdout in outputs:
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT"))
        out = json.loads(line[len("RESULT"):])
        assert out["process_count"] == 2
        assert out["train"] == [[8, 250, 12], 2]  # global batch, 2 of its 4 shards here
        assert out["resumed"]
        assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(out["files"])
        assert out["eval_once"] and out["eval_aligned"]
