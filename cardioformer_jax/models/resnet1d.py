"""A 1-D ResNet baseline with Cardioformer's contract; no BatchNorm: docs/architecture.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cardioformer_jax.models.cardioformer import (
    TABULAR_INPUTS,
    check_tabular,
    dataclass_from_config,
    model_inputs,
    shared_problems,
)
from cardioformer_jax.ops import resolve_kernels
from cardioformer_jax.ops.dropout import dropout

NORMS = ("group", "layer")


@dataclasses.dataclass(frozen=True)
class ResNet1DConfig:
    """Validated, hashable hyper-parameters of `ResNet1D`: the config's ``resnet`` section,
    the input sizes (`models.input_sizes`) and ``model.tabular``."""

    seq_len: int = 250
    num_channels: int = 12
    num_classes: int = 5
    stem_width: int = 64
    stem_kernel: int = 15
    widths: tuple[int, ...] = (64, 128, 256)  # one stage per width
    blocks_per_stage: int = 2
    kernel_size: int = 7
    norm: str = "group"  # "group" or "layer"
    num_groups: int = 8  # GroupNorm groups (capped by the channel count)
    dropout: float = 0.2  # before the linear head
    kernels: str = "auto"  # random numbers of the dropout: see cardioformer_jax.ops
    # "early": the age/sex embedding enters as input channels, constant over time (no tokens).
    tabular: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        problems = shared_problems(self, ("seq_len", "num_channels", "stem_width",
                                          "stem_kernel", "blocks_per_stage", "kernel_size",
                                          "num_groups"))
        if not self.widths or min(self.widths) < 1:
            problems.append(f"widths={self.widths} must be a non-empty list of positive ints")
        if self.norm not in NORMS:
            problems.append(f"norm={self.norm!r} must be one of {NORMS}")
        if problems:
            raise ValueError("invalid resnet config: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ResNet1DConfig) -> ResNet1DConfig:
        """Builds from a dict / ``ConfigDict``; unknown keys are an error."""
        return dataclass_from_config(cls, config, "resnet")


def default_section() -> dict[str, Any]:
    """The config's ``resnet`` section: every field except the input contract."""
    skip = {"seq_len", "num_channels", "num_classes", "tabular"}
    return {f.name: f.default for f in dataclasses.fields(ResNet1DConfig) if f.name not in skip}


def _norm(features: int, config: ResNet1DConfig, rngs: nnx.Rngs) -> nnx.Module:
    if config.norm == "layer":
        return nnx.LayerNorm(features, epsilon=1e-5, rngs=rngs)
    # The largest group count <= num_groups that divides the channels.
    groups = max(g for g in range(1, min(config.num_groups, features) + 1) if features % g == 0)
    return nnx.GroupNorm(features, num_groups=groups, epsilon=1e-5, rngs=rngs)


def _conv(in_features: int, out_features: int, kernel: int, stride: int,
          rngs: nnx.Rngs) -> nnx.Conv:
    # No bias: a normalisation follows every convolution. He init suits the ReLUs.
    return nnx.Conv(in_features, out_features, kernel_size=(kernel,), strides=(stride,),
                    padding="SAME", use_bias=False,
                    kernel_init=nnx.initializers.kaiming_normal(), rngs=rngs)


class BasicBlock(nnx.Module):
    """``relu(norm2(conv2(relu(norm1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, in_features: int, out_features: int, stride: int,
                 config: ResNet1DConfig, *, rngs: nnx.Rngs):
        k = config.kernel_size
        self.conv1 = _conv(in_features, out_features, k, stride, rngs)
        self.norm1 = _norm(out_features, config, rngs)
        self.conv2 = _conv(out_features, out_features, k, 1, rngs)
        self.norm2 = _norm(out_features, config, rngs)
        # A 1x1 projection only where the shape changes; otherwise the identity.
        self.project = stride != 1 or in_features != out_features
        if self.project:
            self.shortcut = _conv(in_features, out_features, 1, stride, rngs)
            self.shortcut_norm = _norm(out_features, config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        skip = self.shortcut_norm(self.shortcut(x)) if self.project else x
        return jax.nn.relu(y + skip)


class ResNet1D(nnx.Module):
    """1-D ResNet classifier: ``(B, T, C)`` ECG windows -> ``(B, num_classes)`` logits."""

    def __init__(self, config: Mapping[str, Any] | ResNet1DConfig, *, rngs: nnx.Rngs,
                 deterministic: bool = False):
        config = ResNet1DConfig.from_config(config)
        self.config = config
        self.deterministic = deterministic
        self.kernels = resolve_kernels(config.kernels)
        # Age/sex embedding width (early: extra input channels; late: extra head features).
        self.tabular_width = 0 if config.tabular == "none" else min(config.widths[-1], 16)
        self.tabular_embedding = (nnx.Linear(TABULAR_INPUTS, self.tabular_width, rngs=rngs)
                                  if self.tabular_width else None)
        in_channels = config.num_channels + (self.tabular_width
                                             if config.tabular == "early" else 0)
        self.stem = _conv(in_channels, config.stem_width, config.stem_kernel, 2, rngs)
        self.stem_norm = _norm(config.stem_width, config, rngs)
        blocks = []
        features = config.stem_width
        for stage, width in enumerate(config.widths):
            for index in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(features, width, stride, config, rngs=rngs))
                features = width
        self.blocks = nnx.List(blocks)
        head_in = features + (self.tabular_width if config.tabular == "late" else 0)
        self.head = nnx.Linear(head_in, config.num_classes, rngs=rngs)
        # Only the dropout stream is kept: the training state's random part is the model's.
        self.rngs = rngs["dropout"].fork()

    def check_input(self, x: jax.Array) -> None:
        """Static shape contract of the input (raises with a clear message)."""
        config = self.config
        if x.ndim != 3 or x.shape[1:] != (config.seq_len, config.num_channels):
            raise ValueError(
                f"ResNet1D input has shape {x.shape}; this model expects (batch, "
                f"{config.seq_len}, {config.num_channels}) = (batch, seq_len, num_channels)")

    def features(self, x: jax.Array) -> jax.Array:
        """``(B, T, C)`` -> pooled features ``(B, widths[-1])``."""
        x = jax.nn.relu(self.stem_norm(self.stem(x.astype(jnp.float32))))
        x = nnx.max_pool(x, window_shape=(3,), strides=(2,), padding="SAME")
        for block in self.blocks:
            x = block(x)
        return x.mean(axis=1)

    def __call__(self, inputs: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
        """Logits ``(B, num_classes)`` of the `model_inputs`."""
        x, tabular = model_inputs(inputs)
        self.check_input(x)
        check_tabular(self.config.tabular, x, tabular)
        key = None if self.deterministic else self.rngs()
        embedded = (None if self.tabular_embedding is None
                    else jax.nn.gelu(self.tabular_embedding(tabular.astype(jnp.float32))))
        if self.config.tabular == "early":
            x = jnp.concatenate([x.astype(jnp.float32), jnp.broadcast_to(
                embedded[:, None, :], (x.shape[0], x.shape[1], embedded.shape[-1]))], axis=-1)
        features = dropout(self.features(x), self.config.dropout, key, self.kernels)
        if self.config.tabular == "late":
            features = jnp.concatenate([features, embedded], axis=-1)
        return self.head(features)

