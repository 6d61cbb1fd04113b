"""Single- or multi-label outputs: loss, labels, metrics (docs/architecture.md, "Choices")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np
import optax

from cardioformer_jax.core import metrics


@dataclasses.dataclass(frozen=True)
class Task:
    """What `SINGLE_LABEL` and `MULTI_LABEL`, the two tasks, share."""

    name: ClassVar[str]
    multilabel: ClassVar[bool]  # what config.json and exported metadata record
    selection_metrics: ClassVar[tuple[str, ...]]  # what train.selection_metric may name
    label_dtype: ClassVar[type]
    probabilities_note: ClassVar[str]  # exported models' metadata

    def padding_label(self, num_classes: int) -> np.ndarray:
        """The label of an evaluation batch's padding rows."""
        return np.zeros(self.label_shape(num_classes), self.label_dtype)


@dataclasses.dataclass(frozen=True)
class SingleLabel(Task):
    """Exclusive classes: integer `label`, softmax cross-entropy."""

    name = "single-label"
    multilabel = False
    selection_metrics = ("f1", "auroc", "accuracy")
    label_dtype = np.int32
    probabilities_note = "softmax over the last axis gives class probabilities"

    def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def probabilities(self, logits: jax.Array) -> jax.Array:
        return jax.nn.softmax(logits, axis=-1)

    def label(self, element: Mapping[str, Any]) -> np.ndarray:
        return np.int32(element["label"])

    def label_shape(self, num_classes: int) -> tuple[int, ...]:
        return ()

    def random_labels(self, rng: np.random.Generator, rows: int, num_classes: int
                      ) -> np.ndarray:
        return rng.integers(0, num_classes, rows).astype(np.int32)

    def metrics(self, probs: np.ndarray, labels: np.ndarray, num_classes: int
                ) -> dict[str, float]:
        return metrics.classification_metrics(probs, labels, num_classes=num_classes)

    def example_problem(self, example: Mapping[str, Any], num_classes: int) -> str | None:
        label = int(example["label"])
        if not 0 <= label < num_classes:
            return (f"has label {label}, outside [0, {num_classes}) (dataset.num_classes="
                    f"{num_classes})")
        return None

    def check_dataset(self, where: str, features: Any, metadata: Mapping[str, Any],
                      split: str, num_classes: int) -> None:
        """ValueError when the dataset `where`'s split cannot train this task."""
        found = features["label"].num_classes
        if found > num_classes:
            raise ValueError(
                f"dataset {where} split {split!r} has {found} classes "
                f"{features['label'].names}, labels up to {found - 1}; the config has "
                f"dataset.num_classes={num_classes}, i.e. labels must lie in "
                f"[0, {num_classes})")
        stats = metadata.get("splits", {}).get(split, {})
        unlabelled = stats.get("class_examples", {}).get("unlabelled", 0)
        if unlabelled:
            raise ValueError(
                f"dataset {where} split {split!r} has {unlabelled} examples with label -1 "
                f"(unlabelled), outside [0, {num_classes}); single-label training needs a "
                f"config without them"
                + (" (or train on its multi-hot labels: dataset.multilabel=True)"
                   if "labels" in features else ""))


@dataclasses.dataclass(frozen=True)
class MultiLabel(Task):
    """Classes that may co-occur: multi-hot float `labels`, a sigmoid and BCE per class."""

    name = "multi-label"
    multilabel = True
    selection_metrics = ("auroc", "fmax", "f1")
    label_dtype = np.float32
    probabilities_note = "a sigmoid per class gives the (multi-label) class probabilities"

    def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    def probabilities(self, logits: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(logits)

    def label(self, element: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(element["labels"], np.float32)

    def label_shape(self, num_classes: int) -> tuple[int, ...]:
        return (num_classes,)

    def random_labels(self, rng: np.random.Generator, rows: int, num_classes: int
                      ) -> np.ndarray:
        return rng.integers(0, 2, (rows, num_classes)).astype(np.float32)

    def metrics(self, probs: np.ndarray, labels: np.ndarray, num_classes: int
                ) -> dict[str, float]:
        return metrics.multilabel_metrics(probs, labels)

    def example_problem(self, example: Mapping[str, Any], num_classes: int) -> str | None:
        hot = np.asarray(example["labels"])
        if hot.shape != (num_classes,) or not np.isin(hot, (0, 1)).all():
            return (f"has multi-hot labels {hot.tolist()}, expected {num_classes} values "
                    "of 0 or 1 (dataset.num_classes)")
        return None

    def check_dataset(self, where: str, features: Any, metadata: Mapping[str, Any],
                      split: str, num_classes: int) -> None:
        if "labels" not in features:
            raise ValueError(
                f"dataset {where} has no multi-hot `labels` (dataset.multilabel=True): "
                "use a multi-label builder config (e.g. ptbxl benchmark_superdiagnostic_100hz)"
                " or dataset.multilabel=False")
        if tuple(features["labels"].shape) != (num_classes,):
            raise ValueError(
                f"dataset {where} split {split!r} has {features['labels'].shape[0]} "
                f"multi-hot classes {metadata.get('multilabel_names') or []}; the "
                f"config has dataset.num_classes={num_classes}")


SINGLE_LABEL = SingleLabel()
MULTI_LABEL = MultiLabel()


def of(multilabel: bool) -> Task:
    return MULTI_LABEL if multilabel else SINGLE_LABEL


def from_config(config: Any) -> Task:
    """The task of a config: its ``dataset.multilabel`` switch, read here only."""
    return of(bool(config.dataset.multilabel))
