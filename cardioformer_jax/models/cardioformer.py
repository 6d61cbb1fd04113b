"""Cardioformer in Flax NNX (described in docs/model.md).

Layout choices that make the model fast to compile and to run:

* Granularities that share a patch length see identical patches, so they form one *group*:
  one patch extraction, one stacked embedding matmul and one batched attention (weights with
  a leading granularity axis) per group instead of a Python loop over granularities.
* Between layers the tokens of all granularities live in one array ``(B, S, D)`` ordered
  group-major (``TokenLayout``), so the parts shared by all granularities (LayerNorms,
  residual MLP blocks) are single large matmuls. Inside the layer scan the array is
  token-major ``(S, B, D)``: each group is then a contiguous ``(G, N, B, D)`` block whose
  projections are plain batched matmuls.
* The ``e_layers`` encoder layers are stacked on a leading axis and applied with
  ``jax.lax.scan``: one layer is traced and compiled, not six.

Parameters are float32; ``dtype='bfloat16'`` runs the matmuls in bfloat16 while softmax,
LayerNorm statistics and the logits stay float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from cardioformer_jax.ops import hash_random as hash_random

Array = jax.Array

# docs/model.md (Embedding, step 3): implemented augmentations, reference default strengths.
_AUGMENTATION_DEFAULTS = {"none": 0.0, "jitter": 0.1, "scale": 0.1, "drop": 0.1}
_REFERENCE_ONLY_AUGMENTATIONS = ("flip", "shuffle", "mask", "frequency")


def parse_augmentations(spec: str | Sequence[str]) -> tuple[tuple[str, float], ...]:
    """Parses the reference's augmentation list, e.g. ``"jitter0.2,scale0.2,drop0.5"``.

    Returns ``(name, strength)`` pairs; a missing strength takes the reference's default.
    """
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


def _parse_patch_lens(value: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [int(v) for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
    elif isinstance(value, int):
        value = [value]
    return tuple(int(v) for v in value)


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
class ModelConfig:
    """Validated, hashable model hyper-parameters (the ``model`` part of a config)."""

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
    rng_impl: str = "hash"  # dropout/augmentation randomness: see hash_random
    scan_unroll: int = 1  # layers per scan iteration: 1 compiles fastest, e_layers runs fastest
    # Recompute each layer in the backward pass instead of saving its activations (only the
    # LayerNorm statistics are kept): on CPU this is faster than storing them from inside the
    # scan (measured 12.1 -> 4.4-7.5 op-seconds per batch-32 step), and it cuts activation
    # memory by about e_layers times.
    remat: bool = True
    # Independent sub-batches per call (0 = auto: 2 on a CPU backend with >= 2 cores, else 1).
    # The chains share one scan over the layers, whose body holds every chain's layer: XLA:CPU
    # then runs the chains' ops side by side (separate loops would run one after the other).
    # It splits only some ops (large dots) over its threads, so independent chains keep a
    # small machine's cores busier (2 cores: ~3% more samples/s than one chain, for a
    # compile of ~26 s instead of ~18 s; parallel_chains=1 trades the one for the other).
    # Results do not depend on it (eval mode: identical logits; train mode: other masks).
    parallel_chains: int = 0

    def __post_init__(self):
        object.__setattr__(self, "patch_lens", _parse_patch_lens(self.patch_lens))
        if self.augmentations and isinstance(self.augmentations[0], tuple):
            augmentations = self.augmentations
        else:
            augmentations = parse_augmentations(self.augmentations)
        object.__setattr__(self, "augmentations", tuple(augmentations))
        problems = []
        for name in ("seq_len", "num_channels", "num_classes", "d_model", "d_ff", "n_heads",
                     "e_layers"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.num_classes < 2:
            problems.append(f"num_classes={self.num_classes} must be >= 2")
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must lie in [0, 1)")
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
        if self.parallel_chains < 0:
            problems.append(f"parallel_chains={self.parallel_chains} must be >= 0 (0 = auto)")
        if self.rng_impl not in hash_random.IMPLEMENTATIONS:
            problems.append(f"rng_impl={self.rng_impl!r} must be one of "
                            f"{hash_random.IMPLEMENTATIONS}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ModelConfig) -> ModelConfig:
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
        """The reference builds no inter-granularity attention (no parameters at all) when
        it is switched off or there is a single granularity to route between."""
        return not self.no_inter_attn and self.num_granularities > 1

    @property
    def patch_channels(self) -> int:
        """Channels one patch spans: all leads, or one in the ``single_channel`` ablation."""
        return 1 if self.single_channel else self.num_channels

    def num_patches(self, patch_len: int) -> int:
        """``floor(T / p) + 1`` patches after padding ``p`` copies of the end (docs/model.md)."""
        return self.seq_len // patch_len + 1

    def chains_for_batch(self, batch: int) -> int:
        """Sub-batches a call of ``batch`` samples is split into (see ``parallel_chains``).

        The largest count up to the requested (or automatic) one that divides the batch; one
        for a symbolic batch size (an exported model serves any batch).
        """
        if not isinstance(batch, int):  # symbolic (jax.export) batch: cannot be split
            return 1
        wanted = self.parallel_chains
        if wanted == 0:
            wanted = 2 if jax.default_backend() == "cpu" and (os.cpu_count() or 1) >= 2 else 1
        return max(c for c in range(1, min(wanted, batch) + 1) if batch % c == 0)

    @property
    def head_features(self) -> int:
        features = self.d_model * sum(self.num_patches(p) for p in self.patch_lens)
        return features * (self.num_channels if self.single_channel else 1)


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Where each granularity's tokens sit in the model's flat ``(B, S, D)`` token array.

    Granularities are grouped by patch length (groups in order of first appearance in
    ``patch_lens``); inside the flat array tokens are ordered group-major, and inside a group
    granularity-major in config order.
    """

    group_patch_lens: tuple[int, ...]
    group_members: tuple[tuple[int, ...], ...]  # config-order granularity indices per group
    group_num_patches: tuple[int, ...]
    group_offsets: tuple[int, ...]
    num_tokens: int

    @classmethod
    def from_config(cls, config: ModelConfig) -> TokenLayout:
        members: dict[int, list[int]] = {}
        for index, p in enumerate(config.patch_lens):
            members.setdefault(p, []).append(index)
        patch_lens = tuple(members)
        num_patches = tuple(config.num_patches(p) for p in patch_lens)
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
    def router_indices(self) -> np.ndarray:
        """Flat index of each granularity's last (router) token, in config order."""
        num = sum(len(m) for m in self.group_members)
        return np.array([self.granularity_slice(i).stop - 1 for i in range(num)], np.int32)

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


