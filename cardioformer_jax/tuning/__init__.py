"""Hyper-parameter tuning with Optuna (docs/tuning.md; command: `cardioformer_jax.tune`)."""
