"""Import and export the PyTorch reference's weights (docs/pytorch_checkpoints.md)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cardioformer_jax.models import count_params
from cardioformer_jax.models.cardioformer import (
    Cardioformer,
    CardioformerConfig,
    TokenLayout,
)
from cardioformer_jax.models.layers import sinusoidal_position_encoding

PE_NAME = "enc_embedding.position_embedding.pe"
REFERENCE_PE_LENGTH = 5000  # the reference's PositionalEmbedding(max_len=5000)
# Keys under which training scripts commonly wrap a state_dict in a checkpoint dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "params")
# Prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Tolerance for the stored sinusoidal table against ours: both are float32 evaluations of
# the same formula, which differ by a few ulp of the sin/cos argument; a different encoding
# (learned, other base, other interleaving) differs by O(1).
_PE_ATOL = 1e-4
_MAX_LISTED = 20


# Kind of slot: (reference -> NNX, NNX -> reference); docs/pytorch_checkpoints.md.
_CONVERSIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray],
                              Callable[[np.ndarray], np.ndarray]]] = {
    # Conv2d (D, 1, C, p) <-> (p, C, D)
    "patch": (lambda w: w[:, 0].transpose(2, 1, 0), lambda k: k.transpose(2, 1, 0)[:, None]),
    "row": (lambda w: w[0], lambda k: k[None]),  # learnable embedding (1, D) <-> (D,)
    "linear": (lambda w: w.T, lambda k: k.T),  # Linear (out, in) <-> (in, out)
    "conv1x1": (lambda w: w[:, :, 0].T, lambda k: k.T[:, :, None]),  # Conv1d (out, in, 1)
    "copy": (lambda a: a, lambda a: a),
}


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One reference tensor and where it lives in the NNX parameter tree."""

    name: str  # reference state_dict key
    shape: tuple[int, ...]  # reference shape
    path: tuple[str | int, ...]  # NNX parameter path
    index: tuple[int, ...]  # index into that parameter (layer, member) or ()
    kind: str  # key of _CONVERSIONS
    dim_fields: tuple[str, ...]  # per reference dimension, the config field(s) that set it


def _slots(config: CardioformerConfig, layout: TokenLayout) -> list[_Slot]:
    """Every reference parameter (the ``pe`` buffer aside), in the documented listing order."""
    d = config.d_model
    size = {"d_model": d, "d_ff": config.d_ff}
    # Position of each granularity inside its patch-length group.
    where = {member: (group, j) for group, members in enumerate(layout.group_members)
             for j, member in enumerate(members)}
    slots = [_Slot(f"enc_embedding.value_embeddings.{g}.tokenConv.weight",
                   (d, 1, config.patch_channels, p), ("patch_kernels", where[g][0]),
                   (where[g][1],), "patch",
                   ("d_model", "", "num_channels (or single_channel)", f"patch_lens[{g}]"))
             for g, p in enumerate(config.patch_lens)]
    slots += [_Slot(f"enc_embedding.learnable_embeddings.{g}", (1, d), ("granularity_embeddings",),
                    (g,), "row", ("", "d_model")) for g in range(config.num_granularities)]

    def pair(name: str, path: tuple[str | int, ...], index: tuple[int, ...], kind: str,
             shape: tuple[int, ...], fields: tuple[str, ...],
             leaves: tuple[str, str] = ("kernel", "bias")) -> None:
        # The bias: as long as the weight's first axis.
        slots.append(_Slot(f"{name}.weight", shape, (*path, leaves[0]), index, kind, fields))
        slots.append(_Slot(f"{name}.bias", shape[:1], (*path, leaves[1]), index, "copy",
                           fields[:1]))

    def attention(prefix: str, path: tuple[str | int, ...], index: tuple[int, ...]) -> None:
        for proj in ("query", "key", "value", "out"):
            pair(f"{prefix}.{proj}_projection", path, index, "linear", (d, d),
                 ("d_model", "d_model"), (f"{proj}_kernel", f"{proj}_bias"))

    def layer_norm(name: str, path: tuple[str | int, ...], index: tuple[int, ...]) -> None:
        pair(name, path, index, "copy", (d,), ("d_model",), ("scale", "bias"))

    for layer in range(config.e_layers):
        prefix = f"encoder.attn_layers.{layer}"
        for g in range(config.num_granularities):
            group, j = where[g]
            attention(f"{prefix}.attention.intra_attentions.{g}",
                      ("layers", "intra_attentions", group), (layer, j))
        if config.has_inter_attention:
            attention(f"{prefix}.attention.inter_attention", ("layers", "inter_attention"),
                      (layer, 0))
        for r in (1, 2, 3):
            block = f"{prefix}.resblock{r}"
            path = ("layers", f"resblock{r}")
            for conv, out, inp in (("conv1", "d_ff", "d_model"), ("conv2", "d_model", "d_ff")):
                pair(f"{block}.{conv}", (*path, conv), (layer,), "conv1x1",
                     (size[out], size[inp], 1), (out, inp, ""))
            layer_norm(f"{block}.norm", (*path, "norm"), (layer,))
        layer_norm(f"{prefix}.norm1", ("layers", "norm1"), (layer,))
        layer_norm(f"{prefix}.norm2", ("layers", "norm2"), (layer,))
    layer_norm("encoder.norm", ("norm",), ())
    head_fields = "seq_len / patch_lens / d_model / single_channel (head features)"
    pair("projection", ("projection",), (), "linear", (config.num_classes, config.head_features),
         ("num_classes", head_fields))
    return slots


