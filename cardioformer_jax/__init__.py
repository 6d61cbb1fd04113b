"""Cardioformer in JAX/Flax NNX: multi-granularity transformer for ECG classification."""

__version__ = "0.1.0"
