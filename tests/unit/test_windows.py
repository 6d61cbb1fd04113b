"""Crops and evaluation windows (`data.windows`, the PTB-XL benchmark suite's protocol)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cardioformer_jax import config_lib
from cardioformer_jax.data import windows
from configs import ptbxl_benchmark


@pytest.mark.parametrize("rate", [100, 500])
def test_ten_second_record_has_seven_windows_at_either_rate(rate):
    config = ptbxl_benchmark.get_config(f"superdiagnostic,crops,{rate}hz")
    windowing = windows.from_config(config)
    length, stride = rate * 5 // 2, rate * 5 // 4
    assert windowing == windows.Windowing(length, stride, "max")
    assert windowing.starts(10 * rate) == tuple(i * stride for i in range(7))


def test_windows_cover_the_record_and_skip_a_short_tail():
    assert windows.window_starts(10, 4, 3) == (0, 3, 6)  # [9, 10) is not scored
    assert windows.window_starts(4, 4, 2) == (0,)
    with pytest.raises(ValueError, match="shorter than the 5-sample window"):
        windows.window_starts(4, 5, 1)


def test_cut_and_max_equal_a_numpy_reference():
    rng = np.random.default_rng(0)
    records = rng.standard_normal((3, 20, 2)).astype(np.float32)
    windowing = windows.Windowing(8, 4, "max")
    cut = np.asarray(jax.jit(lambda x: windows.cut_windows(x, windowing))(jnp.asarray(records)))
    reference = np.stack([records[:, s:s + 8] for s in (0, 4, 8, 12)], axis=1)
    np.testing.assert_array_equal(cut, reference)
    np.testing.assert_array_equal(windows.cut_windows(records, windowing), reference)
    probs = rng.random((3, 4, 5))
    np.testing.assert_array_equal(windows.aggregate(probs, "max"),
                                  [[max(p[w, k] for w in range(4)) for k in range(5)]
                                   for p in probs])
    np.testing.assert_allclose(windows.aggregate(probs, "mean"), probs.sum(axis=1) / 4)
    with pytest.raises(ValueError, match="unknown window aggregation 'median'"):
        windows.aggregate(probs, "median")


def test_random_crops_are_slices_within_bounds_and_follow_the_generator():
    records = np.arange(3 * 1000, dtype=np.float32).reshape(3, 1000, 1) * np.ones((1, 1, 2))
    crops = windows.random_crops(records, 250, np.random.default_rng(5))
    assert crops.shape == (3, 250, 2)
    starts = crops[:, 0, 0] - records[:, 0, 0]
    assert ((starts >= 0) & (starts <= 750)).all()
    for row, start in enumerate(starts.astype(int)):
        np.testing.assert_array_equal(crops[row], records[row, start:start + 250])
    again = windows.random_crops(records, 250, np.random.default_rng(5))
    np.testing.assert_array_equal(crops, again)
    other = windows.random_crops(records, 250, np.random.default_rng(6))
    assert not np.array_equal(crops, other)
    with pytest.raises(ValueError, match="shorter than the 1001-sample window"):
        windows.random_crops(records, 1001, np.random.default_rng(0))


def test_crops_config_and_its_validation():
    config = ptbxl_benchmark.get_config("superdiagnostic,crops")
    config_lib.validate_config(config)
    assert config.input.seq_len == 250
    assert tuple(config.model.patch_lens) == config_lib.PATCH_LENS_16
    assert ptbxl_benchmark.get_config("form,resnet,500hz,crops").input.seq_len == 1250
    assert windows.from_config(ptbxl_benchmark.get_config("superdiagnostic")) is None
    for field, value, message in (
            ("crop_seconds", -1.0, "crop_seconds=-1.0 must be 0"),
            ("eval_stride_seconds", 0.0, "eval_stride_seconds=0.0 must be > 0"),
            ("eval_stride_seconds", 1.234, "1.234 is 123.4 samples"),
            ("eval_aggregation", "median", "eval_aggregation='median' must be one of")):
        bad = ptbxl_benchmark.get_config("superdiagnostic,crops")
        bad.input[field] = value
        with pytest.raises(ValueError, match=message):
            config_lib.validate_config(bad)
