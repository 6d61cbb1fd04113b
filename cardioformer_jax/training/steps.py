"""The jitted programs of training, the benchmark and inference (docs/training.md)."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from cardioformer_jax import models
from cardioformer_jax.core import sharding, tasks
from cardioformer_jax.data import eval_input, windows
from cardioformer_jax.models import partitioning
from cardioformer_jax.training import swa


@flax.struct.dataclass
class TrainState:
    """Everything on the devices that a training run updates."""

    step: jax.Array  # optimizer steps taken (int32 scalar)
    params: nnx.State  # the model's `nnx.Param` variables
    opt_state: optax.OptState
    rngs: nnx.State  # the model's random streams (dropout/augmentation key and counter)
    swa_params: nnx.State  # equal-weight average of the parameters at the ends of epochs
    swa_count: jax.Array  # epochs in the average
    nonfinite_steps: jax.Array  # updates dropped: loss or gradients not finite


@dataclasses.dataclass(frozen=True)
class StepDefinition:
    """The static half of the model (NNX graph definitions) and the optimizer."""

    graphdef: nnx.GraphDef  # train mode: dropout and augmentations on
    eval_graphdef: nnx.GraphDef  # eval mode
    tx: optax.GradientTransformation  # its learning rate lives in the optimizer state
    config: models.NetworkConfig
    task: tasks.Task = tasks.SINGLE_LABEL  # the loss and the probabilities of the logits
    # Crops (`input.crop_seconds`): evaluation scores whole records over these windows.
    windowing: windows.Windowing | None = None


def create_optimizer(grad_clip_norm: float, learning_rate: float | jax.Array = 0.0
                     ) -> optax.GradientTransformation:
    """docs/training.md: clipping at the global gradient norm (<= 0: none), then Adam. The
    learning rate lives in the optimizer state (`learning_rate` is its initial value), so runs
    differing only in it share compilations and a resume can set it (`set_learning_rate`)."""
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


def _init_fn(network: models.NetworkConfig, grad_clip_norm: float
             ) -> Callable[[jax.Array, jax.Array], TrainState]:
    """``init(seed, learning_rate)``: arguments, so runs differing in them share a compile."""

    def init(seed: jax.Array, learning_rate: jax.Array) -> TrainState:
        model = models.build_model(network, rngs=_model_rngs(seed))
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


def init_args(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    return (jnp.asarray(config.seed, jnp.uint32),
            jnp.asarray(config.train.learning_rate, jnp.float32))


def step_definition(network: models.NetworkConfig, grad_clip_norm: float,
                    task: tasks.Task = tasks.SINGLE_LABEL,
                    windowing: windows.Windowing | None = None) -> StepDefinition:
    """Graph definitions of the model (traced abstractly: no weights created)."""
    model = nnx.eval_shape(lambda: models.build_model(network, rngs=_model_rngs(0)))
    graphdef = nnx.graphdef(model)
    model.eval()
    return StepDefinition(graphdef=graphdef, eval_graphdef=nnx.graphdef(model),
                          tx=create_optimizer(grad_clip_norm), config=network,
                          task=task, windowing=windowing)


def train_step(definition: StepDefinition, state: TrainState, batch: Mapping[str, jax.Array]
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch ``{"signal": (B, T, C), "label": (B,)[, "tabular"]}``;
    returns the new state and ``{"loss", "grad_norm"}``. A step whose loss or gradients are not
    finite leaves the parameters and Adam state as they were and counts in ``nonfinite_steps``."""

    def loss_fn(params: nnx.State, rngs: nnx.State) -> tuple[jax.Array, nnx.State]:
        # copy=True: fresh Variables owned by this trace, so the model may advance its
        # RNG counter inside `value_and_grad`.
        model = nnx.merge(definition.graphdef, params, rngs, copy=True)
        logits = model(batch).astype(jnp.float32)
        return definition.task.loss(logits, batch["label"]), nnx.state(model, nnx.RngState)

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


def logits_step(definition: StepDefinition, params: nnx.State, rngs: nnx.State,
                batch: Mapping[str, jax.Array]) -> jax.Array:
    """Logits ``(B, K)`` (float32) in eval mode of model-ready samples ``{"signal": (B, L,
    C)[, "tabular"]}``: no windows cut, no activation (inference's `logits`, the export)."""
    model = nnx.merge(definition.eval_graphdef, params, rngs, copy=True)
    return model(batch).astype(jnp.float32)