def sinusoidal_position_encoding(num_positions: int, d_model: int) -> np.ndarray:
    """The reference's fixed table: ``pe[pos, 2k] = sin(pos / 10000^(2k/D))``, cos at 2k+1."""
    position = np.arange(num_positions, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * -(math.log(10000.0) / d_model))
    pe = np.zeros((num_positions, d_model), np.float32)
    pe[:, 0::2] = np.sin(position * div_term)
    pe[:, 1::2] = np.cos(position * div_term)
    return pe


def torch_linear_init(fan_in: int) -> nnx.Initializer:
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dropout(x: Array, rate: float, key: Array | None, rng_impl: str = "hash") -> Array:
    """Inverted dropout; identity when ``key`` is None (eval mode) or the rate is 0."""
    return _dropout_scale(x, _dropout_keep(key, rate, rng_impl, x.shape), rate)


def _dropout_keep(key: Array | None, rate: float, rng_impl: str, shape) -> Array | None:
    """``dropout``'s keep mask (None: keep everything)."""
    if key is None or rate == 0.0:
        return None
    return hash_random.bernoulli(key, 1.0 - rate, shape, rng_impl)


def _dropout_scale(x: Array, keep: Array | None, rate: float) -> Array:
    """``dropout`` with a given keep mask: kept elements scaled by 1 / (1 - rate)."""
    if keep is None:
        return x
    # A product with the mask rather than a select against zeros: the zeros would be a
    # full-size loop-invariant array, which scan autodiff hoists out of the layer loop and
    # every use then reads from memory. (Same values for finite inputs.) The scale stays
    # float32: rounded to bfloat16, 1/0.9 would become 1.109375, a systematic 0.16% shrink.
    scale = keep.astype(jnp.float32) * jnp.float32(1.0 / (1.0 - rate))
    return (x * scale).astype(x.dtype)


