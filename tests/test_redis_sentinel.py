"""Two apps on a Sentinel set, through the sentinels' master client, across failovers."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest
from flask import Flask

from example_app.redis_deployments import sentinel_client
from tests.helpers.app import ACME_ID, update_tenant_in
from tests.helpers.deployments import SentinelSet, unique_prefix
from tests.helpers.redis_server import listening, stats, wait_for

pytestmark = pytest.mark.redis

TENANTS = ("acme", "globex", "initech")


class Load:
    """Threads that request every tenant of ``apps`` until stopped, keeping each status."""

    def __init__(self, apps: list[Flask], threads_per_app: int = 2) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(app,))
            for app in apps
            for _ in range(threads_per_app)
        ]

    def _run(self, app: Flask) -> None:
        client = app.test_client()
        for tenant in itertools.cycle(TENANTS):
            if self._stop.is_set():
                return
            response = client.get("/whoami", headers={"X-Tenant-ID": tenant})
            self.statuses.append(response.status_code)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def name_of(app: Flask) -> str:
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200, response.data
    name: str = response.json["name"]
    return name


@pytest.fixture
def sentinel_apps(
    redis_apps: Callable[..., Flask], sentinel_set: SentinelSet
) -> Callable[[], Flask]:
    """``make()``: an app (a process, as far as Redis can tell) on the Sentinel set.

    Each app has a database file of its own, as ``build_app`` gives by default. The in-memory
    SQLite it gave before is one connection that Flask-SQLAlchemy shares between threads: a
    load thread's session, ending, rolled back the test's pending rename of the tenant, which
    was lost (the test then waited in vain for the new name) or failed with "cannot commit -
    no transaction is active".
    """
    connect = sentinel_client(sentinel_set.sentinel_addresses, sentinel_set.name)
    prefix = unique_prefix()
    return lambda: redis_apps(
        redis=connect,
        TENANT_CACHE_REDIS_PREFIX=prefix,
    )


@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "kill -9"])
def test_failover_under_load_loses_no_request_and_no_invalidation(
    sentinel_apps: Callable[[], Flask], sentinel_set: SentinelSet, how: str
) -> None:
    first, second = sentinel_apps(), sentinel_apps()
    listening(first, second)
    with Load([first, second]) as load:
        if how == "kill -9":
            sentinel_set.kill_master()
        else:
            sentinel_set.failover()
        wait_for(lambda: len(load.statuses) > 50, what="requests after the failover")
        for round_ in range(5):
            name = f"Acme {how} {round_}"
            for app in (first, second):  # each app has its own database
                update_tenant_in(app, ACME_ID, name=name)
            with first.app_context():
                first.extensions["test"]["ext"].invalidate("acme")
            wait_for(
                lambda name=name: name_of(second) == name,  # type: ignore[misc]
                timeout=5.0,
                what=f"invalidation {round_}",
            )
    assert load.statuses.count(200) == len(load.statuses)
    assert stats(first)["redis"]["pending"] == 0
    # A process started now reads the current row, not an entry Redis kept from before.
    fresh = sentinel_apps()
    update_tenant_in(fresh, ACME_ID, name=name)
    assert name_of(fresh) == name
    assert stats(fresh)["v2"]["l2"]["l2_errors"] == 0
