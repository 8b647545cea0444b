"""The rollout through apps and HTTP: live settings, providers, the kill switch, Redis."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

from flask_tenant_cache import (
    FlagContext,
    SQLAlchemyTenantLoader,
    TenantCache,
    current_resolver_version,
    current_rollout_decision,
    current_tenant,
)
from flask_tenant_cache.flags import rollout_bucket
from tests.helpers.app import ACME_ID, ADMIN_TOKEN, SEED, CountingLoader, make_model
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Each tenant alias with its cache key (whose bucket decides a percentage rollout).
ALIASES = {
    "slug:acme": {"X-Tenant-ID": "acme"},  # bucket 201
    "slug:globex": {"X-Tenant-ID": "globex"},  # bucket 2585
    "slug:initech": {"X-Tenant-ID": "initech"},  # bucket 3710
    "host:acme.test": {"Host": "acme.test"},  # bucket 9853
    f"uuid:{ACME_ID}": {"X-Tenant-ID": str(ACME_ID)},  # bucket 7508
}


def add_views(app: Flask) -> Flask:
    """A view that shows the request's rollout decision, and an exempt one."""

    @app.get("/decision")
    def decision() -> Any:
        d = current_rollout_decision()
        assert d is not None
        return jsonify(
            version=d.version,
            reason=d.reason,
            bucket=d.bucket,
            served_by=current_resolver_version(),
            slug=current_tenant.slug,
        )

    @app.get("/no-tenant")
    @app.extensions["tenant_cache"].ext.exempt
    def no_tenant() -> Any:
        return jsonify(decision=current_rollout_decision())

    return app


@pytest.fixture
def make_app(redis_apps: Callable[..., Flask]) -> Callable[..., Flask]:
    """``redis_apps`` with the decision view (the Redis config is optional)."""

    def make(redis_config: dict[str, Any] | None = None, **config: Any) -> Flask:
        return add_views(redis_apps(redis_config, **config))

    return make


def decide(app: Flask, headers: dict[str, str] | None = None) -> tuple[str, str, int | None]:
    response = app.test_client().get("/decision", headers=headers or ALIASES["slug:acme"])
    assert response.status_code == 200, response.data
    body = response.json
    assert body["served_by"] == body["version"]
    return body["version"], body["reason"], body["bucket"]


def set_rollout(app: Flask, body: Any, headers: dict[str, str] = ADMIN) -> Any:
    return app.test_client().post("/_tenant-cache/rollout", json=body, headers=headers)


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["tenant-cache", "rollout", *args])


def expected(key: str, percent: float, reason: str) -> tuple[str, str, int]:
    bucket = rollout_bucket(key)
    return ("v2" if bucket < percent * 100 else "v1", reason, bucket)


# -- live settings -------------------------------------------------------------------------


def test_use_v2_is_read_live(make_app: Any) -> None:
    app = make_app()
    assert decide(app) == ("v2", "config", None)
    app.config["TENANT_CACHE_USE_V2"] = False
    assert decide(app) == ("v1", "config", None)
    assert decide(app, ALIASES["slug:globex"]) == ("v1", "config", None)
    app.config["TENANT_CACHE_USE_V2"] = True
    assert decide(app) == ("v2", "config", None)
    body = app.test_client().get("/whoami", headers=ALIASES["slug:acme"]).json
    assert (body["slug"], body["version"]) == ("acme", "v2")


def test_v2_percent_is_read_live_and_sticky(make_app: Any) -> None:
    app = make_app()
    for percent in (30, 0, 100, 50, 2.5):
        app.config["TENANT_CACHE_V2_PERCENT"] = percent
        for key, headers in ALIASES.items():
            for _ in range(3):
                assert decide(app, headers) == expected(key, percent, "percentage"), key
    app.config["TENANT_CACHE_V2_PERCENT"] = 30
    # the buckets above really split the tenants at 30%
    assert decide(app, ALIASES["slug:acme"])[0] == "v2"
    assert decide(app, ALIASES["slug:initech"])[0] == "v1"
    app.config["TENANT_CACHE_V2_PERCENT"] = None
    assert decide(app, ALIASES["slug:initech"]) == ("v2", "config", None)