def gelu(x: Array) -> Array:
    """Exact GELU ``x/2 (1 + erf(x/sqrt 2))``: PyTorch's default and its formula.

    Not ``jax.nn.gelu``: its tanh form is an approximation, and its exact form goes through
    ``erfc``, whose branches cost about 3x the erf form's time on CPU.
    """
    half = jnp.asarray(0.5, x.dtype)
    return half * x * (1 + jax.lax.erf(x * jnp.asarray(math.sqrt(0.5), x.dtype)))


def _attention_probs(q: Array, k: Array) -> Array:
    """Softmax attention probabilities (float32) of ``(..., N, d)`` queries and keys."""
    scores = jnp.einsum("...qd,...kd->...qk", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(scores / math.sqrt(q.shape[-1]), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def attention_core(q: Array, k: Array, v: Array, key: Array | None, rate: float,
                   rng_impl: str) -> Array:
    """``Dropout(softmax(q k^T / sqrt(d))) v`` over ``(..., N, d)`` heads (docs/model.md).

    Same values as the plain formula; the hand-written backward pass orders its dots so that
    the large ``(N, N)`` probability arrays are never transposed (XLA:CPU copies an operand
    whose contracting dimension is not where its dot kernel wants it), and reuses the saved
    probabilities. ``key`` None or ``rate`` 0 means no dropout.
    """
    return _attention_core_fwd(q, k, v, key, rate, rng_impl)[0]


def _attention_core_fwd(q, k, v, key, rate, rng_impl):
    probs = _attention_probs(q, k)
    keep = _dropout_keep(key, rate, rng_impl, probs.shape)
    dropped = _dropout_scale(probs, keep, rate).astype(v.dtype)
    out = jnp.einsum("...qk,...kd->...qd", dropped, v)
    return out, (q, k, v, key, probs, out)


def _attention_core_bwd(rate, rng_impl, residuals, d_out):
    q, k, v, key, probs, out = residuals
    keep = _dropout_keep(key, rate, rng_impl, probs.shape)
    d_dropped = jnp.einsum("...qd,...kd->...qk", d_out, v, preferred_element_type=jnp.float32)
    d_probs = _dropout_scale(d_dropped, keep, rate)
    # Softmax backward; the 1/sqrt(d) of the scores is applied to the smaller (N, d) results.
    # Its row sums sum_k d_probs * probs equal sum_d d_out * out (expand d_probs and out), a
    # reduction over (N, d) instead of over the (N, N) probabilities.
    row_sums = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1,
                       keepdims=True)
    d_scores = probs * (d_probs - row_sums)
    d_scores = d_scores.astype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    d_q = jnp.einsum("...qk,...kd->...qd", d_scores, k) * scale
    # Gradients contracting over queries are computed transposed ((d, N) = (d, N_q) @ (N_q,
    # N)): the (N, N) operand then enters its dot as-is.
    d_k = jnp.swapaxes(jnp.einsum("...qd,...qk->...dk", q, d_scores), -1, -2) * scale
    dropped = _dropout_scale(probs, keep, rate).astype(v.dtype)
    d_v = jnp.swapaxes(jnp.einsum("...qd,...qk->...dk", d_out, dropped), -1, -2)
    d_key = None if key is None else np.zeros(key.shape, jax.dtypes.float0)
    return d_q, d_k, d_v, d_key


attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)


