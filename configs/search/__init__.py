"""Search spaces of `python -m cardioformer_jax.tune` (docs/tuning.md): one file per
architecture, each defining ``search_space(trial, config)``."""
