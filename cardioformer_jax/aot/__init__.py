"""Ahead-of-time compiles for accelerators not present: ``python -m cardioformer_jax.aot``."""