class GroupedAttention(nnx.Module):
    """``G`` independent multi-head self-attentions evaluated together.

    Weights carry a leading granularity axis: ``kernel`` is ``(G, D, D)`` for each of the
    query, key, value and output projections (``x @ kernel + bias``, i.e. PyTorch's weight
    transposed). ``G = 1`` is an ordinary multi-head attention.
    """

    def __init__(self, num_groups: int, d_model: int, n_heads: int, dropout_rate: float, *,
                 dtype: jnp.dtype, rng_impl: str, rngs: nnx.Rngs):
        init = torch_linear_init(d_model)
        shape = (num_groups, d_model, d_model)
        for name in ("query", "key", "value", "out"):
            setattr(self, f"{name}_kernel", nnx.Param(init(rngs.params(), shape)))
            setattr(self, f"{name}_bias", nnx.Param(init(rngs.params(), (num_groups, d_model))))
        self.n_heads = n_heads
        self.dropout_rate = dropout_rate
        self.dtype = dtype
        self.rng_impl = rng_impl

    def __call__(self, x: Array, key: Array | None) -> Array:
        """``x``: ``(G, N, B, D)`` -> same shape; ``key`` drives attention dropout.

        Group-leading, batch-inner tokens make each projection one batched matmul over
        contiguous ``(N*B, D)`` rows (XLA:CPU transposes a dot operand whose batch axis does
        not lead).
        """
        groups, tokens, batch, d_model = x.shape
        head_dim = d_model // self.n_heads
        # One fused projection for Q, K and V.
        qkv_kernel = jnp.concatenate(
            [self.query_kernel[...], self.key_kernel[...], self.value_kernel[...]], axis=-1)
        qkv_bias = jnp.concatenate(
            [self.query_bias[...], self.key_bias[...], self.value_bias[...]], axis=-1)
        qkv = jnp.einsum("gmd,gde->gme", x.reshape(groups, tokens * batch, d_model),
                         qkv_kernel.astype(self.dtype))
        qkv = qkv + qkv_bias[:, None, :].astype(self.dtype)
        qkv = qkv.reshape(groups, tokens, batch, 3, self.n_heads, head_dim)
        # (G, N, B, 3, H, d) -> three (G, B, H, N, d) arrays, heads as a batch dimension.
        q, k, v = jnp.transpose(qkv, (3, 0, 2, 4, 1, 5))
        out = attention_core(q, k, v, key, self.dropout_rate, self.rng_impl)
        out = jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(groups, tokens * batch, d_model)
        out = jnp.einsum("gmd,gde->gme", out, self.out_kernel[...].astype(self.dtype))
        out = out + self.out_bias[:, None, :].astype(self.dtype)
        return out.reshape(groups, tokens, batch, d_model)


