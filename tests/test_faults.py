"""Faults on purpose: a database outage (stale-if-error) and a Redis killed, paused or cut off."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.helpers.app import (
    ACME_ID,
    CountingLoader,
    FakeTimer,
    build_app,
    need_service,
    update_tenant_in,
)
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

PG_URL = os.environ.get(
    "TENANT_CACHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def outage() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when the database refuses connections."""
    return sa.exc.OperationalError(
        "SELECT tenants.id FROM tenants", {}, ConnectionRefusedError("database is down")
    )


def figures(what: str, **values: Any) -> None:
    shown = " ".join(
        f"{k}={v:.3f}s" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"FAULT-FIGURES: {what}: {shown}")


def get(app: Flask, slug: str) -> Any:
    return app.test_client().get("/whoami", headers={"X-Tenant-ID": slug})


def loader_of(app: Flask) -> CountingLoader:
    result: CountingLoader = app.extensions["test"]["loader"]
    return result


def with_fake_timer(app: Flask) -> FakeTimer:
    """Put both resolvers of ``app`` on a clock the test moves (the injected timer)."""
    timer = FakeTimer()
    for resolver in app.extensions["tenant_cache"].resolvers.values():
        resolver._timer = timer
    return timer


# -- a database outage ------------------------------------------------------------------------


class DatabaseOutage:
    """An app whose tenant entries live 1 s and are served 60 s stale while the loader fails."""

    def __init__(self, version: str, stale_if_error: float = 60) -> None:
        self.version = version
        self.app = build_app(
            TENANT_CACHE_USE_V2=version == "v2",
            TENANT_CACHE_TTL=1,
            TENANT_CACHE_STALE_IF_ERROR=stale_if_error,
        )
        self.timer = with_fake_timer(self.app)
        self.loader = loader_of(self.app)

    def start(self) -> None:
        self.loader.fail = outage()

    def end(self) -> None:
        self.loader.fail = None

    def load(self) -> dict[str, Any]:
        result: dict[str, Any] = stats(self.app)[self.version]["load"]
        return result

    def resolver_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = stats(self.app)[self.version]
        return result


@pytest.fixture(params=["v2", "v1"])
def db_outage(request: pytest.FixtureRequest) -> DatabaseOutage:
    return DatabaseOutage(request.param)


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.data
    assert response.is_json
    assert response.json["error"] == "tenant_lookup_failed"
    assert response.headers["Retry-After"] == "1"


def test_an_expired_tenant_is_served_stale_while_the_loader_fails(
    db_outage: DatabaseOutage,
) -> None:
    assert get(db_outage.app, "acme").json["version"] == db_outage.version
    db_outage.timer.advance(2)  # past the TTL
    db_outage.start()
    for served in (1, 2, 3):
        response = get(db_outage.app, "acme")
        assert response.status_code == 200, response.data
        assert response.json["name"] == "Acme Corp"
        assert db_outage.load()["stale_serves"] == served
    load = db_outage.load()
    assert load["load_errors"] == 3
    assert load["loads"] == 1
    assert len(db_outage.loader.calls) == 4  # every stale serve tried the loader first


def test_beyond_the_stale_window_it_is_503_never_404(db_outage: DatabaseOutage) -> None:
    get(db_outage.app, "acme")  # cached at 1000, expires at 1001, stale until 1061
    db_outage.start()
    db_outage.timer.advance(60.5)
    assert get(db_outage.app, "acme").status_code == 200
    db_outage.timer.advance(0.5)
    assert_unavailable(get(db_outage.app, "acme"))
    assert db_outage.load()["stale_serves"] == 1
    assert db_outage.resolver_stats()["negative_entries"] == 0
    db_outage.end()
    assert get(db_outage.app, "acme").status_code == 200  # the error left no "not found"


def test_an_unknown_tenant_during_the_outage_is_503_and_not_cached(
    db_outage: DatabaseOutage,
) -> None:
    db_outage.start()
    for _ in range(2):
        assert_unavailable(get(db_outage.app, "no-such-tenant"))
    assert db_outage.resolver_stats()["negative_entries"] == 0
    calls = len(db_outage.loader.calls)
    assert calls == 2  # no negative entry: each request asked the loader
    db_outage.end()
    assert get(db_outage.app, "no-such-tenant").status_code == 404
    assert len(db_outage.loader.calls) == calls + 1  # looked up again once it was back
    assert get(db_outage.app, "no-such-tenant").status_code == 404
    assert len(db_outage.loader.calls) == calls + 1  # and now cached as not found


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_without_stale_if_error_an_expired_tenant_is_503(version: str) -> None:
    fault = DatabaseOutage(version, stale_if_error=0)
    assert get(fault.app, "acme").status_code == 200
    fault.start()
    assert get(fault.app, "acme").status_code == 200  # still fresh: no loader call
    fault.timer.advance(1)
    assert_unavailable(get(fault.app, "acme"))
    assert fault.load()["stale_serves"] == 0
    assert fault.load()["load_errors"] == 1


