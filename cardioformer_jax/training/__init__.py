"""Training: the loop and its jitted steps, checkpoints, SWA, early stopping, multi-host start."""