def eval_step(definition: StepDefinition, params: nnx.State, rngs: nnx.State,
              batch: Mapping[str, jax.Array]) -> jax.Array:
    """Class probabilities ``(B, K)`` (float32) of the model in eval mode; with
    `definition.windowing`, of whole records over their windows (docs/training.md)."""
    windowing = definition.windowing
    if windowing is None:
        return definition.task.probabilities(logits_step(definition, params, rngs, batch))
    cut = windows.cut_windows(batch["signal"], windowing)  # (B, W, L, C)
    rows, count = cut.shape[:2]
    # Record-major rows keep the sharded batch axis leading: each device's records'
    # windows stay on that device.
    inputs = {"signal": partitioning.constrain_batch(cut.reshape(rows * count, *cut.shape[2:]),
                                                     0)}
    if "tabular" in batch:
        inputs["tabular"] = jnp.repeat(batch["tabular"], count, axis=0)
    probs = definition.task.probabilities(logits_step(definition, params, rngs, inputs))
    return windows.aggregate(probs.reshape(rows, count, -1), windowing.aggregation)


def swa_epoch_update(state: TrainState) -> TrainState:
    """Adds the current parameters to the SWA average with equal weight (docs/training.md)."""
    return state.replace(swa_params=swa.swa_update(state.swa_params, state.params,
                                                   state.swa_count),
                         swa_count=state.swa_count + 1)


@dataclasses.dataclass(frozen=True, eq=False)
class Programs:
    """The jitted programs of one model on one mesh, shardings pinned: `init` creates the state
    sharded, `train` and `swa` donate it, `eval` and `logits` are split like the batch."""

    definition: StepDefinition
    mesh: jax.sharding.Mesh
    abstract_state: TrainState  # `jax.ShapeDtypeStruct`s carrying their shardings
    shardings: TrainState  # a `NamedSharding` per leaf
    init: Callable[[jax.Array, jax.Array], TrainState]
    train: Callable[[TrainState, Mapping[str, jax.Array]],
                    tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], jax.Array]
    swa: Callable[[TrainState], TrainState]
    logits: Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], jax.Array]


