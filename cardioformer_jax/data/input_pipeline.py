"""Grain training input over the TFDS ArrayRecord datasets (docs/training.md); evaluation is
`eval_input`, throughput in docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np

from cardioformer_jax.core import paths, sharding, tasks
from cardioformer_jax.data import dataset_inputs, datasets, preprocessing, tabular, windows

# Examples read from the start of a split to check shapes and labels before training.
VALIDATION_EXAMPLES = 16


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The dataset of a config and the model's input contract it must satisfy."""

    name: str
    builder_config: str | None
    data_dir: str
    seq_len: int
    num_channels: int
    num_classes: int
    task: tasks.Task = tasks.SINGLE_LABEL
    tabular: bool = False  # batches carry the age/sex features (`model.tabular`)
    # ``dataset.leads``: the dataset's channels the model reads (None: all of them) and
    # how many the dataset's signals have.
    lead_columns: tuple[int, ...] | None = None
    dataset_channels: int | None = None
    # Crops of longer records (`windows.from_config`): records may be longer than seq_len.
    windowing: windows.Windowing | None = None
    crop_seconds: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> DataSpec:
        """The dataset section of a config `config_lib.validate_config` accepted."""
        leads = config.dataset.leads
        columns, channels = None, None
        if leads:
            names = tuple(datasets.builder_class(config.dataset.name).LEAD_NAMES)
            columns, channels = dataset_inputs.lead_columns(leads, names), len(names)
        return cls(
            name=config.dataset.name,
            builder_config=config.dataset.builder_config or None,
            data_dir=paths.expand_path(config.dataset.data_dir, "config.dataset.data_dir"),
            seq_len=int(config.input.seq_len),
            num_channels=int(config.input.num_channels),
            num_classes=int(config.dataset.num_classes),
            task=tasks.from_config(config),
            tabular=config.model.tabular != "none",
            lead_columns=columns,
            dataset_channels=channels,
            windowing=windows.from_config(config),
            crop_seconds=float(config.input.crop_seconds),
        )

    def select_leads(self, signal: np.ndarray) -> np.ndarray:
        """The model's channels of a dataset signal ``(T, C)``."""
        return signal if self.lead_columns is None else signal[:, self.lead_columns]

    @property
    def label(self) -> str:
        return f"{self.name}/{self.builder_config or datasets.DEFAULT_CONFIG}"

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why records of `shape` (time, leads) do not suit the model; None if they do."""
        # The dataset's leads: all the model reads, or those `dataset.leads` picks from.
        channels = self.dataset_channels or self.num_channels
        expected = (self.seq_len, channels)
        leads = (f"{channels} leads (dataset.leads keeps {self.num_channels} of them)"
                 if self.dataset_channels else f"{channels} leads (num_channels)")
        if self.windowing is None:
            if tuple(shape) != expected:
                return (f"the model config expects (seq_len, num_channels) = {expected}"
                        + (f" (dataset.leads={self.num_channels} of {channels} leads)"
                           if self.dataset_channels else ""))
            return None
        if len(shape) != 2 or shape[1] != channels:
            return f"the model config expects {leads}"
        if shape[0] < self.seq_len:
            return (f"input.crop_seconds={self.crop_seconds} crops {self.seq_len} samples "
                    f"(input.seq_len), longer than these {shape[0]}-sample records")
        return None


def _check_example(example: Mapping[str, Any], spec: DataSpec, split: str) -> None:
    shape = np.shape(example["signal"])
    problem = spec.shape_problem(shape)
    if problem:
        raise ValueError(
            f"dataset {spec.label} split {split!r}: example {example.get('record_id')!r} has a "
            f"signal of shape {shape}; {problem}"
        )
    problem = spec.task.example_problem(example, spec.num_classes)
    if problem:
        raise ValueError(f"dataset {spec.label} split {split!r}: example "
                         f"{example.get('record_id')!r} {problem}")


def open_split(spec: DataSpec, split: str) -> Any:
    """The validated random-access source of one split (TFDS ArrayRecord data source).

    ValueError when the dataset does not suit the model config (signal shape, classes,
    unlabelled examples, the first examples); FileNotFoundError when it is not built.
    """
    builder = datasets.load_builder(spec.name, spec.data_dir, spec.builder_config)
    source = datasets.data_source(spec.name, spec.data_dir, split, spec.builder_config)
    features = builder.info.features
    actual = tuple(features["signal"].shape)
    problem = spec.shape_problem(actual)
    if problem:
        raise ValueError(
            f"dataset {spec.label} split {split!r} has signals of shape {actual} (time, leads); "
            f"{problem}. Use the config that matches the dataset, or rebuild the dataset."
        )
    rate = ((builder.info.metadata or {}).get("config") or {}).get("sample_rate")
    if spec.windowing is not None and rate and round(spec.crop_seconds * rate) != spec.seq_len:
        raise ValueError(
            f"dataset {spec.label} is sampled at {rate} Hz, where input.crop_seconds="
            f"{spec.crop_seconds} is {spec.crop_seconds * rate:g} samples; input.seq_len="
            f"{spec.seq_len} must equal it")
    spec.task.check_dataset(spec.label, features, builder.info.metadata or {}, split,
                            spec.num_classes)
    if len(source) == 0:
        raise ValueError(f"dataset {spec.label} split {split!r} has no examples")
    for i in range(min(len(source), VALIDATION_EXAMPLES)):
        _check_example(source[i], spec, split)
    return source


def dataset_identity(config: Any) -> dict[str, Any]:
    """Which built dataset a config reads: name, builder config, version, directory and
    examples per split (what `results.json` records next to the numbers)."""
    spec = DataSpec.from_config(config)
    builder = datasets.load_builder(spec.name, spec.data_dir, spec.builder_config)
    info = builder.info
    return {
        "name": spec.name,
        "builder_config": builder.builder_config.name if builder.builder_config else None,
        "version": str(info.version),
        "data_dir": os.fspath(builder.data_dir),
        "splits": {name: int(split.num_examples) for name, split in info.splits.items()},
        "fingerprint_sha256": ((info.metadata or {}).get("fingerprint") or {}).get("sha256"),
    }


def check_dataset(config: Any,
                  splits: tuple[str, ...] = ("train", "validation", "test")) -> None:
    """Checks the config's dataset against its model config before training (see
    `open_split`); call once at start-up for a clear error instead of a failed step."""
    spec = DataSpec.from_config(config)
    for split in splits:
        open_split(spec, split)


class TrainTransform(grain.transforms.Map):
    """Keeps `signal` (standardised per lead, docs/model.md) and `label`: the class id
    (int32) or, for multi-label training, the multi-hot `labels` ``(K,)`` as float32."""

    def __init__(self, spec: DataSpec, split: str):
        self._spec, self._split = spec, split

    def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
        # Cheap next to decoding; catches bad examples beyond the ones `open_split` read.
        _check_example(element, self._spec, self._split)
        return {
            "signal": preprocessing.standardize(self._spec.select_leads(element["signal"])),
            "label": self._spec.task.label(element),
            **({"tabular": tabular.tabular_features(element["age"], element["sex"])}
               if self._spec.tabular else {}),
        }


class RandomCrop(grain.transforms.RandomMap):
    """A uniformly random crop of `length` samples of each record of a batch's ``signal``
    (`windows.random_crops`; the records were standardised whole)."""

    def __init__(self, length: int):
        self._length = length

    def random_map(self, element: dict[str, np.ndarray], rng: np.random.Generator
                   ) -> dict[str, np.ndarray]:
        return {**element, "signal": windows.random_crops(element["signal"], self._length, rng)}


# Keeps the crop stream apart from the shuffle's, which Grain seeds with config.seed.
_CROP_SEED_OFFSET = 7919


def this_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """``(process_index, process_count)``: the given ones, JAX's where None."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} not in [0, {count})")
    return index, count