def test_no_decision_in_an_exempt_view(make_app: Any) -> None:
    app = make_app()
    decide(app)
    response = app.test_client().get("/no-tenant", headers=ALIASES["slug:acme"])
    assert response.json == {"decision": None}


# -- providers -----------------------------------------------------------------------------


def build_app_with_provider(pick: Callable[[FlagContext], Any], **config: Any) -> Flask:
    """Like ``build_app``, but the provider is registered with the decorator."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI="sqlite://",
        TENANT_CACHE_BASE_DOMAINS=["example.com"],
        TENANT_CACHE_ADMIN_TOKEN=ADMIN_TOKEN,
        **config,
    )
    db = SQLAlchemy(app)
    model = make_model(db)
    loader = CountingLoader(SQLAlchemyTenantLoader(db, model, active_column="active"))
    ext = TenantCache(loader=loader)
    assert ext.flag_provider_handler(pick) is pick
    ext.init_app(app)
    app.extensions["test"] = {"db": db, "model": model, "loader": loader, "ext": ext}
    with app.app_context():
        db.create_all()
        for tenant_id, slug, domain, name in SEED:
            db.session.add(model(id=tenant_id, slug=slug, domain=domain, name=name))
        db.session.commit()
    return add_views(app)


def test_flag_provider_handler_decides_each_request() -> None:
    asked: list[FlagContext] = []

    def pick(context: FlagContext) -> str:
        asked.append(context)
        if context.request.headers.get("X-Fail"):
            raise RuntimeError("flag service down")
        return "v1" if context.identifier.value == "acme" else "v2"

    app = build_app_with_provider(pick, TENANT_CACHE_USE_V2=True, TENANT_CACHE_V2_PERCENT=100)
    assert decide(app) == ("v1", "provider", None)
    assert decide(app, ALIASES["slug:globex"]) == ("v2", "provider", None)
    assert len(asked) == 2  # once per request
    assert asked[0].config is app.config
    assert asked[0].request.path == "/decision"
    assert asked[0].identifier.cache_key == "slug:acme"

    assert decide(app, {**ALIASES["slug:globex"], "X-Fail": "1"}) == ("v1", "provider-error", None)
    rollout = stats(app)["rollout"]
    assert (rollout["mode"], rollout["provider"], rollout["provider_errors"]) == (
        "provider",
        "pick",
        1,
    )

    assert set_rollout(app, {"override": "v2"}).status_code == 200
    assert decide(app) == ("v2", "override", None)
    assert len(asked) == 3  # not asked while overridden
    assert set_rollout(app, {"override": None}).status_code == 200
    assert decide(app) == ("v1", "provider", None)


def test_a_provider_answering_garbage_serves_v1() -> None:
    app = build_app_with_provider(lambda context: "v3")
    assert decide(app, ALIASES["slug:globex"]) == ("v1", "provider-error", None)
    assert stats(app)["rollout"]["provider_errors"] == 1


def test_flag_provider_passed_to_the_constructor(make_app: Any) -> None:
    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy(app)
    model = make_model(db)
    loader = SQLAlchemyTenantLoader(db, model, active_column="active")
    TenantCache(app, loader=loader, flag_provider=lambda context: "v1")
    add_views(app)
    with app.app_context():
        db.create_all()
        db.session.add(model(id=ACME_ID, slug="acme", domain=None, name="Acme"))
        db.session.commit()
    assert decide(app) == ("v1", "provider", None)


# -- the kill switch over HTTP -------------------------------------------------------------


def test_rollout_route_needs_admin_auth(make_app: Any) -> None:
    app = make_app()
    assert set_rollout(app, {"override": "v1"}, headers={}).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert set_rollout(app, {"override": "v1"}, headers=bad).status_code == 401
    closed = make_app(TENANT_CACHE_ADMIN_TOKEN=None)
    assert set_rollout(closed, {"override": "v1"}, headers=ADMIN).status_code == 403
    for each in (app, closed):
        assert decide(each) == ("v2", "config", None)
        assert stats(each)["rollout"]["override"] is None


def test_rollout_route_overrides_and_lifting_restores_the_settings(make_app: Any) -> None:
    app = make_app(TENANT_CACHE_V2_PERCENT=10)
    assert decide(app) == ("v2", "percentage", 201)
    assert decide(app, ALIASES["slug:globex"]) == ("v1", "percentage", 2585)

    response = set_rollout(app, {"override": "v1"})
    assert response.status_code == 200
    assert response.json == {"override": "v1", "scope": "process"}
    for headers in ALIASES.values():
        assert decide(app, headers) == ("v1", "override", None)

    assert set_rollout(app, {"override": "v2"}).json == {"override": "v2", "scope": "process"}
    for headers in ALIASES.values():
        assert decide(app, headers) == ("v2", "override", None)

    response = set_rollout(app, {"override": 50})
    assert response.json == {"override": 50.0, "scope": "process"}
    for key, headers in ALIASES.items():
        assert decide(app, headers) == expected(key, 50, "override")
    assert decide(app, ALIASES["slug:acme"])[0] == "v2"
    assert decide(app, ALIASES["host:acme.test"])[0] == "v1"
    rollout = stats(app)["rollout"]
    assert (rollout["mode"], rollout["override"], rollout["v2_percent"]) == ("override", 50.0, 10)

    assert set_rollout(app, {"override": "30%"}).json["override"] == 30.0
    assert decide(app, ALIASES["slug:globex"]) == ("v2", "override", 2585)

    response = set_rollout(app, {"override": None})
    assert response.json == {"override": None, "scope": "process"}
    assert app.config["TENANT_CACHE_V2_PERCENT"] == 10
    for key, headers in ALIASES.items():
        assert decide(app, headers) == expected(key, 10, "percentage")
    assert stats(app)["rollout"]["mode"] == "percentage"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (None, None),
        ("", "application/json"),
        ("{not json", "application/json"),
        ('{"override": "v1"}', "text/plain"),
        ("[]", "application/json"),
        ('"v1"', "application/json"),
        ("null", "application/json"),
        ("{}", "application/json"),
        ('{"override": "v1", "extra": 1}', "application/json"),
        ('{"value": "v1"}', "application/json"),
        ('{"override": "v3"}', "application/json"),
        ('{"override": true}', "application/json"),
        ('{"override": -1}', "application/json"),
        ('{"override": 101}', "application/json"),
        ('{"override": "abc"}', "application/json"),
        ('{"override": [50]}', "application/json"),
        ('{"override": {"v": 1}}', "application/json"),
        ('{"override": NaN}', "application/json"),
        ('{"override": Infinity}', "application/json"),
        ('{"override": 1e999}', "application/json"),
        ('{"override": 1' + "0" * 5000 + "}", "application/json"),
    ],
)
def test_malformed_rollout_bodies_are_400_json(
    make_app: Any, data: str | None, content_type: str | None
) -> None:
    app = make_app(TENANT_CACHE_USE_V2=False)
    response = app.test_client().post(
        "/_tenant-cache/rollout", data=data, content_type=content_type, headers=ADMIN
    )
    assert response.status_code == 400, response.data
    assert response.is_json
    assert response.json["error"] == "invalid_request"
    assert stats(app)["rollout"]["override"] is None
    assert decide(app) == ("v1", "config", None)


# -- the CLI -------------------------------------------------------------------------------


def test_cli_rollout_without_redis_changes_nothing_and_fails(make_app: Any) -> None:
    app = make_app(TENANT_CACHE_USE_V2=True)
    for args in (("v1",), ("30",), ("clear",), ()):
        result = cli(app, *args)
        assert result.exit_code == 1, result.output
        assert "TENANT_CACHE_REDIS_URL is not set" in result.output
    assert decide(app) == ("v2", "config", None)
    for bogus in ("bogus", "101", "-5", "v3"):
        result = cli(app, bogus)
        assert result.exit_code == 2, (bogus, result.output)


# -- stats ---------------------------------------------------------------------------------


def test_stats_show_the_rollout_and_requests_served_per_version(make_app: Any) -> None:
    app = make_app(TENANT_CACHE_SHADOW_PERCENT=0)
    for slug in ("acme", "acme", "globex", "initech", "acme"):
        decide(app, {"X-Tenant-ID": slug})
    app.config["TENANT_CACHE_USE_V2"] = False
    for slug in ("acme", "globex", "globex"):
        decide(app, {"X-Tenant-ID": slug})
    app.test_client().get("/no-tenant")  # exempt: served by neither
    rollout = stats(app)["rollout"]
    assert rollout["served"] == {"v1": 3, "v2": 5}
    assert (rollout["mode"], rollout["override"], rollout["use_v2"]) == ("config", None, False)
    assert rollout["provider"] is None

    set_rollout(app, {"override": "v2"})
    for _ in range(4):
        decide(app)
    over_http = app.test_client().get("/_tenant-cache/stats", headers=ADMIN).json["rollout"]
    assert over_http["served"] == {"v1": 3, "v2": 9}
    assert (over_http["mode"], over_http["override"], over_http["use_v2"]) == (
        "override",
        "v2",
        False,
    )


# -- with Redis ----------------------------------------------------------------------------


@pytest.mark.redis
def test_an_override_reaches_every_process_within_a_second(
    make_app: Any, shared_redis: Any
) -> None:
    a, b = make_app(shared_redis), make_app(shared_redis)
    listening(a, b, serve=decide)
    assert decide(b) == ("v2", "config", None)

    response = set_rollout(a, {"override": "v1"})
    assert response.json == {"override": "v1", "scope": "cluster"}
    assert decide(a) == ("v1", "override", None)
    wait_for(lambda: decide(b) == ("v1", "override", None), timeout=1.0, what="the override on B")
    key = f"{{{shared_redis['TENANT_CACHE_REDIS_PREFIX']}}}:rollout"
    assert json.loads(shared_redis["client"].get(key)) == "v1"

    response = set_rollout(b, {"override": 50})
    assert response.json == {"override": 50.0, "scope": "cluster"}
    wait_for(
        lambda: decide(a, ALIASES["host:acme.test"]) == expected("host:acme.test", 50, "override"),
        timeout=1.0,
        what="the percentage on A",
    )
    assert decide(a, ALIASES["slug:acme"]) == ("v2", "override", 201)

    result = cli(b, "clear")
    assert result.exit_code == 0, result.output
    assert "lifted (cluster)" in result.output
    wait_for(lambda: decide(a) == ("v2", "config", None), timeout=1.0, what="the lift on A")
    assert shared_redis["client"].get(key) is None
    assert stats(a)["rollout"]["override"] is None


@pytest.mark.redis
def test_a_new_process_picks_up_the_override_from_redis(make_app: Any, shared_redis: Any) -> None:
    a = make_app(shared_redis)
    result = cli(a, "v1")
    assert result.exit_code == 0, result.output
    assert "(cluster)" in result.output

    late = make_app(shared_redis)  # started after the override was set
    # Its first request already obeys it: the override is read when the subscriber starts,
    # not only once it has subscribed.
    assert decide(late) == ("v1", "override", None)
    assert stats(late)["rollout"]["override"] == "v1"
    assert stats(late)["rollout"]["mode"] == "override"


@pytest.mark.redis
def test_with_redis_down_the_override_applies_to_the_process(
    make_app: Any, private_redis: PrivateRedis
) -> None:
    app = make_app(private_redis.config, TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.2)
    private_redis.kill()
    assert decide(app) == ("v2", "config", None)

    response = set_rollout(app, {"override": "v1"})
    assert response.status_code == 200, response.data
    assert response.json == {"override": "v1", "scope": "process"}
    for headers in ALIASES.values():
        assert decide(app, headers) == ("v1", "override", None)

    # The CLI's process ends with the command: an override no other process got is an error.
    result = cli(app, "30")
    assert result.exit_code == 1, result.output
    assert "Redis is unreachable" in result.output
    response = set_rollout(app, {"override": 30})
    assert response.json == {"override": 30.0, "scope": "process"}
    assert decide(app, ALIASES["slug:initech"]) == ("v1", "override", 3710)
    assert decide(app, ALIASES["slug:acme"]) == ("v2", "override", 201)

    response = set_rollout(app, {"override": None})
    assert response.json == {"override": None, "scope": "process"}
    assert decide(app) == ("v2", "config", None)
    assert stats(app)["rollout"]["mode"] == "config"


@pytest.mark.redis
def test_an_override_set_during_an_outage_is_shared_when_redis_returns(
    make_app: Any, private_redis: PrivateRedis
) -> None:
    redis_config = private_redis.config
    app, peer = make_app(redis_config), make_app(redis_config)
    listening(app, peer, serve=decide)
    private_redis.kill()
    wait_for(lambda: stats(app)["redis"]["disconnects"] >= 1, what="the disconnect")
    assert set_rollout(app, {"override": "v1"}).json == {"override": "v1", "scope": "process"}
    errors = stats(app)["redis"]["errors"]
    assert errors >= 1  # the failed write is counted
    private_redis.start()
    # The kill switch thrown during the outage is not undone by the (empty) stored override:
    # it is the newer decision, so it is written to Redis and reaches the peer.
    wait_for(lambda: decide(peer) == ("v1", "override", None), what="the peer's override")
    assert decide(app) == ("v1", "override", None)


@pytest.mark.redis
def test_an_override_kept_during_a_stall_never_undoes_a_newer_one(
    make_app: Any, private_redis: PrivateRedis
) -> None:
    a = make_app(private_redis.config, TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.2)
    b = make_app(private_redis.config)
    listening(a, b, serve=decide)
    admin = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")  # A's write stalls; it listens on
    assert set_rollout(a, {"override": "v1"}).json == {"override": "v1", "scope": "process"}
    wait_for(lambda: admin.set("probe", 1), what="the pause to end")
    # Later, the operator rolls back on every process; A hears it.
    assert set_rollout(b, {"override": "v2"}).json == {"override": "v2", "scope": "cluster"}
    wait_for(lambda: decide(a) == ("v2", "override", None), what="the rollback on A")
    resubscribes = stats(a)["redis"]["resubscribes"]
    admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # A reconnects...
    wait_for(lambda: stats(a)["redis"]["resubscribes"] > resubscribes, what="A's resubscribe")
    key = f"{{{private_redis_prefix(a)}}}:rollout"
    # ...and its older override does not come back: not in Redis, not on any process.
    assert json.loads(admin.get(key)) == "v2"
    assert decide(a) == decide(b) == ("v2", "override", None)
    assert stats(a)["redis"]["rollout_superseded"] == 1
    admin.close()


def private_redis_prefix(app: Flask) -> str:
    prefix: str = app.config["TENANT_CACHE_REDIS_PREFIX"]
    return prefix


@pytest.mark.redis
def test_the_cli_shows_the_override_stored_in_redis(make_app: Any, shared_redis: Any) -> None:
    setter, other = make_app(shared_redis), make_app(shared_redis)
    assert cli(setter, "v1").exit_code == 0
    result = cli(other)  # a process that has served nothing yet, as a CLI is
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["override"] == "v1"
    assert shown["mode"] == "override"


def test_a_bad_live_percentage_reads_as_zero(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TENANT_CACHE_V2_PERCENT=0)
    assert decide(app)[0] == "v1"
    app.config["TENANT_CACHE_V2_PERCENT"] = "50"  # a string, set after init_app
    caplog.set_level(logging.ERROR, logger="flask_tenant_cache")
    for _ in range(3):
        # No 500, and no tenant moved to v2 by a typo: the percentage reads as 0.
        assert decide(app)[:2] == ("v1", "percentage")
    errors = [r for r in caplog.records if "TENANT_CACHE_V2_PERCENT" in r.getMessage()]
    assert len(errors) == 1  # logged once, not per request


def _serving_child(app: Flask, conn: Any) -> None:
    """A forked worker: report its decision, then how long the parent's override took."""
    try:
        conn.send(("ready", decide(app)))
        conn.recv()  # the parent has set the override
        started = time.monotonic()
        wait_for(lambda: decide(app)[0] == "v1", timeout=1.0, what="the override in the child")
        conn.send(("done", decide(app), time.monotonic() - started))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc), None))


@pytest.mark.redis
def test_the_kill_switch_reaches_another_process_within_a_second(
    make_app: Any, shared_redis: Any
) -> None:
    app = make_app(shared_redis)  # init_app here, then a fork: a worker of gunicorn --preload
    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe()
    child = context.Process(target=_serving_child, args=(app, child_conn))
    child.start()
    try:
        assert parent_conn.poll(20)
        message = parent_conn.recv()
        assert message == ("ready", ("v2", "config", None)), message
        assert set_rollout(app, {"override": "v1"}).json == {"override": "v1", "scope": "cluster"}
        parent_conn.send("set")
        assert parent_conn.poll(20)
        message = parent_conn.recv()
        assert message[0] == "done", message
        assert message[1] == ("v1", "override", None)
        assert message[2] < 1.0
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
