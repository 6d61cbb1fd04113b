"""TFDS builders for the ECG datasets of Cardioformer (docs/data.md).

Each is a TFDS dataset folder (``<name>/<name>_dataset_builder.py``, class ``Builder``);
importing ``tfds_builders.<name>`` registers it.
"""
