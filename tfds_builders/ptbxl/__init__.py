"""PTB-XL v1.0.3; importing this package registers the `ptbxl` TFDS builder."""

# Relative on purpose: under `tfds build tfds_builders/ptbxl` this package is imported as
# `ptbxl`, and an absolute import would register the builder a second time.
from .ptbxl_dataset_builder import Builder

__all__ = ["Builder"]