def test_an_invalidated_tenant_is_never_served_stale(db_outage: DatabaseOutage) -> None:
    get(db_outage.app, "acme")
    db_outage.timer.advance(2)
    db_outage.start()
    assert get(db_outage.app, "acme").status_code == 200  # stale, before the invalidation
    with db_outage.app.app_context():
        db_outage.app.extensions["test"]["ext"].invalidate(str(ACME_ID))
    assert_unavailable(get(db_outage.app, "acme"))
    assert db_outage.load()["stale_serves"] == 1


def test_an_invalidation_during_the_outage_drops_a_fresh_entry_too(
    db_outage: DatabaseOutage,
) -> None:
    get(db_outage.app, "acme")
    db_outage.start()
    with db_outage.app.app_context():
        db_outage.app.extensions["test"]["ext"].invalidate("acme")
    assert_unavailable(get(db_outage.app, "acme"))  # not fresh, not stale: gone
    assert db_outage.load()["stale_serves"] == 0


def test_fresh_loads_resume_by_themselves_after_the_outage(db_outage: DatabaseOutage) -> None:
    get(db_outage.app, "acme")
    db_outage.timer.advance(2)
    db_outage.start()
    assert get(db_outage.app, "acme").json["name"] == "Acme Corp"
    update_tenant_in(
        db_outage.app, ACME_ID, name="Acme Renamed"
    )  # while the resolver cannot see it
    assert get(db_outage.app, "acme").json["name"] == "Acme Corp"
    assert db_outage.load()["stale_serves"] == 2
    db_outage.end()
    assert get(db_outage.app, "acme").json["name"] == "Acme Renamed"
    for _ in range(3):
        assert get(db_outage.app, "acme").json["name"] == "Acme Renamed"
    load = db_outage.load()
    assert load["stale_serves"] == 2  # stopped growing
    assert load["loads"] == 2
    assert load["load_errors"] == 2


# -- a real PostgreSQL outage -----------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[tuple[sa.Engine, str, str]]:
    """A database of this test's own (its outage must not hurt other tests), dropped after."""
    name = f"tc_faults_{uuid.uuid4().hex[:12]}"
    admin_url = sa.make_url(PG_URL).set(database="postgres")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        need_service("PostgreSQL", str(exc))
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield admin, name, url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def set_connections(admin: sa.Engine, name: str, *, allowed: bool) -> None:
    """Open or close ``name`` to new connections; closing also ends every open one."""
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )


@pytest.mark.postgres
def test_a_real_postgresql_outage_is_served_stale_or_503(
    pg_database: tuple[sa.Engine, str, str],
) -> None:
    admin, name, url = pg_database
    app = build_app(database_uri=url, TENANT_CACHE_TTL=1, TENANT_CACHE_STALE_IF_ERROR=60)
    try:
        timer = with_fake_timer(app)
        assert get(app, "acme").status_code == 200  # a pooled connection stays open
        timer.advance(2)
        set_connections(admin, name, allowed=False)
        during = [get(app, slug) for slug in ("acme", "globex", "acme", "acme.test", "nobody")]
        statuses = [r.status_code for r in during]
        # acme.test is acme's domain: the entry its load by slug stored serves it stale too.
        assert statuses == [200, 503, 200, 200, 503]
        assert during[0].json["name"] == "Acme Corp"
        timer.advance(100)  # beyond the stale window
        late = get(app, "acme").status_code
        assert late == 503
        load = stats(app)["v2"]["load"]
        assert load["stale_serves"] == 3  # acme twice, acme.test once
        assert load["load_errors"] == 6  # the real driver errors, each one counted
        assert stats(app)["v2"]["negative_entries"] == 0
        figures(
            "postgresql-outage",
            requests=len(during) + 1,
            failed=sum(s not in (200, 503) for s in [*statuses, late]),
            stale=statuses.count(200),
            unavailable=statuses.count(503) + 1,
        )
        set_connections(admin, name, allowed=True)
        update_tenant_in(app, ACME_ID, name="Acme After The Outage")
        assert get(app, "acme").json["name"] == "Acme After The Outage"
        assert get(app, "globex").status_code == 200
        assert get(app, "nobody").status_code == 404
        assert stats(app)["v2"]["load"]["stale_serves"] == 3  # acme twice, acme.test once
    finally:
        with app.app_context():
            app.extensions["test"]["db"].engine.dispose()


