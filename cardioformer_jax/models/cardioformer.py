"""Cardioformer in Flax NNX: embedding, encoder, head; read beside docs/model.md."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cardioformer_jax.models.layers import (
    GroupedAttention,
    ResidualBlock,
    gelu,
    sinusoidal_position_encoding,
    split_key,
    torch_linear_init,
)
from cardioformer_jax.models.partitioning import constrain_batch, gather_weights
from cardioformer_jax.ops import KERNELS, hash_random, random_impl, resolve_kernels
from cardioformer_jax.ops.dropout import dropout
from cardioformer_jax.ops.layer_norm import LayerNorm

TABULAR_MODES: tuple[str, ...] = ("none", "late", "early")
TABULAR_INPUTS = 4  # `data.tabular.TABULAR_FEATURES`: age, age known, male, female

Array = jax.Array

# docs/model.md (Embedding, step 3): implemented augmentations, reference default strengths.
_AUGMENTATION_DEFAULTS = {"none": 0.0, "jitter": 0.1, "scale": 0.1, "drop": 0.1}
_REFERENCE_ONLY_AUGMENTATIONS = ("flip", "shuffle", "mask", "frequency")


def parse_augmentations(spec: str | Sequence[str]) -> tuple[tuple[str, float], ...]:
    """``(name, strength)`` pairs of the reference's augmentation list, e.g.
    ``"jitter0.2,scale0.2,drop0.5"`` (no strength: the reference's default)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    parsed = []
    for item in (s.strip() for s in items):
        match = re.fullmatch(r"([a-z]+)([0-9]*\.?[0-9]*)", item)
        name = match.group(1) if match else item
        if name in _REFERENCE_ONLY_AUGMENTATIONS:
            raise ValueError(
                f"augmentation {item!r} exists in the reference but is not implemented here; "
                f"use some of {sorted(_AUGMENTATION_DEFAULTS)}"
            )
        if match is None or name not in _AUGMENTATION_DEFAULTS:
            raise ValueError(
                f"unknown augmentation {item!r} in {spec!r}; expected names from "
                f"{sorted(_AUGMENTATION_DEFAULTS)} followed by an optional strength, "
                "e.g. 'jitter0.2,scale0.2,drop0.5'"
            )
        strength = float(match.group(2)) if match.group(2) else _AUGMENTATION_DEFAULTS[name]
        if name == "drop" and not 0.0 <= strength < 1.0:
            raise ValueError(f"augmentation {item!r}: a drop rate must lie in [0, 1)")
        parsed.append((name, strength))
    if not parsed:
        raise ValueError("the augmentation list is empty; use 'none' for no augmentation")
    return tuple(parsed)


def parse_patch_lens(value: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [int(v) for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
    elif isinstance(value, int):
        value = [value]
    return tuple(int(v) for v in value)


def shared_problems(config: Any, positive: Sequence[str]) -> list[str]:
    """What is wrong with the fields every network config has (`positive` ints >= 1)."""
    problems = [f"{name}={getattr(config, name)} must be >= 1" for name in positive
                if int(getattr(config, name)) < 1]
    if config.num_classes < 2:
        problems.append(f"num_classes={config.num_classes} must be >= 2")
    if not 0.0 <= config.dropout < 1.0:
        problems.append(f"dropout={config.dropout} must lie in [0, 1)")
    if config.kernels not in KERNELS:
        problems.append(f"kernels={config.kernels!r} must be one of {KERNELS}")
    if config.tabular not in TABULAR_MODES:
        problems.append(f"tabular={config.tabular!r} must be one of {TABULAR_MODES}")
    return problems


def dataclass_from_config(cls: type, config: Any, section: str) -> Any:
    """``cls(**config)`` for a config-section dataclass; unknown keys are a clear error."""
    if isinstance(config, cls):
        return config
    values = dict(config.items())
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {section} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class CardioformerConfig:
    """Validated, hashable hyper-parameters (docs/model.md): a config's ``model`` section
    with the input sizes (`models.network_config`)."""

    seq_len: int = 250
    num_channels: int = 12
    num_classes: int = 5
    d_model: int = 128
    d_ff: int = 256
    n_heads: int = 8
    e_layers: int = 6
    dropout: float = 0.1
    patch_lens: tuple[int, ...] = (2, 4, 8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32)
    augmentations: tuple[tuple[str, float], ...] = (("jitter", 0.2), ("scale", 0.2), ("drop", 0.5))
    no_inter_attn: bool = False
    single_channel: bool = False
    dtype: str = "float32"
    # docs/model.md, "Execution settings":
    kernels: str = "auto"
    scan_unroll: int = 1  # layers per scan iteration: 1 compiles fastest, e_layers runs fastest
    remat: bool = True
    eval_chunk_size: int = 0  # 0: 8 rows with the CPU kernels, the whole batch otherwise
    tabular: str = "none"  # docs/model.md, "Age and sex"

    # The fields that shape the parameters (`config_lib.resume_fields`).
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "seq_len", "num_channels", "num_classes", "d_model", "d_ff", "n_heads", "e_layers",
        "patch_lens", "single_channel", "no_inter_attn")

    def __post_init__(self):
        object.__setattr__(self, "patch_lens", parse_patch_lens(self.patch_lens))
        if self.augmentations and isinstance(self.augmentations[0], tuple):
            augmentations = self.augmentations
        else:
            augmentations = parse_augmentations(self.augmentations)
        object.__setattr__(self, "augmentations", tuple(augmentations))
        problems = shared_problems(self, ("seq_len", "num_channels", "num_classes", "d_model",
                                          "d_ff", "n_heads", "e_layers"))
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not self.patch_lens:
            problems.append("patch_lens is empty: give at least one patch length")
        for p in self.patch_lens:
            if p < 1:
                problems.append(f"patch length {p} must be >= 1")
            elif p > self.seq_len:
                problems.append(
                    f"patch length {p} is longer than the signal (seq_len={self.seq_len})"
                )
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype={self.dtype!r} must be 'float32' or 'bfloat16'")
        if not 1 <= self.scan_unroll:
            problems.append(f"scan_unroll={self.scan_unroll} must be >= 1")
        if self.eval_chunk_size < 0:
            problems.append(f"eval_chunk_size={self.eval_chunk_size} must be >= 0 (0: auto)")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | CardioformerConfig) -> CardioformerConfig:
        """Builds from an ``ml_collections.ConfigDict`` (or dict); unknown keys are an error."""
        return dataclass_from_config(cls, config, "model")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def num_granularities(self) -> int:
        return len(self.patch_lens)

    @property
    def has_inter_attention(self) -> bool:
        """As in the reference: none (no parameters) when off or with one granularity."""
        return not self.no_inter_attn and self.num_granularities > 1

    @property
    def patch_channels(self) -> int:
        """Channels one patch spans: all leads, or one in the ``single_channel`` ablation."""
        return 1 if self.single_channel else self.num_channels

    def num_patches(self, patch_len: int) -> int:
        """``floor(T / p) + 1`` patches after padding ``p`` copies of the end (docs/model.md)."""
        return self.seq_len // patch_len + 1

    def num_tokens(self, patch_len: int) -> int:
        """Tokens of a granularity: its patches, after the age/sex token in early fusion."""
        return self.num_patches(patch_len) + (self.tabular == "early")

    @property
    def head_features(self) -> int:
        features = self.d_model * sum(self.num_tokens(p) for p in self.patch_lens)
        features *= self.num_channels if self.single_channel else 1
        # Late fusion: the age/sex embedding joins the flattened tokens.
        return features + (self.d_model if self.tabular == "late" else 0)


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Where each granularity's tokens sit in the flat ``(B, S, D)`` tokens: grouped by patch
    length (in order of first appearance), group-major, then granularity-major."""

    group_patch_lens: tuple[int, ...]
    group_members: tuple[tuple[int, ...], ...]  # config-order granularity indices per group
    group_num_patches: tuple[int, ...]
    group_offsets: tuple[int, ...]
    num_tokens: int

    @classmethod
    def from_config(cls, config: CardioformerConfig) -> TokenLayout:
        members: dict[int, list[int]] = {}
        for index, p in enumerate(config.patch_lens):
            members.setdefault(p, []).append(index)
        patch_lens = tuple(members)
        num_patches = tuple(config.num_tokens(p) for p in patch_lens)
        offsets, offset = [], 0
        for p, n in zip(patch_lens, num_patches, strict=True):
            offsets.append(offset)
            offset += len(members[p]) * n
        return cls(patch_lens, tuple(tuple(m) for m in members.values()), num_patches,
                   tuple(offsets), offset)

    def granularity_slice(self, index: int) -> slice:
        """Flat-array token slice of granularity ``index`` (config order)."""
        for members, n, offset in zip(self.group_members, self.group_num_patches,
                                      self.group_offsets, strict=True):
            if index in members:
                start = offset + members.index(index) * n
                return slice(start, start + n)
        raise IndexError(f"granularity {index} out of range")

    @functools.cached_property
    def router_config_order(self) -> np.ndarray:
        """Permutation taking the routers in group-major order to config order."""
        group_major = [i for members in self.group_members for i in members]
        return np.argsort(np.asarray(group_major))

    @functools.cached_property
    def config_order(self) -> np.ndarray:
        """Permutation taking the flat group-major tokens to config order (for the head)."""
        num = sum(len(m) for m in self.group_members)
        return np.concatenate([np.arange(self.granularity_slice(i).start,
                                         self.granularity_slice(i).stop) for i in range(num)])


class EncoderLayer(nnx.Module):
    """One encoder layer (docs/model.md, Encoder layer) over the flat group-major tokens."""

    def __init__(self, config: CardioformerConfig, layout: TokenLayout, *, kernels: str,
                 rngs: nnx.Rngs):
        dtype, d_model = config.compute_dtype, config.d_model
        self.intra_attentions = nnx.List([
            GroupedAttention(len(members), d_model, config.n_heads, config.dropout,
                             dtype=dtype, kernels=kernels, rngs=rngs)
            for members in layout.group_members
        ])
        self.inter_attention = (
            GroupedAttention(1, d_model, config.n_heads, config.dropout, dtype=dtype,
                             kernels=kernels, rngs=rngs)
            if config.has_inter_attention else None)
        self.norm1 = LayerNorm(d_model, kernels=kernels, dtype=dtype, rngs=rngs)
        self.norm2 = LayerNorm(d_model, kernels=kernels, dtype=dtype, rngs=rngs)
        self.resblock1, self.resblock2, self.resblock3 = (
            ResidualBlock(d_model, config.d_ff, config.dropout, dtype=dtype, kernels=kernels,
                          rngs=rngs)
            for _ in range(3))
        self.layout = layout
        self.dropout_rate = config.dropout
        self.kernels = kernels

    def __call__(self, x: Array, key: Array | None) -> Array:
        """``(S, B, D)`` -> same: token-major keeps each group one ``(G, N, B, D)`` block."""
        keys = split_key(key, ("intra", "inter", "attention_output", "resblock1",
                               "resblock2", "resblock3"))
        _, batch, d_model = x.shape
        layout = self.layout
        num_groups = len(self.intra_attentions)
        intra_keys = ([None] * num_groups if keys["intra"] is None
                      else jax.random.split(keys["intra"], num_groups))

        # 1. Intra-granularity attention: each granularity's tokens attend to each other.
        attended = []  # per group: (G_group, N, B, D)
        for g, attention in enumerate(self.intra_attentions):
            n, start = layout.group_num_patches[g], layout.group_offsets[g]
            size = len(layout.group_members[g]) * n
            tokens = x[start:start + size].reshape(-1, n, batch, d_model)
            attended.append(attention(tokens, intra_keys[g]))

        # 2. Inter-granularity attention of the routers (last tokens) in config order; the
        #    outputs replace them by concatenation (a scatter's autodiff builds full masks).
        if self.inter_attention is not None:
            order = layout.router_config_order
            reorder = not np.array_equal(order, np.arange(len(order)))
            routers = jnp.concatenate([t[:, -1] for t in attended], axis=0)  # (R, B, D)
            routers = routers[order] if reorder else routers
            r = self.inter_attention(routers[None], keys["inter"])[0]
            r = r[np.argsort(order)] if reorder else r
            bounds = np.cumsum([len(m) for m in layout.group_members])[:-1]
            attended = [jnp.concatenate([t[:, :-1], part[:, None]], axis=1)
                        for t, part in zip(attended, jnp.split(r, bounds, axis=0), strict=True)]

        # 3. Residual connection and LayerNorm.
        attended = [t.reshape(-1, batch, d_model) for t in attended]
        a = jnp.concatenate(attended, axis=0) if len(attended) > 1 else attended[0]
        x = self.norm1(x + dropout(a, self.dropout_rate, keys["attention_output"],
                                   self.kernels))

        # 4. Three residual blocks, residual connection, LayerNorm; on (S, B, D) itself: a
        #    merged S*B axis would put the batch in its minor part, out of a sharding's reach.
        y = self.resblock1(x, keys["resblock1"])
        y = self.resblock2(y, keys["resblock2"])
        y = self.resblock3(y, keys["resblock3"])
        return self.norm2(x + y)


class Cardioformer(nnx.Module):
    """``(B, T, C)`` ECG windows -> ``(B, num_classes)`` logits; train mode (the default;
    ``model.eval()`` switches) draws from the ``dropout`` stream of `rngs`."""

    def __init__(self, config: Mapping[str, Any] | CardioformerConfig, *, rngs: nnx.Rngs,
                 deterministic: bool = False):
        config = CardioformerConfig.from_config(config)
        layout = TokenLayout.from_config(config)
        self.config = config
        self.layout = layout
        self.deterministic = deterministic
        self.kernels = resolve_kernels(config.kernels)
        d_model, channels = config.d_model, config.patch_channels

        # docs/model.md: Conv2d(1, D, kernel (C, p)), Kaiming-normal (fan-in, leaky-relu gain
        # sqrt(2)); stored per group as (G_group, p, C, D).
        def patch_kernel(p: int, count: int) -> nnx.Param:
            std = math.sqrt(2.0) / math.sqrt(channels * p)
            return nnx.Param(std * jax.random.normal(rngs.params(), (count, p, channels, d_model)))

        self.patch_kernels = nnx.List([
            patch_kernel(p, len(m)) for p, m in zip(layout.group_patch_lens,
                                                    layout.group_members, strict=True)
        ])
        self.granularity_embeddings = nnx.Param(
            jax.random.normal(rngs.params(), (config.num_granularities, d_model)))
        self.layers = _stacked_layers(config, layout, self.kernels, rngs)
        self.norm = LayerNorm(d_model, kernels=self.kernels, dtype=config.compute_dtype,
                              rngs=rngs)
        # Age and sex (`data.tabular`) -> d_model: a token (early) or head features (late).
        self.tabular_embedding = (
            nnx.Linear(TABULAR_INPUTS, d_model, rngs=rngs) if config.tabular != "none" else None)
        self.projection = nnx.Linear(
            config.head_features, config.num_classes,
            kernel_init=torch_linear_init(config.head_features),
            bias_init=torch_linear_init(config.head_features), rngs=rngs)
        self.rngs = rngs["dropout"].fork()

    def check_input(self, x: Array) -> None:
        """Static shape contract of the input (raises with a clear message)."""
        config = self.config
        chex.assert_rank(x, 3, custom_message="Cardioformer input must be (batch, time, leads)")
        if x.shape[1:] != (config.seq_len, config.num_channels):
            raise ValueError(
                f"Cardioformer input has shape {x.shape}; this model expects (batch, "
                f"{config.seq_len}, {config.num_channels}) = (batch, seq_len, num_channels)")

    def embed(self, x: Array, key: Array | None = None,
              tabular_token: Array | None = None) -> Array:
        """docs/model.md, "Embedding": ``(B, T, C)`` -> group-major tokens ``(B', S, D)``
        (``B' = B * C`` with ``single_channel``); ``tabular_token`` ``(B, D)``: early fusion."""
        config, layout = self.config, self.layout
        dtype = config.compute_dtype
        if config.single_channel:  # each lead becomes its own one-channel sample
            batch, steps, channels = x.shape
            x = jnp.transpose(x, (0, 2, 1)).reshape(batch * channels, steps, 1)
            if tabular_token is not None:
                tabular_token = jnp.repeat(tabular_token, channels, axis=0)
        x = x.astype(dtype)
        pe = sinusoidal_position_encoding(max(layout.group_num_patches), config.d_model)
        group_keys = [None] * len(layout.group_members)
        if key is not None:
            group_keys = list(jax.random.split(key, len(group_keys)))
        groups = []
        for g, p in enumerate(layout.group_patch_lens):
            n = config.num_patches(p)
            # 1. Replication pad by p copies of the last time step.
            padded = jnp.concatenate([x, jnp.repeat(x[:, -1:], p, axis=1)], axis=1)
            # 2. n = T // p + 1 patches across all leads, each mapped linearly to D.
            patches = padded[:, :n * p].reshape(x.shape[0], n, p, x.shape[2])
            kernel = gather_weights(self.patch_kernels[g][...]).astype(dtype)
            tokens = jnp.einsum("bnpc,gpcd->bgnd", patches, kernel)
            # 3. One augmentation per granularity (train mode).
            tokens = self._augment(tokens, group_keys[g])
            # 4. Granularity embedding and the sinusoidal table.
            members = np.asarray(layout.group_members[g])
            granularity = self.granularity_embeddings[members][None, :, None, :].astype(dtype)
            tokens = tokens + granularity + jnp.asarray(pe[:n], dtype)
            if tabular_token is not None:
                first = jnp.broadcast_to(tabular_token[:, None, None, :].astype(dtype),
                                         (x.shape[0], len(members), 1, config.d_model))
                tokens = jnp.concatenate([first + granularity, tokens], axis=2)
            groups.append(tokens.reshape(x.shape[0], -1, config.d_model))
        return jnp.concatenate(groups, axis=1) if len(groups) > 1 else groups[0]

    def _augment(self, tokens: Array, key: Array | None) -> Array:
        """One augmentation per granularity, drawn uniformly per call (docs/model.md)."""
        augmentations = self.config.augmentations
        if key is None or all(name == "none" for name, _ in augmentations):
            return tokens
        batch, groups, n, d_model = tokens.shape
        choice_key, noise_key = jax.random.split(key)
        choice = jax.random.randint(choice_key, (groups,), 0, len(augmentations))
        impl = random_impl(self.kernels)
        out = tokens
        for index, ((name, strength), k) in enumerate(
                zip(augmentations, jax.random.split(noise_key, len(augmentations)), strict=True)):
            if name == "jitter":
                noise = hash_random.normal(k, tokens.shape, tokens.dtype, impl)
                candidate = tokens + strength * noise
            elif name == "scale":
                noise = hash_random.normal(k, (batch, groups, n, 1), tokens.dtype, impl)
                factor = 1.0 + strength * noise
                candidate = tokens * factor
            elif name == "drop":
                candidate = dropout(tokens, strength, k, self.kernels)
            else:
                continue
            out = jnp.where((choice == index)[None, :, None, None], candidate, out)
        return out

    def encode(self, tokens: Array, key: Array | None = None) -> Array:
        """The ``e_layers`` encoder layers, scanned over the stacked weights (docs/model.md)."""
        graphdef, state = nnx.split(self.layers)
        layer_keys = None if key is None else jax.random.split(key, self.config.e_layers)

        def apply_layer(x, layer_inputs):
            layer_state, layer_key = layer_inputs
            # The batch stays split over the mesh at every layer boundary (partitioning.py).
            layer = nnx.merge(graphdef, gather_weights(layer_state))
            x = layer(constrain_batch(x, 1), layer_key)
            return constrain_batch(x, 1), None

        if self.config.remat:
            # Save only the LayerNorm statistics (named by the CPU kernel): a few floats per
            # token spare two reductions; saving the attention probabilities was slower.
            apply_layer = jax.checkpoint(
                apply_layer,
                policy=jax.checkpoint_policies.save_only_these_names("layer_norm_stats"))
        # The layers work on token-major (S, B, D) arrays (see EncoderLayer).
        x, _ = jax.lax.scan(apply_layer, jnp.swapaxes(tokens, 0, 1), (state, layer_keys),
                            unroll=self.config.scan_unroll)
        return jnp.swapaxes(x, 0, 1)

    def head(self, tokens: Array, key: Array | None = None,
             tabular_features: Array | None = None) -> Array:
        """docs/model.md, "Head"; late fusion adds ``tabular_features`` ``(B, D)``."""
        config = self.config
        tokens = jnp.take(tokens, self.layout.config_order, axis=1)
        features = dropout(gelu(self.norm(tokens)), config.dropout, key, self.kernels)
        token_features = config.head_features - (config.d_model if tabular_features is not None
                                                 else 0)
        features = features.reshape(-1, token_features)  # (B*C, S, D) -> (B, C*S*D) too
        if tabular_features is not None:
            features = jnp.concatenate(
                [features, tabular_features.astype(features.dtype)], axis=-1)
        logits = features.astype(jnp.float32) @ gather_weights(self.projection.kernel[...])
        return logits + self.projection.bias[...]

    def eval_chunk_rows(self, batch: int) -> int:
        """Rows per eval-mode chunk: the smallest divisor of `batch` not below
        ``eval_chunk_size`` (so chunks are equal); a symbolic batch is not chunked."""
        if not isinstance(batch, int):
            return batch
        wanted = self.config.eval_chunk_size or (8 if self.kernels == "cpu" else batch)
        return next(rows for rows in range(min(wanted, batch), batch + 1) if batch % rows == 0)

    def __call__(self, inputs: Array | Mapping[str, Array]) -> Array:
        """Logits ``(B, num_classes)`` of the `model_inputs`."""
        x, tabular = model_inputs(inputs)
        self.check_input(x)
        check_tabular(self.config.tabular, x, tabular)
        if self.deterministic:
            rows = self.eval_chunk_rows(x.shape[0])
            if rows < x.shape[0]:
                # Chunk i takes rows i, i+n, i+2n, ...: a (rows, n) split of the batch axis
                # keeps each device's rows on it when the batch is sharded.
                n = x.shape[0] // rows

                def split(a: Array) -> Array:
                    return jnp.swapaxes(a.reshape(rows, n, *a.shape[1:]), 0, 1)

                logits = jax.lax.map(lambda args: self._forward(*args),
                                     (split(x), None if tabular is None else split(tabular)))
                return jnp.swapaxes(logits, 0, 1).reshape(x.shape[0], -1)
        return self._forward(x, tabular)

    def _forward(self, x: Array, tabular: Array | None = None) -> Array:
        keys = split_key(None if self.deterministic else self.rngs(),
                         ("augment", "encoder", "head"))
        embedded = None
        if self.tabular_embedding is not None:
            embedded = self.tabular_embedding(tabular.astype(jnp.float32))
        tokens = self.embed(x, keys["augment"],
                            embedded if self.config.tabular == "early" else None)
        tokens = self.encode(tokens, keys["encoder"])
        return self.head(tokens, keys["head"],
                         gelu(embedded) if self.config.tabular == "late" else None)


def model_inputs(inputs: Array | Mapping[str, Array]) -> tuple[Array, Array | None]:
    """``(signal, tabular)`` of a signal ``(B, T, C)`` or a batch with ``"signal"`` and, for
    age/sex fusion, ``"tabular"`` ``(B, 4)`` (`data.tabular`)."""
    if isinstance(inputs, Mapping):
        return inputs["signal"], inputs.get("tabular")
    return inputs, None


def check_tabular(mode: str, x: Array, tabular: Array | None) -> None:
    """Fusion needs ``(B, 4)`` age/sex features; no fusion takes none (not ignored)."""
    if mode == "none":
        if tabular is not None:
            raise ValueError("this model has model.tabular='none' but was given age/sex "
                             "features")
        return
    if tabular is None:
        raise ValueError(f"this model fuses age and sex (model.tabular={mode!r}): give "
                         "the (batch, 4) features of cardioformer_jax.data.tabular")
    if tuple(tabular.shape) != (x.shape[0], TABULAR_INPUTS):
        raise ValueError(f"age/sex features have shape {tuple(tabular.shape)}, expected "
                         f"({x.shape[0]}, {TABULAR_INPUTS})")


def _stacked_layers(config: CardioformerConfig, layout: TokenLayout, kernels: str,
                    rngs: nnx.Rngs) -> EncoderLayer:
    """``e_layers`` layers stacked on a leading axis, created vectorised: a jitted init
    traces one layer's initialisers, not ``e_layers`` copies."""

    @nnx.split_rngs(splits=config.e_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(layer_rngs: nnx.Rngs) -> EncoderLayer:
        return EncoderLayer(config, layout, kernels=kernels, rngs=layer_rngs)

    return create(rngs)
