"""Ahead-of-time compiles for accelerators this machine does not have (docs/scaling.md).

The command is ``python -m cardioformer_jax.aot``.
"""
