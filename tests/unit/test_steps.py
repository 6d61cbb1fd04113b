"""The step functions of training/steps.py (loss, update, skipped non-finite steps, SWA,
evaluation with and without windows), each run with and without jit. They drive a linear
stand-in model here, so that the logic, not compiling a model, is what the tests cost; the
Cardioformer's forward pass with and without jit: test_model.py. The compiled, sharded
programs in training runs: tests/integration/test_train.py.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx

from cardioformer_jax.core import tasks
from cardioformer_jax.data import windows
from cardioformer_jax.models.cardioformer import model_inputs
from cardioformer_jax.training import steps

# Each program runs once or twice: compiling is the cost.

BATCH, LENGTH, LEADS, CLASSES = 6, 8, 3, 4
LEARNING_RATE = 1e-2


class Classifier(nnx.Module):
    """Logits of the flattened signal, after dropout (train mode) that draws on `rngs`."""

    def __init__(self, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.linear = nnx.Linear(LENGTH * LEADS, CLASSES, rngs=rngs)

    def __call__(self, inputs: jax.Array | dict[str, jax.Array]) -> jax.Array:
        signal, _ = model_inputs(inputs)  # the models' contract: a batch or a signal
        return self.linear(self.dropout(signal.reshape(signal.shape[0], -1)))


def definition(multilabel: bool = False, windowing: windows.Windowing | None = None
               ) -> steps.StepDefinition:
    model = nnx.eval_shape(lambda: Classifier(nnx.Rngs(0)))
    graphdef = nnx.graphdef(model)
    model.eval()
    return steps.StepDefinition(graphdef=graphdef, eval_graphdef=nnx.graphdef(model),
                                tx=steps.create_optimizer(4.0), config=None,
                                task=tasks.of(multilabel),
                                windowing=windowing)


@functools.cache
def initial_state() -> steps.TrainState:
    """A fresh state as `steps` initialises one (Adam at LEARNING_RATE, empty SWA)."""
    _, params, rngs = nnx.split(Classifier(nnx.Rngs(params=0, dropout=1)), nnx.Param, ...)
    zero = jnp.zeros((), jnp.int32)
    return steps.TrainState(
        step=zero, params=params,
        opt_state=steps.create_optimizer(4.0, LEARNING_RATE).init(params), rngs=rngs,
        swa_params=jax.tree.map(jnp.zeros_like, params), swa_count=zero, nonfinite_steps=zero)


def batch(multilabel: bool = False, length: int = LENGTH, nan: bool = False
          ) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((BATCH, length, LEADS)).astype(np.float32)
    if nan:
        signal[1] = np.nan  # a whole record: dropout cannot drop every value
    label = ((rng.random((BATCH, CLASSES)) < 0.5).astype(np.float32) if multilabel
             else np.arange(BATCH) % CLASSES)
    return {"signal": jnp.asarray(signal), "label": jnp.asarray(label)}


@functools.cache
def reference_step(multilabel: bool) -> tuple[steps.TrainState, dict[str, jax.Array]]:
    """The step run op by op, once: what each variant must agree with."""
    return steps.train_step(definition(multilabel), initial_state(), batch(multilabel))


def rng_counts(state: steps.TrainState) -> list[int]:
    return [int(v) for v in jax.tree.leaves(state.rngs)
            if not jnp.issubdtype(v.dtype, jax.dtypes.prng_key)]


def numpy_logits(params: nnx.State, signal: np.ndarray) -> np.ndarray:
    linear = params["linear"]
    return (np.asarray(signal).reshape(signal.shape[0], -1) @ np.asarray(linear["kernel"][...])
            + np.asarray(linear["bias"][...]))


class StepVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("softmax", False), ("multilabel", True))
    def test_train_step(self, multilabel):
        step_definition, state0, data = definition(multilabel), initial_state(), batch(multilabel)
        step = self.variant(functools.partial(steps.train_step, step_definition))
        state, metrics = step(state0, data)
        chex.assert_shape([metrics["loss"], metrics["grad_norm"]], ())
        chex.assert_tree_all_finite((state.params, state.opt_state, metrics))
        chex.assert_trees_all_equal_shapes_and_dtypes(state.params, state0.params)
        # Jitted or op by op: the same step.
        reference_state, reference_metrics = reference_step(multilabel)
        chex.assert_trees_all_close((state.params, metrics),
                                    (reference_state.params, reference_metrics),
                                    rtol=1e-5, atol=1e-7)
        assert (int(state.step), int(state.nonfinite_steps)) == (1, 0)
        assert rng_counts(state) == [count + 1 for count in rng_counts(state0)]

        # The loss: the mean cross-entropy of the train-mode logits (the stream's dropout).
        model = nnx.merge(step_definition.graphdef, state0.params, state0.rngs, copy=True)
        logits = np.asarray(model(data["signal"]), np.float64)
        labels = np.asarray(data["label"])
        if multilabel:
            expected = np.mean(np.logaddexp(0.0, logits) - labels * logits)
        else:
            log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            expected = -np.mean(log_probs[np.arange(BATCH), labels])
        chex.assert_trees_all_close(metrics["loss"], np.float32(expected), rtol=1e-5)
        assert float(metrics["grad_norm"]) > 0
        # Adam's first update moves each weight by at most the learning rate, and some do.
        chex.assert_trees_all_close(state.params, state0.params, atol=LEARNING_RATE * 1.001)
        assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, state.params,
                                                    state0.params)))

        # A non-finite loss: the weights and Adam's state stay, the stream moves on.
        skipped, skipped_metrics = step(state0, batch(multilabel, nan=True))
        assert not np.isfinite(float(skipped_metrics["loss"]))
        chex.assert_trees_all_equal((skipped.params, skipped.opt_state),
                                    (state0.params, state0.opt_state))
        assert (int(skipped.step), int(skipped.nonfinite_steps)) == (1, 1)
        assert rng_counts(skipped) == rng_counts(state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_swa_epoch_update(self):
        state0 = initial_state()
        moved = state0.replace(params=jax.tree.map(lambda p: p + 1.0, state0.params))
        update = self.variant(steps.swa_epoch_update)
        first = update(state0)  # the first epoch's average: the parameters themselves
        chex.assert_trees_all_close(first.swa_params, state0.params)
        second = update(first.replace(params=moved.params))
        chex.assert_trees_all_close(
            second.swa_params, jax.tree.map(lambda p: p + 0.5, state0.params), rtol=1e-6)
        assert (int(first.swa_count), int(second.swa_count)) == (1, 2)
        chex.assert_trees_all_equal(second.params, moved.params)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("softmax", False, None),
        ("multilabel", True, None),
        ("windows_max", False, windows.Windowing(LENGTH, 4, "max")),
        ("multilabel_windows_mean", True, windows.Windowing(LENGTH, 4, "mean")),
    )
    def test_eval_step(self, multilabel, windowing):
        state = initial_state()
        # Whole records of three windows (starts 0, 4, 8) when windowed.
        data = batch(multilabel, length=LENGTH if windowing is None else 2 * LENGTH)
        evaluate = self.variant(functools.partial(steps.eval_step,
                                                  definition(multilabel, windowing)))
        probs = evaluate(state.params, state.rngs, data)
        chex.assert_shape(probs, (BATCH, CLASSES))
        chex.assert_type(probs, jnp.float32)
        chex.assert_tree_all_finite(probs)
        # Eval mode: no dropout, so the probabilities of the plain linear map, per window.
        signal = np.asarray(data["signal"])
        starts = [0] if windowing is None else windowing.starts(signal.shape[1])
        per_window = []
        for start in starts:
            logits = numpy_logits(state.params, signal[:, start:start + LENGTH])
            per_window.append(1 / (1 + np.exp(-logits)) if multilabel else
                              np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
        assert len(per_window) == (1 if windowing is None else 3)
        combine = np.mean if windowing is not None and windowing.aggregation == "mean" else np.max
        chex.assert_trees_all_close(probs, combine(np.stack(per_window), axis=0).astype(np.float32),
                                    rtol=1e-5, atol=1e-6)
        if not multilabel and windowing is None:
            chex.assert_trees_all_close(probs.sum(-1), np.ones(BATCH, np.float32), rtol=1e-5)
