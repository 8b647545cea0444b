"""The pytest plugin (``pytest11`` entry point): fixtures only, inert until a test uses one."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from .testing import FakeClock, InMemoryTenantLoader, LoaderCalls, TenantClient

# The package is imported inside the fixtures, not here: every pytest run in an environment
# where it is installed loads this module.


@pytest.fixture
def tenant_loader() -> InMemoryTenantLoader:
    """An empty :class:`~flask_tenant_cache.testing.InMemoryTenantLoader`."""
    from .testing import InMemoryTenantLoader

    return InMemoryTenantLoader()


@pytest.fixture
def tenant_clock() -> FakeClock:
    """A :class:`~flask_tenant_cache.testing.FakeClock` to give ``TenantCache(timer=...)``."""
    from .testing import FakeClock

    return FakeClock()


@pytest.fixture
def tenant_client(app: Flask) -> TenantClient:
    """A :class:`~flask_tenant_cache.testing.TenantClient` for the ``app`` fixture (yours, or
    pytest-flask's convention)."""
    from .testing import TenantClient

    return TenantClient(app, app.response_class, use_cookies=True)


@pytest.fixture
def tenant_loader_calls(app: Flask) -> Callable[[], AbstractContextManager[LoaderCalls]]:
    """``with tenant_loader_calls() as calls:`` records the ``app`` fixture's loader calls."""
    from .testing import loader_calls

    def record() -> Any:
        return loader_calls(app)

    return record
