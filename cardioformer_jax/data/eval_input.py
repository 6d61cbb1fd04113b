"""The evaluation input: every example of a split once, in padded batches (docs/training.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import grain
import jax
import numpy as np

from cardioformer_jax.core import progress as progress_lib
from cardioformer_jax.core import sharding
from cardioformer_jax.data import input_pipeline, tabular


class EvalTransform(input_pipeline.TrainTransform):
    """`TrainTransform` plus the host-side ids, the example's index and `mask` = 1."""

    def map(self, element: tuple[int, Mapping[str, Any]]) -> dict[str, np.ndarray]:
        index, example = element
        out = super().map(example)
        out.update(
            mask=np.int32(1),
            index=np.int64(index),
            record_id=np.bytes_(example["record_id"]),
            subject_id=np.int64(example["subject_id"]),
            segment=np.int32(example["segment"]),
        )
        return out


def _padding_example(spec: input_pipeline.DataSpec, record_length: int) -> dict[str, np.ndarray]:
    return {
        "signal": np.zeros((record_length, spec.num_channels), np.float32),
        "label": spec.task.padding_label(spec.num_classes),
        **({"tabular": tabular.tabular_features(-1.0, -1)} if spec.tabular else {}),
        "mask": np.int32(0),
        "index": np.int64(-1),
        "record_id": np.bytes_(b""),
        "subject_id": np.int64(-1),
        "segment": np.int32(-1),
    }


class EvalBatch(NamedTuple):
    """`device`: ``signal``, ``label``, ``mask`` (global `jax.Array`s when a mesh is given,
    else NumPy); `host`: this process's rows as NumPy: ``label``, ``mask`` (1 real, 0 pad),
    ``index`` (position in the split, -1 pad), ``record_id`` (bytes), ``subject_id``,
    ``segment``."""

    device: dict[str, Any]
    host: dict[str, np.ndarray]


def eval_dataset(
    config: Any,
    split: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[grain.IterDataset, int]:
    """This process's evaluation batches (host NumPy, all fields) and their number: its
    contiguous share of the split, padded to as many full batches as every other share."""
    spec = input_pipeline.DataSpec.from_config(config)
    index, count = input_pipeline.this_process(process_index, process_count)
    global_batch = batch_size or int(config.train.eval_batch_size)
    local_batch = input_pipeline.per_process_batch_size(global_batch, count, mesh)
    source = input_pipeline.open_split(spec, split)
    start, stop = input_pipeline.even_split(len(source), index, count, drop_remainder=False)
    num_batches = math.ceil(math.ceil(len(source) / count) / local_batch)
    real = (
        grain.MapDataset.range(start, stop)
        .map(lambda i: (i, source[i]))
        .map(EvalTransform(spec, split))
    )
    # Padding rows are as long as the records (longer than seq_len when cropping).
    pad = _padding_example(spec, int(np.shape(source[0]["signal"])[0]))
    padding = grain.MapDataset.range(num_batches * local_batch - (stop - start)).map(
        lambda _: dict(pad)
    )
    ds = grain.MapDataset.concatenate([real, padding]).batch(local_batch)
    return ds.to_iter_dataset(input_pipeline.read_options(config)), num_batches


def eval_batches(
    config: Any,
    split: str,
    mesh: jax.sharding.Mesh | None = None,
    *,
    batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = False,
) -> Iterator[EvalBatch]:
    """Every example of `split` exactly once, in order, as `EvalBatch`es of the global
    eval batch size (the last ones padded, ``mask`` 0); ``progress`` shows the batches'
    progress on stderr (process 0, 10 batches or more; `core.progress`).

    All processes run the same number of batches. A caller keeps, per batch, the outputs of
    its own rows (`sharding.host_local_rows(logits)`, aligned with ``host``) and at the end
    concatenates them over processes with `allgather_host`, then drops ``mask == 0``.
    """
    ds, num_batches = eval_dataset(
        config,
        split,
        mesh=mesh,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
    )
    iterator = iter(ds)
    shown = progress and num_batches >= 10 and jax.process_index() == 0
    bar = progress_lib.progress(num_batches, f"evaluating {split}", "batches", enabled=shown)
    try:
        for batch in iterator:
            bar.update()
            device = {k: batch[k] for k in ("signal", "label", "mask", "tabular")
                      if k in batch}
            if mesh is not None:
                device = sharding.global_batch(device, mesh)
            yield EvalBatch(device=device, host=batch)
    finally:
        bar.close()
        iterator.close()


def allgather_host(tree: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenates each process's host arrays along axis 0, in process order, on every
    process (`multihost_utils.process_allgather`); byte strings are supported. Arrays
    must have the same number of rows on every process (`eval_batches` ensures it)."""
    if jax.process_count() == 1:
        return {k: np.asarray(v) for k, v in tree.items()}
    from jax.experimental import multihost_utils

    out = {}
    for key, value in tree.items():
        value = np.asarray(value)
        if value.dtype.kind == "S":
            local_width = np.array([value.dtype.itemsize], np.int32)
            width = int(multihost_utils.process_allgather(local_width).max())
            raw = value.astype(f"S{width}").view(np.uint8).reshape(*value.shape, width)
            gathered = multihost_utils.process_allgather(raw, tiled=True)
            out[key] = np.ascontiguousarray(gathered).view(f"S{width}").reshape(-1)
        else:
            out[key] = multihost_utils.process_allgather(value, tiled=True)
    return out