def per_process_batch_size(
    global_batch: int, process_count: int, mesh: jax.sharding.Mesh | None = None
) -> int:
    """global_batch / process_count, after checking that the batch splits evenly over the
    processes and over the devices it is sharded on."""
    if global_batch < 1:
        raise ValueError(f"batch size {global_batch} must be positive")
    if global_batch % process_count:
        raise ValueError(
            f"global batch size {global_batch} is not divisible by the number of processes "
            f"{process_count}"
        )
    if mesh is not None:
        divisor = sharding.batch_divisor(mesh)
        if global_batch % divisor:
            raise ValueError(
                f"global batch size {global_batch} is not divisible by the {divisor} devices "
                f"of the mesh's batch axes {sharding.batch_axes(mesh)} ({dict(mesh.shape)})"
            )
    return global_batch // process_count


def read_options(config: Any) -> grain.ReadOptions:
    """Grain's read threads and prefetch buffer (``dataset.num_threads``,
    ``dataset.prefetch_batches``)."""
    threads = int(config.dataset.num_threads)
    buffer = int(config.dataset.prefetch_batches)
    # Elements here are whole batches: Grain's default buffer (500) would hold ~0.8 GB.
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(buffer, threads))


def _with_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
    if num_workers > 0:
        from absl import flags

        # Grain's worker start-up reads absl flags; outside `absl.app.run` (tests,
        # notebooks) they are unparsed and reading them raises, so mark them parsed
        # (their defaults then apply).
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return ds


