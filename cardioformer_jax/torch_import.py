"""Command line: import a reference PyTorch checkpoint (docs/pytorch_checkpoints.md)."""

from __future__ import annotations

from cardioformer_jax.interop.torch_import import convert


def _main() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    from cardioformer_jax import config_lib, models
    from cardioformer_jax.core import paths

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Config file exposing get_config(), e.g. configs/ptbxl.py; its "
        "`model` section and input sizes (`input.seq_len`, `input.num_channels`, "
        "`dataset.num_classes`) must match the checkpoint (override with --config.X=...).")
    checkpoint_flag = paths.DEFINE_path(
        "checkpoint", None, "Reference state_dict: .pth/.pt (needs the [torch] extra) or .npz.")
    out_flag = paths.DEFINE_path("out", None, "Directory for the Orbax checkpoint.")
    overwrite_flag = flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
    flags.mark_flags_as_required(["config", "checkpoint", "out"])

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        convert(models.network_config(config_flag.value), checkpoint_flag.value, out_flag.value,
                overwrite=overwrite_flag.value)

    app.run(main, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    _main()
