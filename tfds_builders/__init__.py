"""TFDS builders for the three ECG datasets of Cardioformer (PTB-XL, PTB, MIMIC-IV-ECG).

Each dataset is a TFDS "dataset folder" (`<name>/<name>_dataset_builder.py` with a class
`Builder`), so both `tfds build tfds_builders/<name>` and
`python -m cardioformer_jax.build_dataset <name>` find it. Importing `tfds_builders.<name>`
registers the builder with TFDS (needed by `tfds.builder("<name>")`).
"""
