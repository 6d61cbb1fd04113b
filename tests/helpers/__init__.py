"""Code the tests share; imported as ``from tests.helpers import ecg_fixtures as fx``.

- ``ecg_fixtures``: small hand-made PhysioNet layouts (PTB-XL, PTB, MIMIC-IV-ECG) and the
  paths of the real records in ``tests/fixtures/``.
- ``challenge_fixtures``: the real CinC 2021 records of ``tests/fixtures/cinc2021/`` and
  Challenge-format records written from them (quirky gains, record lines, leads).
- ``tiny_models``: the few small model sizes the tests use, defined once.
- ``run_fixtures``: tiny run directories made by the training code.
- ``train_fixtures``: the tiny training config (also a ``--config`` file for the commands).
- ``tiny_search``: a learning-rate-only search space for the tuner's tests (``--search``).
- ``fake_gcs``: a ``gs://`` bucket in a local directory, for epath, Orbax and TensorStore
  alike (URL run folders without a network).
- ``numpy_reference``: the PyTorch reference's ``state_dict`` layout and an independent
  float64 NumPy forward pass of it.

Kept free of heavy imports: ``train_fixtures`` is loaded by subprocesses as a config file.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root (the clone): the working directory of the commands tests run."""
