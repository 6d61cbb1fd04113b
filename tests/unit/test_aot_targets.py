"""Target names and the reading of compiled HLO (`cardioformer_jax.aot`); the compiles
themselves are in integration/test_aot.py."""

import pytest

from cardioformer_jax.aot import analysis, targets
from cardioformer_jax.ops import resolve_kernels

pytestmark = pytest.mark.usefixtures("optimized_compilation")


@pytest.mark.parametrize("name, message", [
    ("tpu:v9:2x2", "unknown target"),
    ("gpu:a100:8", "unknown target"),
    ("tpu:v5e:2by2", "must look like"),
    ("gpu:h100:0", "positive integer"),
    ("gpu:h100:2x0", "positive integer"),
    ("gpu:h100:8,slices=2", "TPU targets only"),
    ("tpu:v5e:2x2,slices=0", "unknown option"),
    ("tpu:v5e:2x2,chips=4", "unknown option"),
])
def test_bad_target_names_are_refused_with_examples(name, message):
    with pytest.raises(ValueError, match=message):
        targets.parse(name)


def test_auto_kernels_follow_the_compile_target_not_the_host():
    assert resolve_kernels("auto", "tpu") == "xla"
    assert resolve_kernels("auto", "gpu") == "xla"
    assert resolve_kernels("auto", "cpu") == "cpu"
    assert resolve_kernels("cpu", "tpu") == "cpu"  # an explicit choice is kept


HLO = """
%body (p: (s32[], bf16[4,128])) -> (s32[], bf16[4,128]) {
  %ag = bf16[64,256]{1,0} all-gather(%w), channel_id=1, replica_groups=[1,4]<=[4], dimensions={0}
  %ags = (bf16[16,256]{1,0}, bf16[64,256]{1,0}) all-gather-start(%w2), channel_id=2
  %agd = bf16[64,256]{1,0} all-gather-done(%ags)
}
ENTRY %main {
  %ar = (f32[1000]{0}, f32[24]{0}) all-reduce(%g0, %g1), channel_id=3, to_apply=%add
  %ars = f32[10]{0} all-reduce-start(%g2), channel_id=4, to_apply=%add
  %ard = f32[10]{0} all-reduce-done(%ars)
  %rs = bf16[8,32]{1,0} reduce-scatter(%g3), channel_id=5, dimensions={0}, to_apply=%add
  %cp = (f32[2,2]{1,0}, f32[2,2]{1,0}, u32[], u32[]) collective-permute-start(%x)
  %fusion = f32[3]{0} fusion(%all-reduce.1), kind=kLoop, calls=%fused_all-reduce
  ROOT %t = (s32[]) tuple(%c)
}
"""


def test_collectives_are_counted_by_kind_with_the_bytes_they_deliver():
    found = analysis.collectives(HLO)
    assert found == {
        # 64*256*2 bytes twice: the synchronous one, and the async start's result.
        "all-gather": {"count": 2, "bytes": 2 * 64 * 256 * 2},
        # A tuple all-reduce delivers all its results; the async pair counts once.
        "all-reduce": {"count": 2, "bytes": (1000 + 24) * 4 + 10 * 4},
        "reduce-scatter": {"count": 1, "bytes": 8 * 32 * 2},
        "collective-permute": {"count": 1, "bytes": 2 * 2 * 4},
    }
    # An operand named after a collective (a fusion's input) is no collective.
    assert "fusion" not in found


def test_memory_counts_donated_buffers_once_and_says_whether_it_fits():
    class Stats:
        argument_size_in_bytes = 100
        output_size_in_bytes = 90
        alias_size_in_bytes = 80
        temp_size_in_bytes = 50
        generated_code_size_in_bytes = 10

    class Compiled:
        def memory_analysis(self):
            return Stats()

    fitting = analysis.memory(Compiled(), capacity=170)
    assert fitting["bytes"]["total"] == 100 + 90 - 80 + 50 + 10
    assert fitting["fits"] and analysis.memory(Compiled(), capacity=169)["fits"] is False


@pytest.mark.parametrize("threshold", [0, 7, 8, 9, 63, 64, 100, 1000, 5000, 9999])
def test_the_batch_search_finds_the_largest_fitting_multiple(threshold):
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= threshold

    found = analysis.largest_fitting(fits, start=64, granularity=8, limit=4096)
    assert found == min(threshold // 8 * 8, 4096)
    assert len(tried) == len(set(tried))  # each size compiled once
    assert all(b % 8 == 0 and b <= 4096 for b in tried)


def test_a_crops_config_evaluates_whole_records():
    import jax

    from cardioformer_jax.core import sharding
    from configs import ptbxl_benchmark

    mesh = sharding.create_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1])
    for argument, record, window in (("superdiagnostic,crops", 1000, 250),
                                     ("superdiagnostic,crops,500hz", 5000, 1250)):
        config = ptbxl_benchmark.get_config(argument)
        train = analysis.abstract_batch(config, 4, mesh)
        evaluation = analysis.abstract_batch(config, 4, mesh, evaluation=True)
        assert train["signal"].shape == (4, window, 12)
        assert evaluation["signal"].shape == (4, record, 12)
    whole = ptbxl_benchmark.get_config("superdiagnostic")
    assert analysis.abstract_batch(whole, 4, mesh, evaluation=True)["signal"].shape == (
        4, 1000, 12)
