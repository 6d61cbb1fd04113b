"""PhysioNet/CinC Challenge 2021; importing this package registers the `cinc2021` builder."""

# Relative on purpose: under `tfds build tfds_builders/cinc2021` this package is imported as
# `cinc2021`, and an absolute import would register the builder a second time.
from .cinc2021_dataset_builder import Builder

__all__ = ["Builder"]
