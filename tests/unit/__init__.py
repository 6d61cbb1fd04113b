"""Fast in-process tests of one piece of logic each (see tests/README.md)."""
