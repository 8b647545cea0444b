"""Helpers the tests import; the fixtures built on them are in ``tests/conftest.py``."""