def programs(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Programs:
    """The `Programs` of the config's model on `mesh`, built once per process (cached)."""
    return _programs(models.network_config(config),
                     float(config.train.grad_clip_norm), mesh,
                     tasks.from_config(config),
                     windows.from_config(config))


@functools.lru_cache(maxsize=8)
def _programs(network: models.NetworkConfig, grad_clip_norm: float, mesh: jax.sharding.Mesh,
              task: tasks.Task = tasks.SINGLE_LABEL,
              windowing: windows.Windowing | None = None) -> Programs:
    definition = step_definition(network, grad_clip_norm, task, windowing)
    init = _init_fn(network, grad_clip_norm)
    shapes = jax.eval_shape(init, jnp.zeros((), jnp.uint32), jnp.zeros((), jnp.float32))
    shardings = sharding.tree_shardings(shapes, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, shardings)
    data = sharding.data_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    def traced(fn):  # the model's activation constraints see this mesh
        return sharding.in_mesh(fn, mesh)

    return Programs(
        definition=definition, mesh=mesh, abstract_state=abstract, shardings=shardings,
        init=jax.jit(traced(init), out_shardings=shardings),
        train=jax.jit(traced(functools.partial(train_step, definition)),
                      in_shardings=(shardings, data), out_shardings=(shardings, replicated),
                      donate_argnums=0),
        eval=jax.jit(traced(functools.partial(eval_step, definition)),
                     in_shardings=(shardings.swa_params, shardings.rngs, data),
                     out_shardings=data),
        swa=jax.jit(swa_epoch_update, in_shardings=(shardings,), out_shardings=shardings,
                    donate_argnums=0),
        logits=jax.jit(traced(functools.partial(logits_step, definition)),
                       in_shardings=(shardings.swa_params, shardings.rngs, data),
                       out_shardings=data),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class SeedPrograms:
    """The programs of K seeds trained together (docs/training.md, "Seeds in one program"):
    states stacked on a leading axis, each program the one-seed one under `jax.vmap`. `train`
    takes K batches; `eval` scores one batch with every seed: ``(B, K, classes)``; `take(state,
    i)` is seed ``i``'s state, `stack` the reverse. K = 1: the one-seed programs themselves."""

    one: Programs  # the one-seed programs: init, abstract state, shardings
    num_seeds: int
    train: Callable[[TrainState, tuple[Mapping[str, jax.Array], ...]],
                    tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], jax.Array]
    swa: Callable[[TrainState], TrainState]
    take: Callable[[TrainState, int], TrainState]
    stack: Callable[..., TrainState]


def _with_seed_axis(named: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
    """A one-seed leaf's sharding with a leading, unsplit seed axis."""
    return jax.sharding.NamedSharding(named.mesh, jax.sharding.PartitionSpec(None, *named.spec))


@functools.lru_cache(maxsize=4)
def seed_programs(one: Programs, num_seeds: int) -> SeedPrograms:
    """The programs of `num_seeds` stacked seeds of the model of `one` (built once)."""
    if num_seeds == 1:  # not a vmap over one seed, which could round differently
        return SeedPrograms(one=one, num_seeds=1, train=lambda state, b: one.train(state, *b),
                            eval=one.eval, swa=one.swa, take=lambda state, index: state,
                            stack=lambda state: state)
    definition = one.definition
    stacked = jax.tree.map(_with_seed_axis, one.shardings)
    data = sharding.data_sharding(one.mesh)
    replicated = jax.sharding.NamedSharding(one.mesh, jax.sharding.PartitionSpec())
    train_one = functools.partial(train_step, definition)
    eval_one = functools.partial(eval_step, definition)

    def train_all(state: TrainState, batches: tuple[Mapping[str, jax.Array], ...]
                  ) -> tuple[TrainState, dict[str, jax.Array]]:
        batch = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
        return jax.vmap(train_one)(state, batch)

    def eval_all(params: nnx.State, rngs: nnx.State, batch: Mapping[str, jax.Array]
                 ) -> jax.Array:
        probs = jax.vmap(eval_one, in_axes=(0, 0, None))(params, rngs, batch)
        return jnp.swapaxes(probs, 0, 1)  # rows first, like the batch

    def take(state: TrainState, index: jax.Array) -> TrainState:
        return jax.tree.map(lambda x: x[index], state)

    def stack(*states: TrainState) -> TrainState:
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    take_one = jax.jit(take, out_shardings=one.shardings)
    return SeedPrograms(
        one=one, num_seeds=num_seeds,
        train=jax.jit(sharding.in_mesh(train_all, one.mesh), in_shardings=(stacked, data),
                      out_shardings=(stacked, replicated), donate_argnums=0),
        eval=jax.jit(sharding.in_mesh(eval_all, one.mesh),
                     in_shardings=(stacked.swa_params, stacked.rngs, data),
                     out_shardings=data),
        swa=jax.jit(jax.vmap(swa_epoch_update), in_shardings=(stacked,),
                    out_shardings=stacked, donate_argnums=0),
        take=lambda state, index: take_one(state, jnp.int32(index)),
        stack=jax.jit(stack, out_shardings=stacked),
    )


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                       ) -> tuple[TrainState, Programs]:
    """A fresh state of the config's model and seed, sharded on `mesh`, and its programs."""
    compiled = programs(config, mesh)
    return compiled.init(*init_args(config)), compiled


def set_learning_rate(state: TrainState, learning_rate: float, shardings: Any) -> TrainState:
    """The state with the optimizer's learning rate set to `learning_rate`."""
    current = optax.tree.get(state.opt_state, "learning_rate")
    wanted = jnp.asarray(learning_rate, current.dtype)
    if float(current) == float(wanted):
        return state
    logging.info("learning rate %g (the checkpoint had %g)", learning_rate, float(current))
    value = jax.device_put(wanted, optax.tree.get(shardings.opt_state, "learning_rate"))
    return state.replace(opt_state=optax.tree.set(state.opt_state, learning_rate=value))


def predict(eval_fn: Callable[..., jax.Array], params: nnx.State, rngs: nnx.State,
            config: ml_collections.ConfigDict, split: str, mesh: jax.sharding.Mesh,
            progress: bool = False) -> dict[str, np.ndarray]:
    """Probabilities of every example of `split` exactly once, on every process: ``{"probs" (N,
    K), "label" (N,) or (N, K), "index" (N,)}`` in split order (else RuntimeError)."""
    in_flight: collections.deque[jax.Array] = collections.deque()
    probs, host = [], []
    for batch in eval_input.eval_batches(config, split, mesh, progress=progress):
        # Two batches stay in flight, so the device never waits for the host's fetch, and
        # a progress bar counts batches that are done, not merely dispatched.
        in_flight.append(eval_fn(params, rngs, batch.device))
        host.append({k: batch.host[k] for k in ("label", "mask", "index")})
        if len(in_flight) > 2:
            probs.append(sharding.host_local_rows(in_flight.popleft()))
    probs.extend(sharding.host_local_rows(p) for p in in_flight)
    local = {k: np.concatenate([h[k] for h in host]) for k in ("label", "mask", "index")}
    local["probs"] = np.concatenate(probs)
    gathered = eval_input.allgather_host(local)
    valid = gathered["mask"].astype(bool)
    out = {k: gathered[k][valid] for k in ("probs", "label", "index")}
    order = np.argsort(out["index"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    if not np.array_equal(out["index"], np.arange(out["index"].size)):
        raise RuntimeError(f"evaluation of {split!r} did not see every example exactly once")
    return out


def prediction_metrics(config: ml_collections.ConfigDict, probs: np.ndarray,
                       labels: np.ndarray) -> dict[str, float]:
    """The task's metrics (docs/training.md) of probabilities ``(N, K)`` and `labels`."""
    result = tasks.from_config(config).metrics(probs, labels, config.dataset.num_classes)
    # A count: logged as 1360, not 1360.0.
    result["num_examples"] = int(labels.shape[0])
    return result


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
