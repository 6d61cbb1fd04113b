"""The Grain input pipelines on a real (synthetic) PTB-XL ArrayRecord build; nothing mocked."""

from __future__ import annotations

import collections
import hashlib
import io
import re
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from cardioformer_jax.core import sharding
from cardioformer_jax.data import datasets, eval_input, preprocessing
from cardioformer_jax.data import input_pipeline as ip
from configs import ptbxl


def make_config(data_dir, *, batch_size=32, eval_batch_size=48, seed=41):
    config = ptbxl.get_config()
    config.dataset.data_dir = str(data_dir)
    config.train.batch_size = batch_size
    config.train.eval_batch_size = eval_batch_size
    config.seed = seed
    return config


@pytest.fixture(scope="module")
def data_dir(tiny_ptbxl):
    return tiny_ptbxl[1]


@pytest.fixture(scope="module")
def split_index(data_dir):
    """split -> (fingerprint of a standardised signal -> example index, examples)."""
    out = {}
    for split in ("train", "validation"):
        source = datasets.data_source("ptbxl", data_dir, split)
        examples = [source[i] for i in range(len(source))]
        prints = {_fingerprint(preprocessing.standardize(e["signal"])): i
                  for i, e in enumerate(examples)}
        assert len(prints) == len(examples)
        out[split] = (prints, examples)
    return out


def _fingerprint(signal: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(signal, np.float32).tobytes()).hexdigest()


def _indices(batch, prints) -> list[int]:
    return [prints[_fingerprint(s)] for s in np.asarray(batch["signal"])]


def _take(train_input, n):
    return [next(train_input) for _ in range(n)]


# --- training -----------------------------------------------------------------------------


