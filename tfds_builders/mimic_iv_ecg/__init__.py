"""MIMIC-IV-ECG v1.0; importing this package registers the `mimic_iv_ecg` TFDS builder."""

# Relative on purpose: under `tfds build tfds_builders/mimic_iv_ecg` this package is imported as
# `mimic_iv_ecg`, and an absolute import would register the builder a second time.
from .mimic_iv_ecg_dataset_builder import Builder

__all__ = ["Builder"]
