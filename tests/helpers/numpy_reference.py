"""The PyTorch reference Cardioformer in NumPy: its ``state_dict`` and its forward pass.

`make_state_dict` builds a random ``state_dict`` with the reference's tensor names and
shapes, written from docs/pytorch_checkpoints.md (not from ``torch_import``'s own tables).

`forward` is a plain NumPy forward pass of the reference, written from docs/model.md.

The forward pass reads the reference's own ``state_dict`` names and follows the reference's
structure, not the port's: a Python loop over granularities in config order, a convolution
written out as a matmul over explicit patches, one attention module per granularity, the
router (last) token replaced after the inter-granularity attention. Eval mode only (no
dropout, no augmentation). Everything runs in float64, so it serves as ground truth for the
float32 port.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import erf


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)``."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
               eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased, as torch.nn.LayerNorm
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``torch.nn.Linear``: weight ``(out, in)``."""
    return x @ weight.T + bias


def multi_head_attention(x: np.ndarray, sd: Mapping[str, np.ndarray], prefix: str,
                         n_heads: int) -> np.ndarray:
    """The reference's AttentionLayer + FullAttention over ``x: (B, L, D)``, no mask."""
    batch, length, d_model = x.shape
    head_dim = d_model // n_heads

    def project(name: str, value: np.ndarray) -> np.ndarray:
        return linear(value, sd[f"{prefix}.{name}_projection.weight"],
                      sd[f"{prefix}.{name}_projection.bias"])

    q = project("query", x).reshape(batch, length, n_heads, head_dim)
    k = project("key", x).reshape(batch, length, n_heads, head_dim)
    v = project("value", x).reshape(batch, length, n_heads, head_dim)
    scores = np.einsum("blhe,bshe->bhls", q, k) / math.sqrt(head_dim)
    out = np.einsum("bhls,bshd->blhd", softmax(scores), v).reshape(batch, length, d_model)
    return project("out", out)


@functools.cache
def positional_table(num_positions: int, d_model: int) -> np.ndarray:
    """Fixed table: ``pe[pos, 2k] = sin(pos / 10000^(2k/D))``, ``pe[pos, 2k+1] = cos(...)``."""
    pe = np.zeros((num_positions, d_model))
    for pos in range(num_positions):
        for k in range(0, d_model, 2):
            angle = pos / 10000.0 ** (k / d_model)
            pe[pos, k] = math.sin(angle)
            if k + 1 < d_model:
                pe[pos, k + 1] = math.cos(angle)
    return pe


def embed(x: np.ndarray, sd: Mapping[str, np.ndarray], patch_lens: Sequence[int],
          granularity: int) -> np.ndarray:
    """Embedding for one granularity: ``x (B, T, C)`` -> tokens ``(B, N, D)``."""
    p = patch_lens[granularity]
    weight = sd[f"enc_embedding.value_embeddings.{granularity}.tokenConv.weight"]  # (D,1,C,p)
    d_model = weight.shape[0]
    batch, steps, channels = x.shape
    padded = np.concatenate([x, np.repeat(x[:, -1:, :], p, axis=1)], axis=1)  # replication
    n = (steps + p - p) // p + 1  # Conv2d output length, stride p, no padding
    # Conv-as-matmul: patch n covers padded times [n p, (n + 1) p) of all channels.
    w = weight[:, 0].reshape(d_model, channels * p)  # (D, C*p), channel-major like (C, p)
    tokens = np.empty((batch, n, d_model))
    for i in range(n):
        patch = padded[:, i * p:(i + 1) * p, :].transpose(0, 2, 1).reshape(batch, -1)
        tokens[:, i] = patch @ w.T
    tokens += sd[f"enc_embedding.learnable_embeddings.{granularity}"][0]
    return tokens + positional_table(n, d_model)