def _checked_slots(model: Cardioformer) -> tuple[list[_Slot], dict[tuple, Any]]:
    """The slots and the model's parameters, verified to cover every parameter exactly once
    (else a parameter ``model.py`` added or renamed would silently keep its random value)."""
    config = model.config
    slots = _slots(config, model.layout)
    params = {tuple(path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    covered: dict[tuple, int] = dict.fromkeys(params, 0)
    for slot in slots:
        var = params.get(slot.path)
        target_shape = None if var is None else var.shape[len(slot.index):]
        expected = _CONVERSIONS[slot.kind][0](np.empty(slot.shape, np.float32)).shape
        if target_shape != expected:
            raise RuntimeError(
                f"torch_import is out of date with model.py: {slot.name} should map to "
                f"parameter {slot.path} of per-slot shape {expected}, found "
                f"{None if var is None else var.shape}")
        covered[slot.path] += int(np.prod(expected))
    wrong = {path: n for path, n in covered.items() if n != params[path].size}
    if wrong:
        raise RuntimeError(
            f"torch_import is out of date with model.py: parameters not covered exactly once "
            f"by the reference layout: {sorted(wrong)}")
    return slots, params


def expected_reference_shapes(config: CardioformerConfig | Mapping[str, Any]) -> dict[str, tuple]:
    """Reference ``state_dict`` names and shapes for ``config``, the ``pe`` buffer included."""
    config = CardioformerConfig.from_config(config)
    shapes = [(slot.name, slot.shape) for slot in _slots(config, TokenLayout.from_config(config))]
    # Reference order: the buffer sits between the patch convolutions and the embeddings.
    shapes.insert(config.num_granularities, (PE_NAME, (1, _pe_length(config), config.d_model)))
    return dict(shapes)


def _pe_length(config: CardioformerConfig) -> int:
    return max(REFERENCE_PE_LENGTH, max(config.num_patches(p) for p in config.patch_lens))


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "reading a PyTorch .pth/.pt checkpoint needs PyTorch: install the [torch] extra "
            "(pip install -e '.[torch]'), or convert the state_dict to .npz elsewhere with "
            "np.savez(path, **{k: v.numpy() for k, v in state_dict.items()})") from error
    return torch


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; torch is imported already if we get one
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()  # NumPy has no bfloat16
        return tensor.numpy()
    return np.asarray(value)


def _unwrap(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state_dict inside a checkpoint dict such as ``{"epoch": 3, "model": {...}}``."""
    for _ in range(3):
        inner = next((checkpoint[k] for k in _WRAPPER_KEYS
                      if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    while checkpoint:
        prefix = next((p for p in _WRAPPER_PREFIXES
                       if all(isinstance(k, str) and k.startswith(p) for k in checkpoint)), None)
        if prefix is None:
            break
        checkpoint = {k[len(prefix):]: v for k, v in checkpoint.items()}
    return checkpoint


def load_torch_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A reference state_dict as NumPy arrays, from a ``.pth``/``.pt`` file (``[torch]`` extra),
    an ``.npz`` file or a mapping, unwrapped (docs/pytorch_checkpoints.md, "Usage")."""
    if isinstance(source, Mapping):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint file at {path}")
        if path.suffix == ".npz":
            with np.load(path) as data:
                raw = {name: data[name] for name in data.files}
        else:
            torch = _import_torch()
            raw = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(raw, Mapping):
                raise ValueError(
                    f"{path} holds a {type(raw).__name__}, not a state_dict; save the "
                    "reference with torch.save(model.state_dict(), path)")
    return {str(name): _to_numpy(value) for name, value in _unwrap(raw).items()}


def _checkpoint_summary(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Config fields the checkpoint's names and shapes reveal (for error hints)."""
    found: dict[str, Any] = {}
    convs = {int(m.group(1)): value.shape for name, value in state_dict.items()
             if (m := re.fullmatch(r"enc_embedding\.value_embeddings\.(\d+)\.tokenConv\.weight",
                                   name)) and value.ndim == 4}
    if convs and sorted(convs) == list(range(len(convs))):
        shapes = [convs[g] for g in range(len(convs))]
        found["patch_lens"] = tuple(int(s[3]) for s in shapes)
        found["d_model"] = int(shapes[0][0])
        found["channels per patch"] = int(shapes[0][2])
    layers = {int(m.group(1)) for name in state_dict
              if (m := re.match(r"encoder\.attn_layers\.(\d+)\.", name))}
    if layers:
        found["e_layers"] = max(layers) + 1
    conv1 = state_dict.get("encoder.attn_layers.0.resblock1.conv1.weight")
    if conv1 is not None and conv1.ndim == 3:
        found["d_ff"] = int(conv1.shape[0])
    projection = state_dict.get("projection.weight")
    if projection is not None and projection.ndim == 2:
        found["num_classes"] = int(projection.shape[0])
        found["head features"] = int(projection.shape[1])
    return found


def _config_summary(config: CardioformerConfig) -> dict[str, Any]:
    return {"patch_lens": config.patch_lens, "d_model": config.d_model,
            "channels per patch": config.patch_channels, "e_layers": config.e_layers,
            "d_ff": config.d_ff, "num_classes": config.num_classes,
            "head features": config.head_features}


def _listed(names: list[str]) -> str:
    shown = "\n    ".join(names[:_MAX_LISTED])
    more = f"\n    ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"\n    {shown}{more}"


def _check_pe(value: np.ndarray, config: CardioformerConfig) -> str | None:
    """A problem with the stored positional table, or None if it is ours."""
    used = max(config.num_patches(p) for p in config.patch_lens)
    if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != config.d_model:
        return (f"{PE_NAME}: expected shape (1, >={used}, {config.d_model}), got "
                f"{tuple(value.shape)}; likely config field: d_model")
    if value.shape[1] < used:
        return (f"{PE_NAME}: the table has {value.shape[1]} positions but this config uses "
                f"{used} (seq_len / patch_lens)")
    table = sinusoidal_position_encoding(used, config.d_model)
    error = float(np.max(np.abs(value[0, :used].astype(np.float64) - table)))
    if not error <= _PE_ATOL:
        return (f"{PE_NAME}: differs from the fixed sinusoidal encoding by up to {error:.3g} "
                f"over the {used} positions used; this port supports only that encoding")
    return None


def _validate(state_dict: Mapping[str, np.ndarray], slots: list[_Slot],
              config: CardioformerConfig) -> None:
    expected = {slot.name: slot for slot in slots}
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected and name != PE_NAME]
    misshaped, fields = [], set()
    for name, slot in expected.items():
        if name in state_dict and tuple(state_dict[name].shape) != slot.shape:
            got = tuple(state_dict[name].shape)
            culprits = ([f for e, g, f in zip(slot.shape, got, slot.dim_fields, strict=True)
                         if e != g and f] if len(got) == len(slot.shape) else [])
            fields.update(culprits)
            hint = f"; likely config field: {', '.join(culprits)}" if culprits else ""
            misshaped.append(f"{name}: expected {slot.shape}, got {got}{hint}")
    pe_problem = _check_pe(state_dict[PE_NAME], config) if PE_NAME in state_dict else None
    if not (missing or unexpected or misshaped or pe_problem):
        return
    parts = ["the reference state_dict does not fit this model config:"]
    for what, names in (("missing", missing), ("unexpected", unexpected),
                        ("mis-shaped", misshaped)):
        if names:
            parts.append(f"  {len(names)} {what} tensor(s):{_listed(names)}")
    if pe_problem:
        parts.append(f"  {pe_problem}")
    found, ours = _checkpoint_summary(state_dict), _config_summary(config)
    disagreements = [f"{key}: checkpoint {value}, config {ours[key]}"
                     for key, value in found.items() if value != ours[key]]
    if disagreements:
        parts.append("  the checkpoint looks like a different configuration:"
                     + _listed(disagreements))
    if any(d.startswith("channels per patch:") for d in disagreements):
        parts.append("  (one channel per patch is the single_channel ablation)")
    raise ValueError("\n".join(parts))


def import_reference_weights(model: Cardioformer,
                             source: str | os.PathLike | Mapping[str, Any]) -> None:
    """Loads the reference's weights (``load_torch_state_dict``'s `source`) into ``model``:
    names and shapes must match the config exactly (``pe`` must be our table), else ValueError
    lists every problem. ``n_heads`` cannot be checked."""
    state_dict = load_torch_state_dict(source)
    slots, params = _checked_slots(model)
    _validate(state_dict, slots, model.config)
    values = {path: np.array(var[...]) for path, var in params.items()}
    for slot in slots:
        target = values[slot.path]
        to_nnx = _CONVERSIONS[slot.kind][0]
        target[slot.index] = to_nnx(np.asarray(state_dict[slot.name])).astype(target.dtype)
    for path, var in params.items():
        var[...] = jnp.asarray(values[path])


def load_reference_model(config: CardioformerConfig | Mapping[str, Any],
                         source: str | os.PathLike | Mapping[str, Any], *,
                         rngs: nnx.Rngs | None = None) -> Cardioformer:
    """A new ``Cardioformer`` for ``config`` holding the reference's weights (train mode)."""
    model = Cardioformer(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    import_reference_weights(model, source)
    return model


def export_reference_state_dict(model: Cardioformer) -> dict[str, np.ndarray]:
    """The model's weights as a reference state_dict (float32 NumPy, ``pe`` included)."""
    config = model.config
    slots, params = _checked_slots(model)
    values = {path: np.asarray(var[...], np.float32) for path, var in params.items()}
    out = {}
    for slot in slots:
        to_torch = _CONVERSIONS[slot.kind][1]
        out[slot.name] = np.ascontiguousarray(to_torch(values[slot.path][slot.index]))
    out[PE_NAME] = sinusoidal_position_encoding(_pe_length(config), config.d_model)[None]
    return {name: out[name] for name in expected_reference_shapes(config)}


def _destination(directory: str | os.PathLike, overwrite: bool) -> Path:
    directory = Path(directory).expanduser().absolute()  # Orbax wants an absolute path
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True (--overwrite) to "
                              "replace it")
    return directory


def save_params(model: Cardioformer, directory: str | os.PathLike, *,
                overwrite: bool = False) -> Path:
    """Saves ``nnx.state(model, nnx.Param)`` with Orbax (docs/pytorch_checkpoints.md)."""
    import orbax.checkpoint as ocp  # only the CLI path needs it; it is slow to import

    directory = _destination(directory, overwrite)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory, nnx.state(model, nnx.Param), force=overwrite)
    checkpointer.wait_until_finished()
    checkpointer.close()
    return directory


def convert(config: CardioformerConfig | Mapping[str, Any],
            checkpoint: str | os.PathLike | Mapping[str, Any], out: str | os.PathLike, *,
            overwrite: bool = False) -> Cardioformer:
    """Imports ``checkpoint`` for ``config`` (`models.network_config`), saves it to ``out``."""
    _destination(out, overwrite)  # fail before the slow part
    state_dict = load_torch_state_dict(checkpoint)
    model = load_reference_model(config, state_dict)
    directory = save_params(model, out, overwrite=overwrite)
    source = "the state_dict" if isinstance(checkpoint, Mapping) else checkpoint
    print(f"imported {len(state_dict)} tensors from {source}: "
          f"{count_params(model):,} parameters saved to {directory}")
    return model
