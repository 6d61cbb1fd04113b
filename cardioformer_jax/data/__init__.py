"""Data: reading and preparing WFDB records, the Grain input pipeline, the synthetic twin."""
