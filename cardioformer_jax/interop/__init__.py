"""Interoperation with the reference's PyTorch code: checkpoint import and a re-creation."""