def train_dataset(
    config: Any,
    *,
    mesh: jax.sharding.Mesh | None = None,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
) -> tuple[grain.IterDataset, int]:
    """The training pipeline of this process (host NumPy batches) and `steps_per_epoch`.

    Batches are ``{"signal": (b, T, C) float32, "label": (b,) int32 or (b, K) float32}``
    with b = global batch / process_count, T = input.seq_len (random crops with
    ``input.crop_seconds``). `num_epochs` None repeats forever.
    """
    spec = DataSpec.from_config(config)
    index, count = this_process(process_index, process_count)
    global_batch = int(config.train.batch_size)
    local_batch = per_process_batch_size(global_batch, count, mesh)
    source = open_split(spec, split)
    steps_per_epoch = len(source) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"dataset {spec.label} split {split!r} has {len(source)} examples, fewer than "
            f"one global batch of {global_batch}"
        )
    start, stop = even_split(len(source), index, count, drop_remainder=True)
    ds = (
        grain.MapDataset.source(source)[start:stop]
        .shuffle(seed=int(config.seed))
        .map(TrainTransform(spec, split))
        .batch(local_batch, drop_remainder=True)
        # After `batch`: epochs stay separate and each one re-seeds the shuffle.
        .repeat(num_epochs)
    )
    if spec.windowing is not None:
        # After `repeat`: the index, and so the crop, differs every epoch; a random map's
        # generator depends only on seed and index, so the crops are reproducible and
        # the iterator state stays a position.
        ds = ds.random_map(RandomCrop(spec.windowing.length),
                           seed=int(config.seed) + _CROP_SEED_OFFSET + index)
    # Every process has floor(floor(n / count) / local_batch) == floor(n / global_batch)
    # batches per epoch, so all of them step through epochs in lockstep.
    ds = ds.to_iter_dataset(read_options(config))
    num_workers = int(config.dataset.num_workers)
    return _with_workers(ds, num_workers), steps_per_epoch


def even_split(n: int, index: int, count: int, *, drop_remainder: bool) -> tuple[int, int]:
    """[start, stop) of process `index`'s contiguous share of `n` examples, as Grain's
    `ShardByJaxProcess` computes it: n // count each, the remainder dropped or spread
    over the first processes."""
    size, remainder = divmod(n, count)
    start, stop = size * index, size * (index + 1)
    if not drop_remainder:
        start += min(index, remainder)
        stop += min(index + 1, remainder)
    return start, stop


class TrainInput:
    """Iterator of global training batches ``{"signal": (B, T, C) f32, "label": (B,) i32}``
    (`jax.Array`s sharded by `sharding.data_sharding(mesh)`), with checkpointable state:
    Orbax args (`checkpoint_save_args`, one JSON file per process) or `get_state()`.
    """

    def __init__(
        self,
        dataset: grain.IterDataset,
        mesh: jax.sharding.Mesh | None,
        *,
        steps_per_epoch: int,
        global_batch_size: int,
    ):
        self.mesh = mesh
        self.steps_per_epoch = steps_per_epoch
        self.global_batch_size = global_batch_size
        self.iterator: grain.DatasetIterator = iter(dataset)

    def __iter__(self) -> TrainInput:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self.iterator)
        return batch if self.mesh is None else sharding.global_batch(batch, self.mesh)

    def get_state(self) -> dict[str, Any]:
        """The position of the next batch (Grain's state; JSON-serialisable)."""
        return self.iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.iterator.set_state(state)

    def checkpoint_save_args(self) -> Any:
        """Orbax args saving this process's iterator state (`grain.checkpoint.CheckpointSave`)."""
        return grain.checkpoint.CheckpointSave(self.iterator)

    def checkpoint_restore_args(self) -> Any:
        """Orbax args restoring the state into this iterator in place."""
        return grain.checkpoint.CheckpointRestore(self.iterator)

    def close(self) -> None:
        """Stops read threads and worker processes."""
        self.iterator.close()


def create_train_input(
    config: Any,
    mesh: jax.sharding.Mesh | None,
    *,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainInput:
    """The training input of this process; `mesh` None yields host NumPy batches."""
    ds, steps = train_dataset(
        config, mesh=mesh, split=split, process_index=process_index, process_count=process_count
    )
    return TrainInput(
        ds,
        mesh,
        steps_per_epoch=steps,
        global_batch_size=int(config.train.batch_size),
    )


def measure_throughput(
    config: Any,
    *,
    num_batches: int = 50,
    warmup_batches: int = 5,
    mesh: jax.sharding.Mesh | None = None,
) -> float:
    """Samples/s this process's training pipeline delivers (to global arrays if `mesh`)."""
    train_input = create_train_input(config, mesh)
    try:
        for _ in range(warmup_batches):
            jax.block_until_ready(next(train_input))
        start = time.perf_counter()
        for _ in range(num_batches):
            jax.block_until_ready(next(train_input))
        elapsed = time.perf_counter() - start
    finally:
        train_input.close()
    return num_batches * train_input.global_batch_size / jax.process_count() / elapsed
