"""Optional fast kernels for the model; each has a plain JAX equivalent (docs/model.md)."""