def test_train_batches_standardised_per_sample_and_lead(data_dir, split_index):
    prints, examples = split_index["train"]
    train_input = ip.create_train_input(make_config(data_dir), None)
    try:
        batch = next(train_input)
    finally:
        train_input.close()
    signal, label = batch["signal"], batch["label"]
    assert signal.shape == (32, 250, 12) and signal.dtype == np.float32
    assert label.shape == (32,) and label.dtype == np.int32
    np.testing.assert_allclose(signal.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(signal.std(axis=1), 1.0, atol=1e-4)  # population std
    for row, i in enumerate(_indices(batch, prints)):
        assert label[row] == examples[i]["label"]


def test_constant_lead_becomes_zeros():
    spec = ip.DataSpec("ptbxl", None, "unused", seq_len=250, num_channels=12, num_classes=5)
    signal = np.random.default_rng(0).normal(3.0, 2.0, (250, 12)).astype(np.float32)
    signal[:, 4] = 0.1  # constant: round-off must not turn it into noise of std 1
    out = ip.TrainTransform(spec, "train").map({"signal": signal, "label": 2})
    assert np.all(out["signal"][:, 4] == 0)
    other = np.delete(out["signal"], 4, axis=1)
    np.testing.assert_allclose(other.std(axis=0), 1.0, atol=1e-5)
    assert out["label"].dtype == np.int32


def test_shuffle_seeded_and_reshuffled_every_epoch(data_dir, split_index):
    prints, _ = split_index["train"]

    def epochs(seed, n_epochs=2):
        train_input = ip.create_train_input(make_config(data_dir, seed=seed), None)
        try:
            steps = train_input.steps_per_epoch
            assert steps == 310 // 32
            return [[i for b in _take(train_input, steps) for i in _indices(b, prints)]
                    for _ in range(n_epochs)]
        finally:
            train_input.close()

    first, second = epochs(41)
    assert first == epochs(41)[0]  # same seed, same order
    assert first != epochs(42)[0]  # another seed, another order
    for epoch in (first, second):  # no example twice within an epoch
        assert len(set(epoch)) == len(epoch) == 9 * 32
    assert first != second  # each epoch reshuffled ...
    assert set(first) != set(second)  # ... and drops a different remainder


def test_process_shards_are_disjoint_and_drop_remainder(data_dir, split_index):
    prints, _ = split_index["train"]
    config = make_config(data_dir, batch_size=24)
    seen = []
    for index in range(3):
        ds, steps = ip.train_dataset(config, process_index=index, process_count=3, num_epochs=1)
        batches = list(ds)
        assert steps == 310 // 24 and len(batches) == steps
        assert all(b["signal"].shape == (8, 250, 12) for b in batches)
        ids = {i for b in batches for i in _indices(b, prints)}
        # Contiguous shares of 310 // 3 = 103 examples each, remainder (1) dropped.
        assert ids <= set(range(103 * index, 103 * (index + 1)))
        seen.append(ids)
    assert not (seen[0] & seen[1] or seen[1] & seen[2] or seen[0] & seen[2])


def test_iterator_state_restore_resumes_exact_batches(data_dir):
    config = make_config(data_dir)
    first = ip.create_train_input(config, None)
    _take(first, 11)  # into the second epoch
    state = first.get_state()
    expected = _take(first, 3)
    first.close()

    resumed = ip.create_train_input(config, None)
    resumed.set_state(state)
    try:
        for want, got in zip(expected, _take(resumed, 3), strict=True):
            np.testing.assert_array_equal(want["signal"], got["signal"])
            np.testing.assert_array_equal(want["label"], got["label"])
    finally:
        resumed.close()


def test_worker_process_same_batches_and_resumable(data_dir):
    config = make_config(data_dir)
    threads = ip.create_train_input(config, None)
    expected = _take(threads, 5)
    threads.close()
    config.dataset.num_workers = 1  # each worker start costs seconds: one is enough here
    workers = ip.create_train_input(config, None)
    try:
        got = _take(workers, 2)
        state = workers.get_state()
        got += _take(workers, 3)
        workers.set_state(state)  # rewind
        got += _take(workers, 3)
    finally:
        workers.close()
    for want, batch in zip(expected + expected[2:], got, strict=True):
        np.testing.assert_array_equal(want["signal"], batch["signal"])


def test_iterator_checkpoint_with_orbax_manager(data_dir, tmp_path):
    config = make_config(data_dir)
    mesh = sharding.create_mesh()
    train_input = ip.create_train_input(config, mesh)
    _take(train_input, 4)
    params = {"w": np.arange(6.0, dtype=np.float32)}
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(4, args=ocp.args.Composite(
            state=ocp.args.StandardSave(params), data=train_input.checkpoint_save_args()))
        manager.wait_until_finished()
    expected = _take(train_input, 2)
    train_input.close()

    fresh = ip.create_train_input(config, mesh)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored = manager.restore(4, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(params), data=fresh.checkpoint_restore_args()))
    np.testing.assert_array_equal(restored["state"]["w"], params["w"])
    try:
        for want, got in zip(expected, _take(fresh, 2), strict=True):
            np.testing.assert_array_equal(np.asarray(want["signal"]), np.asarray(got["signal"]))
    finally:
        fresh.close()


def test_train_batches_are_global_arrays_with_data_sharding(data_dir):
    mesh = sharding.create_mesh((-1, 1))
    train_input = ip.create_train_input(make_config(data_dir), mesh)
    try:
        batch = next(train_input)
    finally:
        train_input.close()
    assert set(batch) == {"signal", "label"}
    for value in batch.values():
        assert isinstance(value, jax.Array)
        assert value.sharding == sharding.data_sharding(mesh)
        assert value.sharding.spec == P(("data", "fsdp"))
    assert batch["signal"].shape == (32, 250, 12) and batch["label"].dtype == np.int32


# --- evaluation ---------------------------------------------------------------------------


def test_eval_covers_every_example_once_with_masks(data_dir, split_index):
    _, examples = split_index["validation"]  # 100 examples; 3 batches of 48, 44 padded
    config = make_config(data_dir, eval_batch_size=48)
    mesh = sharding.create_mesh()
    batches = list(eval_input.eval_batches(config, "validation", mesh))
    assert len(batches) == 3
    host = {k: np.concatenate([b.host[k] for b in batches]) for k in batches[0].host}
    assert host["mask"].tolist() == [1] * 100 + [0] * 44
    real = host["mask"] == 1
    assert host["index"][real].tolist() == list(range(100))
    assert np.all(host["index"][~real] == -1) and np.all(host["record_id"][~real] == b"")
    got = collections.Counter(zip(host["record_id"][real].tolist(),
                                  host["segment"][real].tolist(), strict=True))
    want = collections.Counter((e["record_id"], e["segment"]) for e in examples)
    assert got == want and max(got.values()) == 1
    assert host["label"][real].tolist() == [e["label"] for e in examples]
    assert host["subject_id"][real].tolist() == [e["subject_id"] for e in examples]
    for b in batches:
        assert b.device["signal"].shape == (48, 250, 12)
        assert b.device["mask"].sharding.spec == P(("data", "fsdp"))
        np.testing.assert_array_equal(np.asarray(b.device["mask"]), b.host["mask"])
    padded = np.asarray(batches[-1].device["signal"])[4:]
    assert not padded.any()
    gathered = eval_input.allgather_host({"index": host["index"], "record_id": host["record_id"]})
    np.testing.assert_array_equal(gathered["record_id"], host["record_id"])


