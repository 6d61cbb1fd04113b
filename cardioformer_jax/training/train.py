"""Training and evaluation loop (docs/training.md), from one CPU to a multi-host mesh.

* The whole training state is one pytree (`TrainState`) created directly sharded by a
  jitted initialiser (`create_train_state`; `sharding.DEFAULT_RULES` place the weights,
  the batch is split over every device) and updated by one jitted, buffer-donating step
  (`train_step`): cross-entropy, gradient clipping at global norm 4.0, Adam 1e-4.
* After each epoch the SWA average takes the parameters with equal weight (`swa.py`);
  validation and test are evaluated with the averaged model on every example exactly
  once; early stopping watches validation macro-F1 (patience 10, min_delta 1e-5) and the
  best epoch's test metrics are the result (``results.json``).
* Checkpoints (`checkpointing.py`) every ``train.checkpoint_every_steps`` and at every epoch
  end hold everything a resumed run needs, including the data iterator's position, so a
  run killed at any moment and restarted with the same command ends with the same
  parameters, bit for bit, as one that was never interrupted.
* ``config.seeds > 1`` repeats the protocol for consecutive seeds in ``seed_<s>/``
  subdirectories and reports the mean and std of each metric.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from cardioformer_jax import config_lib, models
from cardioformer_jax.data import datasets, input_pipeline
from cardioformer_jax.evaluation import metrics
from cardioformer_jax.training import checkpointing, logging_utils, paths, sharding, swa
from cardioformer_jax.training.early_stopping import EarlyStopping

RESULTS_FILE = "results.json"
# Split names of the built TFDS datasets.
TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT = "train", "validation", "test"

# `evaluate_fn(state, split, epoch) -> metrics` replaces the real evaluation (tests script
# the metric sequence the early stopping sees with it).
EvaluateFn = Callable[["TrainState", str, int], Mapping[str, float]]


@flax.struct.dataclass
class TrainState:
    """Everything on the devices that a training run updates.

    Attributes:
      step: optimizer steps taken (int32 scalar).
      params: the model's `nnx.Param` variables.
      opt_state: the optax state (Adam moments mirror `params`).
      rngs: the model's random streams (dropout/augmentation key and counter).
      swa_params: equal-weight average of the parameters at the ends of epochs.
      swa_count: epochs in the average.
      nonfinite_steps: updates dropped because the loss or gradients were not finite.
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rngs: nnx.State
    swa_params: nnx.State
    swa_count: jax.Array
    nonfinite_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of the model (NNX graph definitions) and the optimizer."""

    graphdef: nnx.GraphDef  # train mode: dropout and augmentations on
    eval_graphdef: nnx.GraphDef  # eval mode
    tx: optax.GradientTransformation  # its learning rate lives in the optimizer state
    config: models.ModelSpec


# --- state ----------------------------------------------------------------------------------


def create_optimizer(grad_clip_norm: float, learning_rate: float | jax.Array = 0.0
                     ) -> optax.GradientTransformation:
    """docs/training.md: clipping at the global gradient norm (<= 0: none), then Adam.

    Same order as PyTorch's ``clip_grad_norm_`` before ``Adam.step``. The learning rate is
    a value in the optimizer state (`optax.inject_hyperparams`): `learning_rate` only sets
    its initial value in ``tx.init``, updates read the state's. So it is not a constant
    compiled into the programs: runs that differ only in it share their compilations,
    and a resumed run can take the config's (`_set_learning_rate`).
    """
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    # No clipping is a clip at infinity: the optimizer state keeps one structure, so a
    # resumed run may switch clipping on or off (with --allow_config_change).
    max_norm = grad_clip_norm if grad_clip_norm > 0 else float("inf")
    return optax.chain(optax.clip_by_global_norm(max_norm), adam)


def _model_rngs(seed: int | jax.Array) -> nnx.Rngs:
    # Separate keys: the same integer for both streams would reuse the init key as the
    # dropout key.
    key = jax.random.key(seed)
    return nnx.Rngs(params=jax.random.fold_in(key, 0), dropout=jax.random.fold_in(key, 1))


def _init_fn(model_config: models.ModelSpec, grad_clip_norm: float
             ) -> Callable[[jax.Array, jax.Array], TrainState]:
    """``init(seed, learning_rate)``: arguments, not constants, so that runs differing
    only in them share one compilation."""

    def init(seed: jax.Array, learning_rate: jax.Array) -> TrainState:
        model = models.build_model(model_config, rngs=_model_rngs(seed))
        _, params, rngs = nnx.split(model, nnx.Param, ...)
        zero = jnp.zeros((), jnp.int32)
        opt_state = create_optimizer(grad_clip_norm, learning_rate).init(params)
        return TrainState(
            step=zero, params=params, opt_state=opt_state, rngs=rngs,
            # Zeros, not a copy: `swa_update` with count 0 ignores them, and they are
            # separate buffers from `params` (donation forbids aliases).
            swa_params=jax.tree.map(jnp.zeros_like, params), swa_count=zero,
            nonfinite_steps=zero)

    return init


def _init_args(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    return (jnp.asarray(config.seed, jnp.uint32),
            jnp.asarray(config.train.learning_rate, jnp.float32))


def model_def(model_config: models.ModelSpec, grad_clip_norm: float) -> ModelDef:
    """Graph definitions of the model (traced abstractly: no weights created)."""
    model = nnx.eval_shape(lambda: models.build_model(model_config, rngs=_model_rngs(0)))
    graphdef = nnx.graphdef(model)
    model.eval()
    return ModelDef(graphdef=graphdef, eval_graphdef=nnx.graphdef(model),
                    tx=create_optimizer(grad_clip_norm), config=model_config)


# --- steps ----------------------------------------------------------------------------------


def train_step(definition: ModelDef, state: TrainState, batch: Mapping[str, jax.Array]
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch ``{"signal": (B, T, C), "label": (B,)}``.

    A step whose loss or gradients are not finite leaves the parameters and Adam state as
    they were (the random stream still advances) and counts itself in
    ``nonfinite_steps``; whether training then stops is the loop's decision
    (``train.nan_policy``). Returns the new state and ``{"loss", "grad_norm"}``.
    """

    def loss_fn(params: nnx.State, rngs: nnx.State) -> tuple[jax.Array, nnx.State]:
        # copy=True: fresh Variables owned by this trace, so the model may advance its
        # RNG counter inside `value_and_grad`.
        model = nnx.merge(definition.graphdef, params, rngs, copy=True)
        logits = model(batch["signal"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, nnx.state(model, nnx.RngState)

    (loss, rngs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.rngs)
    updates, opt_state = definition.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    # Selecting costs one elementwise pass over the weights; doing it unconditionally keeps
    # one compiled step for both NaN policies and a "stop" run's state free of NaNs.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    new = state.replace(step=state.step + 1, params=keep(params, state.params),
                        opt_state=keep(opt_state, state.opt_state), rngs=rngs,
                        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    return new, {"loss": loss, "grad_norm": grad_norm}


def eval_step(definition: ModelDef, params: nnx.State, rngs: nnx.State,
              batch: Mapping[str, jax.Array]) -> jax.Array:
    """Class probabilities ``(B, K)`` (float32) of the model in eval mode."""
    model = nnx.merge(definition.eval_graphdef, params, rngs, copy=True)
    return jax.nn.softmax(model(batch["signal"]).astype(jnp.float32), axis=-1)


def swa_epoch_update(state: TrainState) -> TrainState:
    """Adds the current parameters to the SWA average with equal weight (docs/training.md)."""
    return state.replace(swa_params=swa.swa_update(state.swa_params, state.params,
                                                   state.swa_count),
                         swa_count=state.swa_count + 1)


# --- the compiled programs ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Programs:
    """The jitted programs of one model on one mesh, with their shardings pinned.

    `init(seed, learning_rate)` creates the state directly sharded (no host copy of the
    weights); `train(state, batch)` and `swa(state)` donate the state; `eval(params, rngs,
    batch)` returns probabilities split like the batch. The batch is split over every
    device (`sharding.data_sharding`), the state placed by `sharding.DEFAULT_RULES`.
    """

    definition: ModelDef
    mesh: jax.sharding.Mesh
    abstract_state: TrainState  # `jax.ShapeDtypeStruct`s carrying their shardings
    shardings: TrainState  # a `NamedSharding` per leaf
    init: Callable[[jax.Array, jax.Array], TrainState]
    train: Callable[[TrainState, Mapping[str, jax.Array]],
                    tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], jax.Array]
    swa: Callable[[TrainState], TrainState]


def programs(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Programs:
    """The `Programs` of the config's model on `mesh`, built once per process: runs of the
    same model (other seeds, learning rates, datasets of the same shape) reuse them, so
    they are neither traced nor compiled again."""
    return _programs(models.model_spec(config),
                     float(config.train.grad_clip_norm), mesh)


@functools.lru_cache(maxsize=8)
def _programs(model_config: models.ModelSpec, grad_clip_norm: float, mesh: jax.sharding.Mesh
              ) -> Programs:
    definition = model_def(model_config, grad_clip_norm)
    init = _init_fn(model_config, grad_clip_norm)
    shapes = jax.eval_shape(init, jnp.zeros((), jnp.uint32), jnp.zeros((), jnp.float32))
    shardings = sharding.tree_shardings(shapes, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, shardings)
    data = sharding.data_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return Programs(
        definition=definition, mesh=mesh, abstract_state=abstract, shardings=shardings,
        init=jax.jit(init, out_shardings=shardings),
        train=jax.jit(functools.partial(train_step, definition),
                      in_shardings=(shardings, data), out_shardings=(shardings, replicated),
                      donate_argnums=0),
        eval=jax.jit(functools.partial(eval_step, definition),
                     in_shardings=(shardings.swa_params, shardings.rngs, data),
                     out_shardings=data),
        swa=jax.jit(swa_epoch_update, in_shardings=(shardings,), out_shardings=shardings,
                    donate_argnums=0),
    )


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                       ) -> tuple[TrainState, Programs]:
    """A fresh state of the config's model and seed, created sharded on `mesh`, and the
    programs that update it."""
    compiled = programs(config, mesh)
    return compiled.init(*_init_args(config)), compiled


def _set_learning_rate(state: TrainState, learning_rate: float, shardings: Any) -> TrainState:
    """The state with the optimizer's learning rate set to `learning_rate` (placed like
    the one it replaces)."""
    current = optax.tree.get(state.opt_state, "learning_rate")
    wanted = jnp.asarray(learning_rate, current.dtype)
    if float(current) == float(wanted):
        return state
    logging.info("learning rate %g (the checkpoint had %g)", learning_rate, float(current))
    value = jax.device_put(wanted, optax.tree.get(shardings.opt_state, "learning_rate"))
    return state.replace(opt_state=optax.tree.set(state.opt_state, learning_rate=value))


# --- evaluation -----------------------------------------------------------------------------


def predict(eval_fn: Callable[..., jax.Array], params: nnx.State, rngs: nnx.State,
            config: ml_collections.ConfigDict, split: str, mesh: jax.sharding.Mesh
            ) -> dict[str, np.ndarray]:
    """Probabilities of every example of `split` exactly once, on every process.

    Returns ``{"probs" (N, K), "label" (N,), "index" (N,)}`` in split order (padding rows
    removed). Raises RuntimeError if the batches did not cover each example once.
    """
    device_probs, host = [], []
    for batch in input_pipeline.eval_batches(config, split, mesh):
        # Dispatch all batches first; fetching each one would stall the device.
        device_probs.append(eval_fn(params, rngs, batch.device))
        host.append({k: batch.host[k] for k in ("label", "mask", "index")})
    local = {k: np.concatenate([h[k] for h in host]) for k in ("label", "mask", "index")}
    local["probs"] = np.concatenate([sharding.host_local_rows(p) for p in device_probs])
    gathered = input_pipeline.allgather_host(local)
    valid = gathered["mask"].astype(bool)
    out = {k: gathered[k][valid] for k in ("probs", "label", "index")}
    order = np.argsort(out["index"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    if not np.array_equal(out["index"], np.arange(out["index"].size)):
        raise RuntimeError(f"evaluation of {split!r} did not see every example exactly once")
    return out


def evaluate(eval_fn: Callable[..., jax.Array], params: nnx.State, rngs: nnx.State,
             config: ml_collections.ConfigDict, split: str, mesh: jax.sharding.Mesh
             ) -> dict[str, float]:
    """The metrics of docs/training.md (`metrics.classification_metrics`) of `params` on `split`."""
    out = predict(eval_fn, params, rngs, config, split, mesh)
    result = metrics.classification_metrics(out["probs"], out["label"],
                                            num_classes=config.model.num_classes)
    result["num_examples"] = float(out["label"].size)
    return result


# --- checks before training -----------------------------------------------------------------


def check_fits(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Raises ValueError, before anything is compiled, for a config the mesh cannot run."""
    divisor = sharding.batch_divisor(mesh)
    process_count = jax.process_count()
    for name in ("batch_size", "eval_batch_size"):
        size = config.train[name]
        if size % divisor or size % process_count:
            raise ValueError(
                f"train.{name}={size} must be divisible by the {divisor} devices the batch "
                f"is split over (mesh {dict(mesh.shape)}) and by the {process_count} "
                f"processes; e.g. use {max(divisor, size // divisor * divisor)}")


# --- data preparation (the demo) ------------------------------------------------------------


def prepare_synthetic_dataset(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                              ) -> ml_collections.ConfigDict:
    """For ``dataset.synthetic_patients > 0``: writes the synthetic PTB-XL twin to
    ``<workdir>/data/raw`` and builds it into ``<workdir>/data/tfds`` (each once; process 0
    does the work) and returns the config pointing at it. Other configs pass through.

    The workdir must be local here: the ArrayRecord writer opens local files only, so a URL
    workdir (``gs://...``) is refused with the commands that build the data locally and
    copy it to the bucket."""
    patients = config.dataset.synthetic_patients
    if patients <= 0:
        return config
    if config.dataset.name != "ptbxl":
        raise ValueError(f"dataset.synthetic_patients needs dataset.name='ptbxl', got "
                         f"{config.dataset.name!r}")
    workdir = paths.resolve_path(workdir)
    if paths.is_url(workdir):
        raise ValueError(_synthetic_url_message(config, workdir))
    from cardioformer_jax.data import synthetic  # only the demo needs the generator

    data = workdir / "data"
    raw, tfds_dir, marker = data / "raw", data / "tfds", data / "synthetic.json"
    wanted = {"patients": patients, "seed": int(config.seed)}
    if jax.process_index() == 0:
        if not (raw / "ptbxl_database.csv").is_file():
            logging.info("writing a synthetic PTB-XL twin of %d patients to %s", patients, raw)
            # Written aside and renamed: a run killed half-way leaves no partial twin.
            partial = data / "raw.partial"
            partial.rmtree(missing_ok=True)
            synthetic.write_ptbxl_twin(partial, patients, seed=config.seed)
            logging_utils.write_json(marker, wanted)
            partial.rename(raw)
        existing = json.loads(marker.read_text()) if marker.is_file() else None
        if existing != wanted:
            raise ValueError(f"{data} holds a synthetic dataset {existing}, not {wanted}; "
                             f"use another --workdir")
        builder_config = config.dataset.builder_config or None
        datasets.build("ptbxl", raw, tfds_dir, builder_config, progress=False)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic dataset built")
    config = ml_collections.ConfigDict(config.to_dict())
    config.dataset.data_dir = os.fspath(tfds_dir)
    return config


def _synthetic_url_message(config: ml_collections.ConfigDict, workdir: epath.Path) -> str:
    builder_config = config.dataset.builder_config or None
    bucket_data = workdir / "data" / "tfds"
    build = datasets.build_command("ptbxl", "/tmp/synthetic_tfds", builder_config)
    build = build.replace("<unpacked PhysioNet folder>", "/tmp/synthetic_ptbxl")
    return (
        f"the synthetic dataset (dataset.synthetic_patients={config.dataset.synthetic_patients})"
        f" is built into the workdir, and {workdir} is a URL: ArrayRecord files can only be "
        f"written to a local file system. Use a local --workdir, or build the data locally, "
        f"copy it to the bucket and train from there:\n"
        f"  python -m cardioformer_jax.synthetic --out /tmp/synthetic_ptbxl "
        f"--patients {config.dataset.synthetic_patients} --seed {config.seed}\n"
        f"  {build}\n"
        f"  gcloud storage cp --recursive /tmp/synthetic_tfds/ptbxl {bucket_data}/\n"
        f"  python -m cardioformer_jax.main --config=... --workdir={workdir} "
        f"--config.dataset.synthetic_patients=0 --config.dataset.data_dir={bucket_data}")


# --- the loop -------------------------------------------------------------------------------


class _StepLog:
    """Device scalars of recent steps, fetched only at log/checkpoint points so the
    host never waits for the device between steps."""

    def __init__(self) -> None:
        self.first_step = 0
        self.values: list[dict[str, jax.Array]] = []
        self.start = time.perf_counter()

    def add(self, step_metrics: dict[str, jax.Array]) -> None:
        self.values.append(step_metrics)

    def fetch(self) -> tuple[int, dict[str, np.ndarray], float]:
        """(first step number, stacked host values, seconds since the last fetch); resets."""
        host = jax.device_get(self.values)
        stacked = {k: np.asarray([v[k] for v in host]) for k in (host[0] if host else {})}
        now = time.perf_counter()
        elapsed, first = now - self.start, self.first_step
        self.first_step += len(self.values)
        self.values, self.start = [], now
        return first, stacked, elapsed


def _finite_steps(values: dict[str, np.ndarray]) -> np.ndarray:
    """Per logged step: loss and gradient norm both finite (what the step itself tests)."""
    return np.isfinite(values["loss"]) & np.isfinite(values["grad_norm"])


def _check_finite(values: dict[str, np.ndarray], first_step: int, epoch: int,
                  policy: str) -> None:
    """With ``nan_policy='stop'``, raises on the first step whose loss or gradients were not
    finite (a finite loss can come with infinite or NaN gradients)."""
    bad = np.flatnonzero(~_finite_steps(values))
    if bad.size and policy == "stop":
        i = int(bad[0])
        what, value = (("loss", values["loss"][i]) if not np.isfinite(values["loss"][i])
                       else ("gradient norm", values["grad_norm"][i]))
        raise FloatingPointError(
            f"non-finite training {what} ({value}) at step {first_step + i + 1} (epoch "
            f"{epoch}); stopping (train.nan_policy='stop'). Lower train.learning_rate, or "
            f"set train.nan_policy='skip' to drop such updates.")


def _resume(checkpoints: checkpointing.Checkpointer, abstract: TrainState,
            train_input: input_pipeline.TrainInput
            ) -> tuple[TrainState | None, dict[str, Any]]:
    restored = checkpoints.restore_latest_readable(abstract, train_input)
    if restored is None:
        return None, {}
    logging.info("resumed from the checkpoint of step %d (epoch %d, %d steps into it)",
                 restored.step, restored.meta["epoch"], restored.meta["step_in_epoch"])
    return restored.state, restored.meta


def train_seed(config: ml_collections.ConfigDict, run_dir: str | os.PathLike, *,
               evaluate_fn: EvaluateFn | None = None,
               allow_config_change: Sequence[str] = ()) -> dict[str, Any]:
    """The docs/training.md protocol for one seed in `run_dir`, resuming a previous run there.

    A resumed run refuses config changes that alter what it computes unless
    `allow_config_change` names them (`checkpointing.check_run_config`). Returns (and
    writes to ``run_dir/results.json``) the best epoch's metrics, with the configs and the
    dataset that produced them.
    """
    run_dir = paths.resolve_path(run_dir)
    train_config = config.train
    mesh = sharding.mesh_from_config(config)
    check_fits(config, mesh)
    try:
        dataset = input_pipeline.dataset_identity(config)
    except FileNotFoundError:
        dataset = None  # not built: `check_dataset` below says how to build it
    checkpointing.check_run_config(run_dir, config, allow=allow_config_change, dataset=dataset)
    input_pipeline.check_dataset(config)  # shapes and labels against the model, before compiling

    compiled = programs(config, mesh)
    train_input = input_pipeline.create_train_input(config, mesh)
    steps_per_epoch = train_input.steps_per_epoch
    if train_config.steps_per_epoch > 0:
        steps_per_epoch = train_config.steps_per_epoch

    checkpoints = checkpointing.Checkpointer(run_dir / checkpointing.CHECKPOINT_DIR,
                                             keep=train_config.keep_checkpoints,
                                             async_save=train_config.async_checkpointing)
    writer = logging_utils.MetricWriter(run_dir)
    try:
        state, meta = _resume(checkpoints, compiled.abstract_state, train_input)
        if state is not None:
            state = _set_learning_rate(state, train_config.learning_rate, compiled.shardings)
        else:
            state = compiled.init(*_init_args(config))
            logging.info("new run in %s: %s parameters, mesh %s, %d steps per epoch",
                         run_dir, f"{models.count_params(state.params):,}", dict(mesh.shape),
                         steps_per_epoch)
        early = EarlyStopping(patience=train_config.patience, min_delta=train_config.min_delta)
        if "early_stopping" in meta:
            # The progress comes from the checkpoint, the rules from the config (they can
            # only differ when the user allowed the change).
            restored = _early_stopping_from_meta(meta["early_stopping"])
            early = dataclasses.replace(
                restored, patience=early.patience, min_delta=early.min_delta,
                should_stop=restored.num_bad_epochs >= early.patience)
        best = meta.get("best")
        epoch, step_in_epoch = int(meta.get("epoch", 0)), int(meta.get("step_in_epoch", 0))
        step = int(meta.get("step", 0))

        if evaluate_fn is None:
            evaluate_fn = functools.partial(_evaluate_swa, compiled.eval, config, mesh)

        def save(best_epoch: int | None = None) -> None:
            checkpoints.save(step, state, {
                "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
                "early_stopping": early.to_dict(), "best": best,
                "steps_per_epoch": steps_per_epoch}, train_input, best_epoch_rank=best_epoch)

        log = _StepLog()
        log.first_step = start_step = step
        while epoch < train_config.num_epochs and not early.should_stop:
            while step_in_epoch < steps_per_epoch:
                state, step_metrics = compiled.train(state, next(train_input))
                log.add(step_metrics)
                step += 1
                step_in_epoch += 1
                # Also right after this process's first step: that log's throughput
                # holds the compilation, later ones are clean.
                if step % train_config.log_every_steps == 0 or step == start_step + 1:
                    _log_train(log, writer, epoch + 1, train_config, state)
                if (step % train_config.checkpoint_every_steps == 0
                        and step_in_epoch < steps_per_epoch):  # epoch ends save below
                    _log_train(log, writer, epoch + 1, train_config, state)  # NaN check first
                    save()
            _log_train(log, writer, epoch + 1, train_config, state)
            epoch += 1
            step_in_epoch = 0
            state = compiled.swa(state)
            results = {split: dict(evaluate_fn(state, split, epoch))
                       for split in (VALIDATION_SPLIT, TEST_SPLIT)}
            early, is_best = early.update(results[VALIDATION_SPLIT]["f1"], epoch)
            if is_best:
                best = {"epoch": epoch, "step": step, **results}
            for split, values in results.items():
                writer.write_scalars(step, values, split=split)
                logging_utils.log_scalars(values, step=step, split=f"{split} epoch {epoch}")
            save(best_epoch=epoch if is_best else None)
            log.start = time.perf_counter()  # evaluation time is not training throughput
        checkpoints.wait_until_finished()
        final_state = state
    finally:
        writer.close()
        checkpoints.close()
        train_input.close()

    result = {
        "seed": int(config.seed),
        "best_epoch": None if best is None else best["epoch"],
        "best_step": None if best is None else best["step"],
        "epochs_completed": epoch,
        "stopped_early": bool(early.should_stop),
        "nonfinite_steps": int(jax.device_get(final_state.nonfinite_steps)),
        "validation": None if best is None else best[VALIDATION_SPLIT],
        "test": None if best is None else best[TEST_SPLIT],
        # What produced these numbers: every config the run started or resumed with
        # (config_history.jsonl holds them in full) and the dataset it read.
        "provenance": {
            "configs": [{"sha256": e["sha256"], "time": e["time"], "changed": e["changed"]}
                        for e in checkpointing.config_history(run_dir)],
            "dataset": dataset,
        },
    }
    if jax.process_index() == 0:
        logging_utils.write_json(run_dir / RESULTS_FILE, result)
    return result


def _evaluate_swa(eval_fn: Callable[..., jax.Array], config: ml_collections.ConfigDict,
                  mesh: jax.sharding.Mesh, state: TrainState, split: str, epoch: int
                  ) -> dict[str, float]:
    del epoch
    return evaluate(eval_fn, state.swa_params, state.rngs, config, split, mesh)


def _early_stopping_from_meta(values: Mapping[str, Any]) -> EarlyStopping:
    values = dict(values)
    if values["best_metric"] is None:  # JSON stores the initial -inf as null
        values["best_metric"] = float("-inf") if values["higher_is_better"] else float("inf")
    return EarlyStopping.from_dict(values)


def _log_train(log: _StepLog, writer: logging_utils.MetricWriter, epoch: int,
               train_config: ml_collections.ConfigDict, state: TrainState) -> None:
    if not log.values:
        return
    first_step, values, elapsed = log.fetch()
    _check_finite(values, first_step, epoch, train_config.nan_policy)
    n = values["loss"].size
    finite = _finite_steps(values)
    scalars = {
        "loss": float(values["loss"][finite].mean()) if finite.any() else float("nan"),
        "grad_norm": float(values["grad_norm"][finite].mean()) if finite.any() else float("nan"),
        "steps_per_second": n / elapsed,
        "examples_per_second": n * train_config.batch_size / elapsed,
        "epoch": float(epoch),
    }
    scalars["nonfinite_steps"] = float(jax.device_get(state.nonfinite_steps))
    # Only reached with nan_policy="skip" ("stop" raised above); process 0 reports.
    if not finite.all() and jax.process_index() == 0:
        logging.warning("skipped %d non-finite steps in steps %d-%d", int((~finite).sum()),
                        first_step + 1, first_step + n)
    step = first_step + n
    writer.write_scalars(step, scalars, split="train")
    logging_utils.log_scalars(scalars, step=step, split="train")


def _seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = seed
    config.seeds = 1
    return config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       evaluate_fn: EvaluateFn | None = None,
                       allow_config_change: Sequence[str] = ()) -> dict[str, Any]:
    """Validates `config`, prepares the data and runs every seed; returns the results.

    With ``config.seeds == 1`` the run lives in `workdir` and the result is its
    ``results.json``. With more, seed ``s`` runs in ``workdir/seed_<s>`` and
    ``workdir/results.json`` holds each seed's test metrics and, per metric, their mean
    and std (`metrics.aggregate_seeds`). Rerunning the same command resumes.
    """
    config_lib.validate_config(config)
    workdir = paths.resolve_path(workdir)
    config = prepare_synthetic_dataset(config, workdir)
    if config.seeds == 1:
        return train_seed(config, workdir, evaluate_fn=evaluate_fn,
                          allow_config_change=allow_config_change)
    seeds = [config.seed + i for i in range(config.seeds)]
    per_seed = {}
    for seed in seeds:
        logging.info("seed %d (%d of %d)", seed, seed - seeds[0] + 1, len(seeds))
        per_seed[seed] = train_seed(_seed_config(config, seed), workdir / f"seed_{seed}",
                                    evaluate_fn=evaluate_fn,
                                    allow_config_change=allow_config_change)
    tests = [r["test"] for r in per_seed.values()]
    if any(t is None for t in tests):
        raise RuntimeError("a seed finished without an evaluated epoch")
    aggregate = metrics.aggregate_seeds(tests)
    result = {
        "seeds": seeds,
        "test": aggregate,
        "test_formatted": {k: metrics.format_mean_std(v) for k, v in aggregate.items()
                           if k != "num_examples"},
        "per_seed": {str(s): r for s, r in per_seed.items()},
    }
    if jax.process_index() == 0:
        logging_utils.write_json(workdir / RESULTS_FILE, result)
        for name, text in result["test_formatted"].items():
            logging.info("test %s over %d seeds: %s", name, len(seeds), text)
    return result