# -- Redis faults under steady traffic --------------------------------------------------------

#: Tenants beyond the ``SEED`` rows, the same in every app, for lookups that miss L1.
EXTRA = [(uuid.uuid5(ACME_ID, f"extra-{i}"), f"extra-{i:04d}") for i in range(1200)]
TRAFFIC_EXTRA, PROBE_EXTRA = EXTRA[:800], EXTRA[800:]
#: Cached tenants the traffic asks for (initech is left to the invalidation checks).
TRAFFIC_CACHED = ["acme", "globex"]
MAX_REQUESTS = 6000


def seed_extra(app: Flask) -> None:
    with app.app_context():
        db, model = app.extensions["test"]["db"], app.extensions["test"]["model"]
        db.session.add_all(model(id=i, slug=s, name=s.title()) for i, s in EXTRA)
        db.session.commit()
        db.session.remove()


@pytest.fixture
def make_app(private_redis: PrivateRedis, redis_apps: Callable[..., Flask]) -> Callable[..., Flask]:
    """Apps on the private Redis, with the extra tenants; their subscribers stop first."""

    def make(**config: Any) -> Flask:
        app = redis_apps(private_redis.config, **config)
        seed_extra(app)
        return app

    return make


def l2_errors(app: Flask) -> dict[str, int]:
    """Each resolver's L2 errors (the traffic apps split tenants between v1 and v2)."""
    data = stats(app)
    return {v: data[v]["l2"]["l2_errors"] for v in ("v1", "v2")}


