"""The reference model re-created in PyTorch (``[torch]`` extra), for the import and timings."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from cardioformer_jax import benchmarking, models
from cardioformer_jax.interop.torch_import import _import_torch
from cardioformer_jax.models.cardioformer import CardioformerConfig


def build_model(config: CardioformerConfig | Mapping[str, Any], seed: int = 0):
    """A ``torch.nn.Module`` of the reference's structure for ``config`` (train mode)."""
    torch = _import_torch()
    nn, functional = torch.nn, torch.nn.functional
    config = CardioformerConfig.from_config(config)
    if config.single_channel:
        raise ValueError("torch_reference does not reproduce the single_channel ablation")
    channels, d_model, heads = config.num_channels, config.d_model, config.n_heads
    rate = config.dropout

    class PositionalEmbedding(nn.Module):
        def __init__(self, max_len: int = 5000):
            super().__init__()
            position = torch.arange(max_len, dtype=torch.float32)[:, None]
            div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                                 * -(math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, d_model)
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            self.register_buffer("pe", pe[None])

        def forward(self, x):
            return self.pe[:, :x.size(1)]

    class TokenEmbedding(nn.Module):
        def __init__(self, patch_len: int):
            super().__init__()
            self.tokenConv = nn.Conv2d(1, d_model, kernel_size=(channels, patch_len),
                                       stride=(1, patch_len), bias=False)
            nn.init.kaiming_normal_(self.tokenConv.weight, mode="fan_in",
                                    nonlinearity="leaky_relu")

        def forward(self, x):
            return self.tokenConv(x)

    def augment(name: str, strength: float, tokens):
        if name == "jitter":
            return tokens + torch.randn_like(tokens) * strength
        if name == "scale":
            return tokens * (1 + torch.randn(*tokens.shape[:2], 1) * strength)
        if name == "drop":
            return functional.dropout(tokens, strength, True)
        return tokens

    class Embedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.paddings = nn.ModuleList(
                [nn.ReplicationPad1d((0, p)) for p in config.patch_lens])
            self.value_embeddings = nn.ModuleList(
                [TokenEmbedding(p) for p in config.patch_lens])
            self.position_embedding = PositionalEmbedding()
            self.learnable_embeddings = nn.ParameterList(
                [nn.Parameter(torch.randn(1, d_model)) for _ in config.patch_lens])

        def forward(self, x):
            x = x.permute(0, 2, 1)  # (B, C, T)
            tokens = [embed(pad(x).unsqueeze(1)).squeeze(2).transpose(1, 2)
                      for pad, embed in zip(self.paddings, self.value_embeddings, strict=True)]
            if self.training:  # one augmentation per granularity, drawn per call
                tokens = [augment(*random.choice(config.augmentations), t) for t in tokens]
            return [t + e + self.position_embedding(t)
                    for t, e in zip(tokens, self.learnable_embeddings, strict=True)]

    class AttentionLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.query_projection = nn.Linear(d_model, d_model)
            self.key_projection = nn.Linear(d_model, d_model)
            self.value_projection = nn.Linear(d_model, d_model)
            self.out_projection = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(rate)

        def forward(self, x):
            batch, length, _ = x.shape
            q = self.query_projection(x).view(batch, length, heads, -1)
            k = self.key_projection(x).view(batch, length, heads, -1)
            v = self.value_projection(x).view(batch, length, heads, -1)
            scores = torch.einsum("blhe,bshe->bhls", q, k)
            probs = self.dropout(torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-1))
            out = torch.einsum("bhls,bshd->blhd", probs, v).contiguous()
            return self.out_projection(out.view(batch, length, -1))

    class MultiGranularityAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.intra_attentions = nn.ModuleList(
                [AttentionLayer() for _ in config.patch_lens])
            # As the reference: none at all when switched off or with a single granularity,
            # so its checkpoints of those ablations hold no inter_attention tensors.
            self.inter_attention = (AttentionLayer() if config.has_inter_attention else None)

        def forward(self, xs):
            out = [attention(x) for attention, x in zip(self.intra_attentions, xs, strict=True)]
            if self.inter_attention is None:
                return out
            routers = self.inter_attention(torch.cat([o[:, -1:] for o in out], dim=1))
            return [torch.cat([o[:, :-1], routers[:, i:i + 1]], dim=1)
                    for i, o in enumerate(out)]

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(d_model, config.d_ff, 1)
            self.conv2 = nn.Conv1d(config.d_ff, d_model, 1)
            self.norm = nn.LayerNorm(d_model)
            self.dropout = nn.Dropout(rate)

        def forward(self, z):
            y = self.dropout(functional.gelu(self.conv1(z.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            return self.norm(z + y)

    class EncoderLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = MultiGranularityAttention()
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.resblock1, self.resblock2, self.resblock3 = ResBlock(), ResBlock(), ResBlock()
            self.dropout = nn.Dropout(rate)

        def forward(self, xs):
            attended = self.attention(xs)
            xs = [self.norm1(x + self.dropout(a)) for x, a in zip(xs, attended, strict=True)]
            ys = [self.resblock3(self.resblock2(self.resblock1(x))) for x in xs]
            return [self.norm2(x + y) for x, y in zip(xs, ys, strict=True)]

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_layers = nn.ModuleList([EncoderLayer() for _ in range(config.e_layers)])
            self.norm = nn.LayerNorm(d_model)

        def forward(self, xs):
            for layer in self.attn_layers:
                xs = layer(xs)
            return self.norm(torch.cat(xs, dim=1))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_embedding = Embedding()
            self.encoder = Encoder()
            self.dropout = nn.Dropout(rate)
            self.projection = nn.Linear(config.head_features, config.num_classes)

        def forward(self, x):
            features = self.dropout(functional.gelu(self.encoder(self.enc_embedding(x))))
            return self.projection(features.reshape(x.shape[0], -1))

    torch.manual_seed(seed)
    random.seed(seed)
    return Model()


def time_training(config: CardioformerConfig | Mapping[str, Any], batch: int, steps: int,
                  threads: int = 0) -> dict[str, Any]:
    """Seconds per training step on random inputs, as a dict: Adam and global-norm clipping at
    the defaults of `train.learning_rate` and `train.grad_clip_norm`, fixed here.
    ``threads`` > 0 sets PyTorch's intra-op thread count."""
    torch = _import_torch()
    config = CardioformerConfig.from_config(config)
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if threads > 0:
        torch.set_num_threads(threads)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, config.seq_len, config.num_channels)
    y = torch.randint(0, config.num_classes, (batch,))

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
        optimizer.step()
        return loss.item()

    seconds = benchmarking.seconds_per_call(step, steps)
    return {
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "batch_size": batch,
        **benchmarking.train_speed_fields(batch, seconds),
        "peak_host_memory_mib": benchmarking.peak_host_memory_mib(),
    }


def time_inference(config: CardioformerConfig | Mapping[str, Any], eval_batch: int, repeats: int,
                   threads: int = 0) -> dict[str, Any]:
    """Eval-mode samples/s at `eval_batch` and one-sample latency (the median), under
    ``no_grad``, with `benchmarking.run`'s field names; `repeats` timed calls of each."""
    torch = _import_torch()
    config = CardioformerConfig.from_config(config)
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    if threads > 0:
        torch.set_num_threads(threads)
    model = build_model(config).eval()

    def seconds(rows: int) -> list[float]:
        x = torch.randn(rows, config.seq_len, config.num_channels)
        with torch.no_grad():
            return benchmarking.seconds_per_call(lambda: model(x), repeats)

    batch_seconds = seconds(eval_batch)
    return {
        "eval_batch_size": eval_batch,
        "eval_samples_per_second": round(eval_batch * len(batch_seconds) / sum(batch_seconds),
                                         2),
        "inference_latency_ms": round(float(np.median(seconds(1))) * 1e3, 3),
    }


# Figures compared with the PyTorch re-creation, and whether larger is better.
_COMPARED = {"train_samples_per_second": True, "eval_samples_per_second": True,
             "inference_latency_ms": False}


def compare_reference(config: ml_collections.ConfigDict, batch: int, eval_batch: int,
                      num_steps: int, rounds: int = 1, threads: int = 0) -> dict[str, Any]:
    """This port against the PyTorch re-creation of the reference (``[torch]`` extra), each
    in a fresh child process per round (docs/benchmarks.md); ratios > 1: this port is faster.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    results = []
    for _ in range(rounds):
        reference = _measure_in_subprocess("reference", config, batch, eval_batch, num_steps,
                                           threads)
        ours = _measure_in_subprocess("this_port", config, batch, eval_batch, num_steps)
        ratios = {name: round(ours[name] / reference[name] if larger_is_better
                              else reference[name] / ours[name], 2)
                  for name, larger_is_better in _COMPARED.items()}
        results.append({"reference": reference, "this_port": ours, "ratios": ratios})
    return {"rounds": results,
            "ratios_by_round": {name: [r["ratios"][name] for r in results]
                                for name in _COMPARED}}


def _measure_in_subprocess(which: str, config: ml_collections.ConfigDict, batch: int,
                           eval_batch: int, num_steps: int, threads: int = 0
                           ) -> dict[str, Any]:
    """`measure` in a child Python process; its JSON result."""
    with tempfile.TemporaryDirectory() as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(config.to_json())
        code = ("import json; from cardioformer_jax.interop import torch_reference; "
                f"print(json.dumps(torch_reference.measure({which!r}, {str(config_path)!r}, "
                f"{batch}, {eval_batch}, {num_steps}, {threads})))")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=False)
    if child.returncode:
        raise RuntimeError(f"timing {which} failed (exit {child.returncode}):\n"
                           f"{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure(which: str, config_path: str, batch: int, eval_batch: int, num_steps: int,
            threads: int = 0) -> dict[str, Any]:
    """One side (``"this_port"`` or ``"reference"``) of `compare_reference`, here."""
    config = ml_collections.ConfigDict(json.loads(Path(config_path).read_text()))
    if which == "this_port":
        return benchmarking.run(config, batch, eval_batch, num_steps)
    if which != "reference":
        raise ValueError(f"which={which!r} must be 'this_port' or 'reference'")
    spec = models.network_config(config)
    result = time_training(spec, batch, num_steps, threads)
    result.update(time_inference(spec, eval_batch, max(2, num_steps), threads))
    result["peak_host_memory_mib"] = benchmarking.peak_host_memory_mib()
    return result