class ResidualBlock(nnx.Module):
    """``LayerNorm(z + Dropout(W2 Dropout(GELU(W1 z))))`` (1x1 convolutions in the reference)."""

    def __init__(self, d_model: int, d_ff: int, dropout_rate: float, *, dtype: jnp.dtype,
                 rng_impl: str, rngs: nnx.Rngs):
        self.conv1 = nnx.Linear(d_model, d_ff, kernel_init=torch_linear_init(d_model),
                                bias_init=torch_linear_init(d_model), dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Linear(d_ff, d_model, kernel_init=torch_linear_init(d_ff),
                                bias_init=torch_linear_init(d_ff), dtype=dtype, rngs=rngs)
        self.norm = _layer_norm(d_model, dtype, rngs)
        self.dropout_rate = dropout_rate
        self.rng_impl = rng_impl

    def __call__(self, z: Array, key: Array | None) -> Array:
        keys = (None, None) if key is None else tuple(jax.random.split(key))
        y = dropout(gelu(self.conv1(z)), self.dropout_rate, keys[0], self.rng_impl)
        y = dropout(self.conv2(y), self.dropout_rate, keys[1], self.rng_impl)
        return self.norm(z + y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    """LayerNorm over the last axis: ``nnx.LayerNorm``'s values, in ``x``'s dtype.

    ``scale`` and ``bias`` keep their own (parameter) dtype, so in a bfloat16 model their
    gradients are summed and returned in float32, not rounded to bfloat16.

    Two-pass variance as PyTorch computes it (round-off agreement with the reference). The
    hand-written backward pass is the textbook two-reduction form over the saved statistics;
    autodiff of the two-pass forward makes XLA:CPU do several more passes over the tokens.
    """
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    stats = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = stats.mean(-1, keepdims=True)
    centered = stats - mean
    rstd = jax.lax.rsqrt(jax.lax.square(centered).mean(-1, keepdims=True) + epsilon)
    mean, rstd = (checkpoint_name(a, "layer_norm_stats") for a in (mean, rstd))
    y = ((x - mean) * (rstd * scale) + bias).astype(x.dtype)
    return y, (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, d_y):
    del epsilon
    x, mean, rstd, scale = residuals
    normalized = (x - mean) * rstd
    d_y = d_y.astype(normalized.dtype)
    leading = tuple(range(x.ndim - 1))
    d_scale = jnp.sum(d_y * normalized, axis=leading)
    d_bias = jnp.sum(d_y, axis=leading)
    g = d_y * scale
    d_x = rstd * (g - g.mean(-1, keepdims=True)
                  - normalized * (g * normalized).mean(-1, keepdims=True))
    return d_x.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.LayerNorm):
    """``nnx.LayerNorm`` (same parameters and values) computed by ``layer_norm``."""

    def __call__(self, x: Array) -> Array:
        dtype = self.dtype or x.dtype
        return layer_norm(x.astype(dtype), self.scale[...], self.bias[...], self.epsilon)


def _layer_norm(d_model: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> LayerNorm:
    return LayerNorm(d_model, epsilon=1e-5, dtype=dtype, use_fast_variance=False, rngs=rngs)


class EncoderLayer(nnx.Module):
    """One encoder layer (docs/model.md, Encoder layer) over the flat group-major tokens."""

    def __init__(self, config: ModelConfig, layout: TokenLayout, *, rngs: nnx.Rngs):
        dtype, rng_impl = config.compute_dtype, config.rng_impl
        self.intra_attentions = nnx.List([
            GroupedAttention(len(members), config.d_model, config.n_heads, config.dropout,
                             dtype=dtype, rng_impl=rng_impl, rngs=rngs)
            for members in layout.group_members
        ])
        self.inter_attention = (
            GroupedAttention(1, config.d_model, config.n_heads, config.dropout, dtype=dtype,
                             rng_impl=rng_impl, rngs=rngs)
            if config.has_inter_attention else None)
        self.norm1 = _layer_norm(config.d_model, dtype, rngs)
        self.norm2 = _layer_norm(config.d_model, dtype, rngs)
        self.resblock1, self.resblock2, self.resblock3 = (
            ResidualBlock(config.d_model, config.d_ff, config.dropout, dtype=dtype,
                          rng_impl=rng_impl, rngs=rngs)
            for _ in range(3))
        self.layout = layout
        self.dropout_rate = config.dropout
        self.rng_impl = rng_impl

    def __call__(self, x: Array, key: Array | None) -> Array:
        """``x``: ``(S, B, D)`` token-major flat tokens -> same shape.

        Token-major order keeps each group's tokens one contiguous ``(G, N, B, D)`` block.
        """
        keys = [None] * (len(self.intra_attentions) + 5)
        if key is not None:
            keys = list(jax.random.split(key, len(keys)))
        _, batch, d_model = x.shape
        layout = self.layout
        attended = []  # per group: (G_group, N, B, D)
        for g, attention in enumerate(self.intra_attentions):
            n, start = layout.group_num_patches[g], layout.group_offsets[g]
            size = len(layout.group_members[g]) * n
            tokens = x[start:start + size].reshape(-1, n, batch, d_model)
            attended.append(attention(tokens, keys[g]))
        if self.inter_attention is not None:
            # The routers (last tokens) attend to each other in config order; their outputs
            # replace them by concatenation (a scatter's autodiff builds full-size masks).
            order = layout.router_config_order
            reorder = not np.array_equal(order, np.arange(len(order)))
            routers = jnp.concatenate([t[:, -1] for t in attended], axis=0)  # (R, B, D)
            routers = routers[order] if reorder else routers
            r = self.inter_attention(routers[None], keys[-5])[0]
            r = r[np.argsort(order)] if reorder else r
            bounds = np.cumsum([len(m) for m in layout.group_members])[:-1]
            attended = [jnp.concatenate([t[:, :-1], part[:, None]], axis=1)
                        for t, part in zip(attended, jnp.split(r, bounds, axis=0), strict=True)]
        attended = [t.reshape(-1, batch, d_model) for t in attended]
        a = jnp.concatenate(attended, axis=0) if len(attended) > 1 else attended[0]
        x = self.norm1(x + dropout(a, self.dropout_rate, keys[-4], self.rng_impl))
        # The residual blocks see a 2-D (tokens, D) array: their weight gradients are then
        # plain (M, K)^T (M, N) dots that XLA:CPU runs without transposed copies of the
        # activations (from a 3-D array it transposes them first, measured ~2x slower).
        x = x.reshape(-1, d_model)
        y = self.resblock1(x, keys[-3])
        y = self.resblock2(y, keys[-2])
        y = self.resblock3(y, keys[-1])
        return self.norm2(x + y).reshape(-1, batch, d_model)


class Cardioformer(nnx.Module):
    """Cardioformer classifier: ``(B, T, C)`` ECG windows -> ``(B, num_classes)`` logits.

    Train mode (dropout and the per-granularity augmentations) is on by default as for other
    NNX modules; ``model.eval()`` / ``model.train()`` switch it. Randomness comes from the
    ``dropout`` stream of the ``rngs`` given at construction.
    """

    def __init__(self, config: Mapping[str, Any] | ModelConfig, *, rngs: nnx.Rngs,
                 deterministic: bool = False):
        config = ModelConfig.from_config(config)
        layout = TokenLayout.from_config(config)
        self.config = config
        self.layout = layout
        self.deterministic = deterministic
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
        self.layers = _stacked_layers(config, layout, rngs)
        self.norm = _layer_norm(d_model, config.compute_dtype, rngs)
        self.projection = nnx.Linear(
            config.head_features, config.num_classes,
            kernel_init=torch_linear_init(config.head_features),
            bias_init=torch_linear_init(config.head_features), rngs=rngs)
        self.rngs = rngs["dropout"].fork()

    # -- stages -------------------------------------------------------------------------------

    def check_input(self, x: Array) -> None:
        """Static shape contract of the input (raises with a clear message)."""
        config = self.config
        chex.assert_rank(x, 3, custom_message="Cardioformer input must be (batch, time, leads)")
        if x.shape[1:] != (config.seq_len, config.num_channels):
            raise ValueError(
                f"Cardioformer input has shape {x.shape}; this model expects (batch, "
                f"{config.seq_len}, {config.num_channels}) = (batch, seq_len, num_channels)")

    def embed(self, x: Array, key: Array | None = None) -> Array:
        """docs/model.md (Embedding): ``(B, T, C)`` -> flat group-major tokens ``(B', S, D)``.

        ``B' = B`` or ``B * C`` in the ``single_channel`` ablation. ``key`` (train mode)
        drives the augmentations.
        """
        config, layout = self.config, self.layout
        dtype = config.compute_dtype
        if config.single_channel:  # each lead becomes its own one-channel sample
            batch, steps, channels = x.shape
            x = jnp.transpose(x, (0, 2, 1)).reshape(batch * channels, steps, 1)
        x = x.astype(dtype)
        pe = sinusoidal_position_encoding(max(layout.group_num_patches), config.d_model)
        group_keys = [None] * len(layout.group_members)
        if key is not None:
            group_keys = list(jax.random.split(key, len(group_keys)))
        groups = []
        for g, (p, n) in enumerate(zip(layout.group_patch_lens, layout.group_num_patches,
                                       strict=True)):
            padded = jnp.concatenate([x, jnp.repeat(x[:, -1:], p, axis=1)], axis=1)
            patches = padded[:, :n * p].reshape(x.shape[0], n, p, x.shape[2])
            kernel = self.patch_kernels[g][...].astype(dtype)
            tokens = jnp.einsum("bnpc,gpcd->bgnd", patches, kernel)
            tokens = self._augment(tokens, group_keys[g])
            members = np.asarray(layout.group_members[g])
            tokens = tokens + self.granularity_embeddings[members][None, :, None, :].astype(dtype)
            tokens = tokens + jnp.asarray(pe[:n], dtype)
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
        impl = self.config.rng_impl
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
                candidate = dropout(tokens, strength, k, impl)
            else:
                continue
            out = jnp.where((choice == index)[None, :, None, None], candidate, out)
        return out

    def encode(self, tokens: Array, key: Array | None = None) -> Array:
        """The ``e_layers`` encoder layers, scanned over the stacked weights (docs/model.md)."""
        return self.encode_chains([tokens], [key])[0]

    def encode_chains(self, chains: Sequence[Array],
                      keys: Sequence[Array | None]) -> list[Array]:
        """``encode`` for independent token arrays (sub-batches) in one scan over the layers.

        One loop whose body holds every chain's layer lets XLA:CPU run the chains' ops side
        by side; separate loops (one per chain) run one after the other.
        """
        graphdef, state = nnx.split(self.layers)
        layers = self.config.e_layers
        layer_keys = [None if k is None else jax.random.split(k, layers) for k in keys]

        def apply_layer(carry, layer_inputs):
            layer_state, chain_keys = layer_inputs
            layer = nnx.merge(graphdef, layer_state)
            return tuple(layer(x, k) for x, k in zip(carry, chain_keys, strict=True)), None

        if self.config.remat:
            # Recompute everything except the LayerNorm statistics: saving those few floats
            # per token spares the recomputation two reductions per LayerNorm (measured +7%
            # samples/s on CPU). Saving the attention probabilities as well was slower.
            apply_layer = jax.checkpoint(
                apply_layer,
                policy=jax.checkpoint_policies.save_only_these_names("layer_norm_stats"))
        # The layers work on token-major (S, B, D) arrays (see EncoderLayer).
        chains = tuple(jnp.swapaxes(tokens, 0, 1) for tokens in chains)
        tokens, _ = jax.lax.scan(apply_layer, chains, (state, tuple(layer_keys)),
                                 unroll=self.config.scan_unroll)
        return [jnp.swapaxes(t, 0, 1) for t in tokens]

    def head(self, tokens: Array, key: Array | None = None) -> Array:
        """Head (docs/model.md): LayerNorm, GELU, dropout, flatten (config order), classifier."""
        config = self.config
        tokens = jnp.take(tokens, self.layout.config_order, axis=1)
        features = dropout(gelu(self.norm(tokens)), config.dropout, key, config.rng_impl)
        features = features.reshape(-1, config.head_features)  # (B*C, S, D) -> (B, C*S*D) too
        logits = features.astype(jnp.float32) @ self.projection.kernel[...]
        return logits + self.projection.bias[...]

    def __call__(self, x: Array) -> Array:
        self.check_input(x)
        batch = x.shape[0]
        chains = self.config.chains_for_batch(batch)
        keys = [None] * 3 * chains
        if not self.deterministic:
            keys = list(jax.random.split(self.rngs(), 3 * chains))
        # Chain i takes samples i, i + chains, ...: strided sub-batches keep a batch-sharded
        # input's samples on their own device, and the stack below restores the order.
        parts = [x] if chains == 1 else list(
            jnp.moveaxis(x.reshape(batch // chains, chains, *x.shape[1:]), 1, 0))
        tokens = [self.embed(part, keys[3 * i]) for i, part in enumerate(parts)]
        tokens = self.encode_chains(tokens, keys[1::3])
        logits = [self.head(t, keys[3 * i + 2]) for i, t in enumerate(tokens)]
        if chains == 1:
            return logits[0]
        return jnp.stack(logits, axis=1).reshape(batch, -1)


def _stacked_layers(config: ModelConfig, layout: TokenLayout, rngs: nnx.Rngs) -> EncoderLayer:
    """``e_layers`` independently initialised layers as one module with a leading layer axis.

    Vectorised creation traces one layer's initialisers instead of ``e_layers`` copies,
    which keeps a jitted initialisation small and quick to compile.
    """

    @nnx.split_rngs(splits=config.e_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(layer_rngs: nnx.Rngs) -> EncoderLayer:
        return EncoderLayer(config, layout, rngs=layer_rngs)

    return create(rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