def encoder_layer(xs: list[np.ndarray], sd: Mapping[str, np.ndarray], layer: int,
                  n_heads: int, no_inter_attn: bool) -> list[np.ndarray]:
    """Encoder layer (docs/model.md) on the per-granularity token list."""
    prefix = f"encoder.attn_layers.{layer}"
    attended = [multi_head_attention(x, sd, f"{prefix}.attention.intra_attentions.{g}", n_heads)
                for g, x in enumerate(xs)]
    if not no_inter_attn and len(xs) > 1:  # the reference's rule for building it at all
        routers = np.stack([a[:, -1] for a in attended], axis=1)  # (B, G, D)
        routers = multi_head_attention(routers, sd, f"{prefix}.attention.inter_attention",
                                       n_heads)
        for g, a in enumerate(attended):
            a[:, -1] = routers[:, g]
    out = []
    for x, a in zip(xs, attended, strict=True):
        x = layer_norm(x + a, sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"])
        y = x
        for r in (1, 2, 3):
            block = f"{prefix}.resblock{r}"
            h = gelu(linear(y, sd[f"{block}.conv1.weight"][:, :, 0], sd[f"{block}.conv1.bias"]))
            h = linear(h, sd[f"{block}.conv2.weight"][:, :, 0], sd[f"{block}.conv2.bias"])
            y = layer_norm(y + h, sd[f"{block}.norm.weight"], sd[f"{block}.norm.bias"])
        out.append(layer_norm(x + y, sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"]))
    return out


def forward(x: np.ndarray, sd: Mapping[str, np.ndarray], *, patch_lens: Sequence[int],
            n_heads: int, e_layers: int, no_inter_attn: bool = False,
            single_channel: bool = False) -> np.ndarray:
    """Eval-mode logits ``(B, num_classes)`` of the reference for ``x: (B, T, C)``."""
    sd = {name: np.asarray(value, np.float64) for name, value in sd.items()}
    x = np.asarray(x, np.float64)
    batch, steps, channels = x.shape
    if single_channel:  # each lead is its own one-channel sample: batch B*C, b-major
        x = x.transpose(0, 2, 1).reshape(batch * channels, steps, 1)
    xs = [embed(x, sd, patch_lens, g) for g in range(len(patch_lens))]
    for layer in range(e_layers):
        xs = encoder_layer(xs, sd, layer, n_heads, no_inter_attn)
    tokens = np.concatenate(xs, axis=1)  # config order
    features = gelu(layer_norm(tokens, sd["encoder.norm.weight"], sd["encoder.norm.bias"]))
    features = features.reshape(batch, -1)  # (B*C, S, D) -> (B, C*S*D) when single_channel
    return linear(features, sd["projection.weight"], sd["projection.bias"])


# --- the reference's state_dict -------------------------------------------------------------------

# The fixed sinusoidal buffer's name (docs/pytorch_checkpoints.md).
PE_NAME = "enc_embedding.position_embedding.pe"


def torch_style_pe(max_len: int, d_model: int) -> np.ndarray:
    """The reference's PositionalEmbedding buffer, computed as it does in float32."""
    position = np.arange(max_len, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float32)
                      * np.float32(-(math.log(10000.0) / d_model)))
    pe = np.zeros((max_len, d_model), np.float32)
    pe[:, 0::2] = np.sin(position * div_term)
    pe[:, 1::2] = np.cos(position * div_term)
    return pe[None]


def make_state_dict(config, seed: int = 0) -> dict[str, np.ndarray]:
    """A random reference state_dict with the reference's names and shapes, for `config`
    (a CardioformerConfig), written from docs/pytorch_checkpoints.md.

    Scales follow the reference's initialisers, and LayerNorm weights and biases are
    perturbed away from 1 and 0 so that a swapped or dropped tensor shows in the output.
    """
    rng = np.random.default_rng(seed)
    d, ff = config.d_model, config.d_ff
    channels = 1 if config.single_channel else config.num_channels

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    def norm(name):
        sd[f"{name}.weight"] = (1.0 + 0.2 * rng.standard_normal(d)).astype(np.float32)
        sd[f"{name}.bias"] = (0.2 * rng.standard_normal(d)).astype(np.float32)

    def attention(prefix):
        for proj in ("query", "key", "value", "out"):
            sd[f"{prefix}.{proj}_projection.weight"] = uniform((d, d), d)
            sd[f"{prefix}.{proj}_projection.bias"] = uniform((d,), d)

    sd: dict[str, np.ndarray] = {}
    for g, p in enumerate(config.patch_lens):
        sd[f"enc_embedding.value_embeddings.{g}.tokenConv.weight"] = (
            math.sqrt(2.0 / (channels * p))
            * rng.standard_normal((d, 1, channels, p))).astype(np.float32)
    sd[PE_NAME] = torch_style_pe(5000, d)
    for g in range(len(config.patch_lens)):
        sd[f"enc_embedding.learnable_embeddings.{g}"] = rng.standard_normal((1, d)).astype(
            np.float32)
    for layer in range(config.e_layers):
        prefix = f"encoder.attn_layers.{layer}"
        for g in range(len(config.patch_lens)):
            attention(f"{prefix}.attention.intra_attentions.{g}")
        if not config.no_inter_attn and len(config.patch_lens) > 1:  # the reference's rule
            attention(f"{prefix}.attention.inter_attention")
        for r in (1, 2, 3):
            sd[f"{prefix}.resblock{r}.conv1.weight"] = uniform((ff, d, 1), d)
            sd[f"{prefix}.resblock{r}.conv1.bias"] = uniform((ff,), d)
            sd[f"{prefix}.resblock{r}.conv2.weight"] = uniform((d, ff, 1), ff)
            sd[f"{prefix}.resblock{r}.conv2.bias"] = uniform((d,), ff)
            norm(f"{prefix}.resblock{r}.norm")
        norm(f"{prefix}.norm1")
        norm(f"{prefix}.norm2")
    norm("encoder.norm")
    tokens = sum(config.seq_len // p + 1 for p in config.patch_lens)
    features = d * tokens * (config.num_channels if config.single_channel else 1)
    sd["projection.weight"] = uniform((config.num_classes, features), features)
    sd["projection.bias"] = uniform((config.num_classes,), features)
    return sd
