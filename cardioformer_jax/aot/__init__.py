"""Ahead-of-time compiles for accelerators this machine does not have (docs/scaling.md).

`targets` describes a TPU slice or GPU node (`targets.parse("tpu:v5p:2x2x1")`);
`analysis.report` compiles the training programs for it and says what the compiler found.
The command is ``python -m cardioformer_jax.aot``.
"""
