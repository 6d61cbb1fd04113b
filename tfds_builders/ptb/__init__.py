"""PTB Diagnostic ECG Database v1.0.0; importing this package registers the `ptb` TFDS builder."""

# Relative on purpose: under `tfds build tfds_builders/ptb` this package is imported as
# `ptb`, and an absolute import would register the builder a second time.
from .ptb_dataset_builder import Builder

__all__ = ["Builder"]