class _Terminal(io.StringIO):
    """stderr as an interactive terminal (tqdm draws only on one)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("batch_size, shown", [(10, True), (48, False)])
def test_eval_progress_bar_counts_batches_on_a_terminal(data_dir, monkeypatch, batch_size,
                                                        shown):
    # 100 validation examples: 10 batches of 10 get a bar, 3 batches of 48 do not.
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    config = make_config(data_dir, eval_batch_size=batch_size)
    batches = list(eval_input.eval_batches(config, "validation", progress=True))
    text = terminal.getvalue()
    assert ("evaluating validation: 100%" in text and "10/10" in text) == shown
    assert shown or text == ""
    # Without progress=True nothing is drawn even for many batches.
    assert len(batches) == (10 if shown else 3)
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    list(eval_input.eval_batches(config, "validation"))
    assert quiet.getvalue() == ""


def test_eval_progress_in_a_log_is_plain_lines(data_dir, monkeypatch):
    # stderr redirected to a file or pipe: no tqdm redraws, a plain line with the count.
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    batches = list(eval_input.eval_batches(make_config(data_dir, eval_batch_size=10), "validation",
                                   progress=True))
    assert len(batches) == 10
    assert "\r" not in log.getvalue()
    assert re.fullmatch(r"(evaluating validation: \d+/10 batches \(\d+%\), \d+s\n)*"
                        r"evaluating validation: 10/10 batches \(100%\), \d+s\n", log.getvalue())


def test_eval_multi_process_shares_cover_split_once(data_dir, split_index):
    _, examples = split_index["validation"]
    config = make_config(data_dir, eval_batch_size=24)
    seen, counts = [], set()
    for index in range(3):  # 100 examples -> shares 34, 33, 33; 8 rows per process-batch
        batches = list(eval_input.eval_batches(config, "validation", None,
                                       process_index=index, process_count=3))
        counts.add(len(batches))
        for b in batches:
            assert b.host["mask"].shape == (8,)
            seen.extend(b.host["index"][b.host["mask"] == 1].tolist())
    assert counts == {5}  # ceil(34 / 8) on every process
    assert sorted(seen) == list(range(len(examples)))


# --- errors -------------------------------------------------------------------------------


def test_signal_shape_mismatch_is_a_clear_error(data_dir):
    config = make_config(data_dir)
    config.input.seq_len = 300
    with pytest.raises(ValueError) as err:
        ip.check_dataset(config)
    message = str(err.value)
    for part in ("ptbxl/default", "'train'", "(250, 12)", "(300, 12)"):
        assert part in message


def test_label_range_errors(data_dir):
    config = make_config(data_dir)
    config.dataset.num_classes = 3
    with pytest.raises(ValueError, match=r"ptbxl/default split 'validation'.*5 classes.*\[0, 3\)"):
        eval_input.eval_batches(config, "validation").__next__()
    spec = ip.DataSpec("ptbxl", None, str(data_dir), 250, 12, 5)
    bad = {"signal": np.zeros((250, 12), np.float32), "label": 7, "record_id": b"r1"}
    with pytest.raises(ValueError, match=r"ptbxl/default split 'train'.*b'r1'.*label 7.*\[0, 5\)"):
        ip.TrainTransform(spec, "train").map(bad)


def test_batch_size_errors(data_dir):
    with pytest.raises(ValueError, match="not divisible by the number of processes 3"):
        ip.train_dataset(make_config(data_dir, batch_size=32), process_index=0, process_count=3)
    with pytest.raises(ValueError, match="fewer than one global batch of 512"):
        ip.train_dataset(make_config(data_dir, batch_size=512))
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        ip.per_process_batch_size(6, 1, jax.sharding.AbstractMesh((2, 2), ("data", "fsdp")))


def test_unbuilt_dataset_names_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m cardioformer_jax.build_dataset ptbxl"):
        ip.check_dataset(make_config(tmp_path / "empty"))


def test_measure_throughput(data_dir):
    rate = ip.measure_throughput(make_config(data_dir), num_batches=5, warmup_batches=1)
    assert rate > 0


def test_benchmark_times_the_input_pipeline_alone(data_dir):
    from cardioformer_jax import benchmarking

    config = make_config(data_dir)
    result = benchmarking.input_pipeline_rates(config, 16, [0], 3)
    assert result["dataset"] == "ptbxl/default" and result["batch_size"] == 16
    assert result["input_samples_per_second_by_workers"]["0"] > 0
    assert config.train.batch_size == 32  # the caller's config is left as it was


# --- crops (input.crop_seconds) ------------------------------------------------------------


def _crop_config(data_dir, *, seq_len=100, crop_seconds=0.4, seed=41):
    config = make_config(data_dir, seed=seed)
    config.input.seq_len = seq_len  # 0.4 s of the 250 Hz, 250-sample records
    config.input.crop_seconds = crop_seconds
    config.input.eval_stride_seconds = 0.2
    return config


def _crop_start(record: np.ndarray, crop: np.ndarray) -> int:
    starts = [s for s in range(len(record) - len(crop) + 1)
              if np.array_equal(record[s:s + len(crop)], crop)]
    assert starts, "the crop is no slice of its record"
    return starts[0]


def test_random_crops_of_standardised_records_new_every_epoch_and_resumable(data_dir):
    whole = ip.create_train_input(make_config(data_dir), None)
    cropped = ip.create_train_input(_crop_config(data_dir), None)
    again = ip.create_train_input(_crop_config(data_dir), None)
    try:
        steps = cropped.steps_per_epoch
        starts = collections.defaultdict(list)
        for _ in range(2 * steps):  # the same shuffled order; each crop is a slice
            records, crops = next(whole), next(cropped)
            assert crops["signal"].shape == (32, 100, 12)
            np.testing.assert_array_equal(records["label"], crops["label"])
            for record, crop in zip(records["signal"], crops["signal"], strict=True):
                start = _crop_start(record, crop)
                assert 0 <= start <= 150
                starts[_fingerprint(record)].append(start)
            np.testing.assert_array_equal(crops["signal"], next(again)["signal"])
        pairs = [s for s in starts.values() if len(s) == 2]
        assert len(pairs) > steps * 32 // 2
        # A record's crop differs between its two epochs (almost always: 151 starts).
        assert sum(a != b for a, b in pairs) > 0.9 * len(pairs)
        assert len({s for pair in pairs for s in pair}) > 50
        state = cropped.get_state()
        expected = _take(cropped, 2)
        again.set_state(state)
        for want, got in zip(expected, _take(again, 2), strict=True):
            np.testing.assert_array_equal(want["signal"], got["signal"])
    finally:
        for it in (whole, cropped, again):
            it.close()
    other = ip.create_train_input(_crop_config(data_dir, seed=42), None)
    try:
        reference = ip.create_train_input(_crop_config(data_dir), None)
        assert not np.array_equal(next(other)["signal"], next(reference)["signal"])
        reference.close()
    finally:
        other.close()


def test_eval_batches_keep_whole_records_when_cropping(data_dir):
    batches = list(eval_input.eval_batches(_crop_config(data_dir), "validation"))
    assert {b.device["signal"].shape for b in batches} == {(48, 250, 12)}
    assert sum(int(b.host["mask"].sum()) for b in batches) == 100


def test_crop_longer_than_records_or_at_another_rate_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match=r"crop_seconds=1.2 crops 300 samples .*longer than "
                                         r"these 250-sample records"):
        ip.check_dataset(_crop_config(data_dir, seq_len=300, crop_seconds=1.2))
    with pytest.raises(ValueError, match=r"sampled at 250 Hz, where input.crop_seconds=0.5 "
                                         r"is 125 samples; input.seq_len=100"):
        ip.check_dataset(_crop_config(data_dir, crop_seconds=0.5))
