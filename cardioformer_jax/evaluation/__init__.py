"""Evaluation: metrics, record-level analysis, and trained runs loaded for inference."""