class Traffic:
    """A thread sending requests to ``app``: every other one a cached tenant, else a new one."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.results: list[tuple[float, int | str]] = []
        #: The longest a request took, in seconds.
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        """Start the traffic and wait until it is under way (20 requests)."""
        self._thread.start()
        wait_for(lambda: self.count() >= 20, what="traffic")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        client = self.app.test_client()
        fresh = itertools.cycle(slug for _, slug in TRAFFIC_EXTRA)
        cached = itertools.cycle(TRAFFIC_CACHED)
        for i in range(MAX_REQUESTS):
            if self._stop.is_set():
                return
            slug = next(cached) if i % 2 else next(fresh)
            started = time.monotonic()
            try:
                status: int | str = client.get("/whoami", headers={"X-Tenant-ID": slug}).status_code
            except Exception as exc:  # a 500 propagated by TESTING: a failure, recorded
                status = repr(exc)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.results.append((started, status))
            time.sleep(0.002)

    def count(self, since: float = 0.0) -> int:
        return sum(started >= since for started, _ in list(self.results))

    def between(self, start: float, end: float) -> list[int | str]:
        return [status for started, status in list(self.results) if start <= started < end]

    def failures(self) -> list[int | str]:
        return [status for _, status in self.results if status != 200]

    def figures(self, what: str, start: float, end: float, **more: Any) -> list[int | str]:
        """Print the requests (and failures) from ``start`` to ``end`` and in all; return those."""
        during = self.between(start, end)
        figures(
            what,
            requests_during_fault=len(during),
            failed_during_fault=sum(s != 200 for s in during),
            requests_total=len(self.results),
            failed_total=len(self.failures()),
            **more,
        )
        return during


def l2_serves_again(app: Flask, peer: Flask) -> None:
    """Wait until a tenant ``app`` loads is read from L2 by ``peer`` (not its own database)."""
    probes = iter(PROBE_EXTRA)

    def shared() -> bool:
        slug = next(probes)[1]
        before = stats(peer)["v2"]["l2"]["l2_hits"]
        assert get(app, slug).status_code == 200
        calls = len(loader_of(peer).calls)
        assert get(peer, slug).status_code == 200
        return (
            stats(peer)["v2"]["l2"]["l2_hits"] == before + 1 and len(loader_of(peer).calls) == calls
        )

    wait_for(shared, timeout=8, what="L2 to serve again")


@pytest.mark.redis
def test_redis_killed_and_restarted_under_traffic(
    make_app: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app, peer = make_app(TENANT_CACHE_V2_PERCENT=50), make_app()
    listening(app, peer)
    with Traffic(app) as traffic:
        killed = time.monotonic()
        private_redis.kill()
        wait_for(lambda: stats(app)["redis"]["disconnects"] >= 1, what="the disconnect")
        wait_for(lambda: all(l2_errors(app).values()), what="L2 errors in both resolvers")
        time.sleep(0.5)  # traffic served around the dead Redis
        restarted = time.monotonic()
        private_redis.start()
        wait_for(lambda: stats(app)["redis"]["resubscribes"] >= 1, what="the resubscription")
        resubscribed = time.monotonic()
        wait_for(lambda: traffic.count(since=resubscribed) >= 20, what="traffic after")
    during = traffic.figures(
        "redis-kill-restart",
        killed,
        resubscribed,
        outage=restarted - killed,
        resubscribe_after_restart=resubscribed - restarted,
    )
    assert len(during) >= 20
    assert traffic.failures() == []
    redis_stats = stats(app)["redis"]
    assert redis_stats["errors"] >= 1
    assert redis_stats["disconnects"] >= 1
    assert redis_stats["resubscribes"] >= 1
    assert all(l2_errors(app).values())
    figures("redis-kill-restart", l2_errors=l2_errors(app), bus=redis_stats)
    wait_for(lambda: stats(peer)["redis"]["resubscribes"] >= 1, what="the peer's resubscribe")
    l2_serves_again(app, peer)


@pytest.mark.redis
def test_redis_paused_under_traffic_costs_timeouts_not_failures(
    make_app: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app = make_app(TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.1, TENANT_CACHE_V2_PERCENT=50)
    peer = make_app(TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.1)
    listening(app, peer)
    with Traffic(app) as traffic:
        paused = time.monotonic()
        private_redis.pause()
        try:
            wait_for(lambda: all(l2_errors(app).values()), what="L2 errors in both resolvers")
            time.sleep(0.5)  # traffic served around the silent Redis
        finally:
            private_redis.resume()
        resumed = time.monotonic()
        wait_for(lambda: traffic.count(since=resumed) >= 20, what="traffic after")
    during = traffic.figures(
        "redis-pause",
        paused,
        resumed,
        pause=resumed - paused,
        slowest_request=traffic.slowest,
    )
    assert len(during) >= 20
    assert traffic.failures() == []
    assert stats(app)["redis"]["errors"] >= 1
    assert all(l2_errors(app).values())
    figures("redis-pause", l2_errors=l2_errors(app), bus=stats(app)["redis"])
    l2_serves_again(app, peer)


@pytest.mark.redis
def test_a_dropped_subscription_that_missed_messages_flushes_l1_and_the_bus_carries_on(
    make_app: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    import redis

    app, peer = make_app(), make_app()
    listening(app, peer)
    # Served after the first subscribe, which flushes too (nothing was heard before it).
    for slug in ("acme", "globex", "initech"):
        assert get(peer, slug).status_code == 200
    assert stats(peer)["v2"]["entry_count"] == 3
    app_flushes = stats(app)["v2"]["invalidations"]
    admin = redis.Redis.from_url(private_redis.url, socket_timeout=2)
    try:
        with Traffic(app) as traffic:
            dropped = time.monotonic()
            admin.incr("{tenant-cache}:seq")  # a message published while they reconnect
            assert admin.client_kill_filter(_type="pubsub") == 2  # both subscribers
            wait_for(lambda: stats(peer)["redis"]["resubscribes"] >= 1, what="a resubscription")
            wait_for(lambda: stats(app)["redis"]["resubscribes"] >= 1, what="a resubscription")
            resubscribed = time.monotonic()
            # The peer has no traffic: only the flush on resubscribe empties it.
            wait_for(lambda: stats(peer)["v2"]["entry_count"] == 0, what="the L1 flush")
            wait_for(
                lambda: stats(app)["v2"]["invalidations"] > app_flushes, what="the app's flush"
            )
            wait_for(lambda: traffic.count(since=resubscribed) >= 20, what="traffic after")
    finally:
        admin.close()
    traffic.figures(
        "redis-pubsub-drop", dropped, resubscribed, resubscribe_after_drop=resubscribed - dropped
    )
    assert traffic.failures() == []
    for node in (app, peer):
        bus_stats = stats(node)["redis"]
        assert bus_stats["disconnects"] >= 1
        assert bus_stats["resubscribes"] >= 1
    # An invalidation published after the drop reaches the peer.
    assert get(peer, "initech").status_code == 200
    received = stats(peer)["redis"]["received"]
    with app.app_context():
        app.extensions["test"]["ext"].invalidate("initech")
    wait_for(lambda: stats(peer)["redis"]["received"] > received, what="the invalidation")
    misses = stats(peer)["v2"]["misses"]
    assert get(peer, "initech").status_code == 200
    assert stats(peer)["v2"]["misses"] == misses + 1  # dropped from the peer's L1
    l2_serves_again(app, peer)
