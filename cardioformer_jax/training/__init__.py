"""Training: the loop and its steps, checkpoints, SWA, early stopping, sharding, logging."""
