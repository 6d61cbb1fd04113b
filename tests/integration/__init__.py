"""Tests of the pieces together: dataset builds, training runs, checkpoints, commands in
subprocesses, several devices or processes, PyTorch parity (see tests/README.md)."""
