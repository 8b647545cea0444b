"""Helpers the tests import; the fixtures built on them are in ``tests/conftest.py``."""

import pytest

#: For the tests whose point is a fork while other threads run (and hold locks): Python 3.12+
#: warns that such a child may deadlock, which is the case these tests show it does not.
forks_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)
