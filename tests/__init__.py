"""The test suite (see tests/README.md): unit/, integration/, helpers/, fixtures/."""
