"""ml_collections config files: `--config=configs/NAME.py` (each exposes `get_config()`)."""
