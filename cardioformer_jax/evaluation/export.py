"""A trained model as a `jax.export` artifact: the library of ``cardioformer_jax.export``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax import export as jax_export

from cardioformer_jax.core import logging_utils, paths
from cardioformer_jax.data import tabular
from cardioformer_jax.evaluation import inference

FORMAT = "cardioformer_jax.export/1"


def model_function(model: inference.TrainedModel) -> Callable[..., jax.Array]:
    """``f(samples (B, T, C)) -> logits (B, K)`` with the parameters closed over; a model
    that fuses age and sex takes their features too: ``f(samples, tabular (B, 4))``."""
    apply, params, rngs = model.apply_fn(), model.params, model.rngs
    names = ("signal", "tabular") if model.uses_tabular else ("signal",)

    def logits(*arrays: jax.Array) -> jax.Array:  # the model's inputs, in `names` order
        return apply(params, rngs, dict(zip(names, arrays, strict=True)))

    return logits


def export_model(model: inference.TrainedModel, *, batch_size: int | None = None,
                 platforms: Sequence[str] | None = None) -> jax_export.Exported:
    """`jax.export` of `model_function` (symbolic batch unless `batch_size`)."""
    seq_len, channels = model.input_shape
    batch: Any = batch_size if batch_size else jax_export.symbolic_shape("batch")[0]
    specs = [jax.ShapeDtypeStruct((batch, seq_len, channels), jnp.float32)]
    if model.uses_tabular:
        specs.append(jax.ShapeDtypeStruct((batch, len(tabular.TABULAR_FEATURES)),
                                          jnp.float32))
    return jax_export.export(jax.jit(model_function(model)),
                             platforms=tuple(platforms) if platforms else None)(*specs)


def metadata(model: inference.TrainedModel, exported: jax_export.Exported,
             file_name: str) -> dict[str, Any]:
    """The JSON written next to the exported model."""
    in_aval, *extra_avals = exported.in_avals
    (out_aval,) = exported.out_avals

    def shape(aval: Any) -> list[int | None]:
        # A symbolic dimension (the batch) is written as null.
        return [d if isinstance(d, int) else None for d in aval.shape]

    return {
        "format": FORMAT,
        "file": file_name,
        "jax_version": jax.__version__,
        "platforms": list(exported.platforms),
        "input": {"name": "samples", "shape": shape(in_aval), "dtype": str(in_aval.dtype),
                  "layout": "(batch, time, lead)"},
        **({"tabular_input": {
            "name": "tabular", "shape": shape(extra_avals[0]),
            "features": list(tabular.TABULAR_FEATURES),
            "encoding": "cardioformer_jax.data.tabular.tabular_features: age capped at 90, "
                        "(age - 60) / 20, 0 when unknown; age_known 0/1; male, female "
                        "one-hot (both 0 when unknown)"}} if extra_avals else {}),
        "output": {"name": "logits", "shape": shape(out_aval), "dtype": str(out_aval.dtype),
                   "note": model.spec.task.probabilities_note
                           + "; a record's probabilities are the mean over its samples"},
        "lead_names": list(model.spec.lead_names),
        "class_names": list(model.spec.class_names),
        "preparation": model.spec.describe(),
        "source": {
            "run_dir": str(model.run_dir), "checkpoint_step": model.step,
            "epoch": model.epoch, "seed": int(model.config.seed),
            "model_name": model.config.model_name,
            "model": model.config.model.to_dict(),
        },
    }


def save(exported: jax_export.Exported, meta: dict[str, Any], out: str | os.PathLike
         ) -> tuple[epath.Path, epath.Path]:
    """Writes the model to `out` (or a URL) and its metadata beside it (``.json``)."""
    out = paths.as_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(exported.serialize())
    meta_path = out.with_suffix(".json")
    logging_utils.write_json(meta_path, meta)
    return out, meta_path


def load(path: str | os.PathLike) -> tuple[jax_export.Exported, dict[str, Any]]:
    """The exported model at `path` (or a URL) and its metadata; needs JAX only."""
    path = paths.as_path(path)
    exported = jax_export.deserialize(bytearray(path.read_bytes()))
    return exported, json.loads(path.with_suffix(".json").read_text())


def run(exported: jax_export.Exported, samples: np.ndarray,
        tabular_inputs: np.ndarray | None = None) -> np.ndarray:
    """Logits of prepared samples ``(N, T, C)`` with an exported model (and their ``(N, 4)``
    age/sex features for a model exported with them)."""
    args = [np.asarray(samples, np.float32)]
    if tabular_inputs is not None:
        args.append(np.asarray(tabular_inputs, np.float32))
    return np.asarray(exported.call(*args))


def run_cli(workdir: str | os.PathLike, out: str | os.PathLike, *, seed: int | None = None,
            platforms: Sequence[str] | None = None, batch_size: int | None = None) -> int:
    """The command line: exports the run's model to `out`; returns the exit status."""
    model = inference.load_for_command_line(workdir, seed=seed)
    if model is None:
        return 1
    platforms = [p.strip() for p in platforms if p.strip()] if platforms else None
    exported = export_model(model, batch_size=batch_size, platforms=platforms)
    meta = metadata(model, exported, paths.as_path(out).name)
    out, meta_path = save(exported, meta, out)
    print(f"wrote {out} ({out.stat().length:,} bytes; input {meta['input']['shape']} "
          f"float32 -> logits {meta['output']['shape']}, platforms {meta['platforms']}) "
          f"and {meta_path}")
    return 0
