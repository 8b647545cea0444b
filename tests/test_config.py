"""Tests of config.py: every ``TENANT_CACHE_*`` default and its validation at ``init_app``."""

from __future__ import annotations

import copy
import math
import re
import uuid
from typing import Any

import pytest
from flask import Flask, jsonify

from flask_tenant_cache import Tenant, TenantCache, TenantIdentifier, current_tenant
from flask_tenant_cache.config import DEFAULTS, Settings, load_settings

ACME = Tenant(id=uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"), slug="acme", name="Acme")


class DictLoader:
    """A loader over a fixed list of tenants; counts its calls."""

    def __init__(self, *tenants: Tenant) -> None:
        self.by_key = {key: t for t in tenants for key in t.alias_keys}
        self.calls: list[TenantIdentifier] = []

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls.append(identifier)
        return self.by_key.get(identifier.cache_key)


def small_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, **config)
    return app


def with_ext(**config: Any) -> tuple[Flask, TenantCache, DictLoader]:
    app = small_app(**config)
    loader = DictLoader(ACME)
    ext = TenantCache(app, loader=loader)

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(slug=current_tenant.slug)

    return app, ext, loader


# -- defaults -----------------------------------------------------------------------------------


def settings_of(app: Flask, *names: str) -> dict[str, Any]:
    settings: Settings = app.extensions["tenant_cache"].settings
    return {name: getattr(settings, name) for name in names}


CORE_FIELDS = (
    "header",
    "header_environ_key",
    "base_domains",
    "required",
    "ttl",
    "negative_ttl",
    "idle_timeout",
    "max_entries",
    "load_timeout",
    "url_prefix",
    "admin_token",
)


def test_defaults_cover_the_documented_keys() -> None:
    assert set(DEFAULTS) >= {
        "TENANT_CACHE_HEADER",
        "TENANT_CACHE_BASE_DOMAINS",
        "TENANT_CACHE_REQUIRED",
        "TENANT_CACHE_USE_V2",
        "TENANT_CACHE_TTL",
        "TENANT_CACHE_NEGATIVE_TTL",
        "TENANT_CACHE_IDLE_TIMEOUT",
        "TENANT_CACHE_MAX_ENTRIES",
        "TENANT_CACHE_LOAD_TIMEOUT",
        "TENANT_CACHE_URL_PREFIX",
        "TENANT_CACHE_ADMIN_TOKEN",
    }
    assert all(key.startswith("TENANT_CACHE_") for key in DEFAULTS)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_key_gets_its_default(key: str) -> None:
    app = small_app()
    assert key not in app.config
    TenantCache(app, loader=DictLoader())
    assert app.config[key] == DEFAULTS[key]
    assert type(app.config[key]) is type(DEFAULTS[key])


def test_default_values() -> None:
    app, _, _ = with_ext()
    assert settings_of(app, *CORE_FIELDS) == {
        "header": "X-Tenant-ID",
        "header_environ_key": "HTTP_X_TENANT_ID",
        "base_domains": (),
        "required": True,
        "ttl": 300.0,
        "negative_ttl": 30.0,
        "idle_timeout": 60.0,
        "max_entries": 10_000,
        "load_timeout": 5.0,
        "url_prefix": "/_tenant-cache",
        "admin_token": None,
    }
    assert app.config["TENANT_CACHE_USE_V2"] is True


def test_list_default_is_not_shared() -> None:
    before = copy.deepcopy(DEFAULTS)
    app1, _, _ = with_ext()
    app2, _, _ = with_ext()
    assert app1.config["TENANT_CACHE_BASE_DOMAINS"] is not DEFAULTS["TENANT_CACHE_BASE_DOMAINS"]
    app1.config["TENANT_CACHE_BASE_DOMAINS"].append("example.com")
    assert app2.config["TENANT_CACHE_BASE_DOMAINS"] == []
    assert before == DEFAULTS


def test_given_values_are_kept() -> None:
    app, _, _ = with_ext(
        TENANT_CACHE_HEADER="X-Org",
        TENANT_CACHE_BASE_DOMAINS=("Example.COM.", "example.org", "example.com"),
        TENANT_CACHE_REQUIRED=False,
        TENANT_CACHE_USE_V2=False,
        TENANT_CACHE_TTL=10,
        TENANT_CACHE_NEGATIVE_TTL=0,
        TENANT_CACHE_IDLE_TIMEOUT=None,
        TENANT_CACHE_MAX_ENTRIES=1,
        TENANT_CACHE_LOAD_TIMEOUT=0.5,
        TENANT_CACHE_URL_PREFIX="/admin/tenants",
        TENANT_CACHE_ADMIN_TOKEN="s3cret",
    )
    assert settings_of(app, *CORE_FIELDS) == {
        "header": "X-Org",
        "header_environ_key": "HTTP_X_ORG",
        "base_domains": ("example.com", "example.org"),
        "required": False,
        "ttl": 10.0,
        "negative_ttl": 0.0,
        "idle_timeout": None,
        "max_entries": 1,
        "load_timeout": 0.5,
        "url_prefix": "/admin/tenants",
        "admin_token": "s3cret",
    }
    assert app.config["TENANT_CACHE_USE_V2"] is False


def test_custom_header_is_read() -> None:
    app, _, loader = with_ext(TENANT_CACHE_HEADER="X-Org")
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Org": "ACME"}).json == {"slug": "acme"}
    assert [i.cache_key for i in loader.calls] == ["slug:acme"]
    # The default header is not read any more.
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 400


def test_custom_url_prefix_is_used() -> None:
    app, _, _ = with_ext(TENANT_CACHE_URL_PREFIX="/ops/tc", TENANT_CACHE_ADMIN_TOKEN="tok")
    client = app.test_client()
    auth = {"Authorization": "Bearer tok"}
    assert client.get("/ops/tc/stats", headers=auth).status_code == 200
    assert client.get("/_tenant-cache/stats", headers=auth).status_code == 404


def test_base_domains_as_comma_separated_string() -> None:
    app, _, _ = with_ext(TENANT_CACHE_BASE_DOMAINS=" example.com, Example.ORG. ,,")
    settings: Settings = app.extensions["tenant_cache"].settings
    assert settings.base_domains == ("example.com", "example.org")
    client = app.test_client()
    assert client.get("/whoami", headers={"Host": "acme.example.org"}).json == {"slug": "acme"}
    assert client.get("/whoami", headers={"Host": "acme.example.com:8080"}).json == {"slug": "acme"}


def test_load_settings_fills_a_plain_dict() -> None:
    config: dict[str, Any] = {"TENANT_CACHE_TTL": 5}
    settings = load_settings(config)
    assert settings.ttl == 5.0
    assert set(DEFAULTS) <= set(config)
    assert config["TENANT_CACHE_TTL"] == 5


# -- validation ---------------------------------------------------------------------------------

INVALID: list[tuple[str, Any]] = [
    ("TENANT_CACHE_HEADER", ""),
    ("TENANT_CACHE_HEADER", 123),
    ("TENANT_CACHE_HEADER", None),
    ("TENANT_CACHE_HEADER", b"X-Tenant-ID"),
    ("TENANT_CACHE_HEADER", "X Tenant"),
    ("TENANT_CACHE_HEADER", "X_Tenant_ID"),
    ("TENANT_CACHE_HEADER", "X-Tenant:ID"),
    ("TENANT_CACHE_HEADER", "-X-Tenant"),
    ("TENANT_CACHE_HEADER", "X-Tenant\n"),
    ("TENANT_CACHE_HEADER", "X-Ténant"),
    ("TENANT_CACHE_BASE_DOMAINS", 123),
    ("TENANT_CACHE_BASE_DOMAINS", None),
    ("TENANT_CACHE_BASE_DOMAINS", {"example.com"}),
    ("TENANT_CACHE_BASE_DOMAINS", [1]),
    ("TENANT_CACHE_BASE_DOMAINS", ["example.com", None]),
    ("TENANT_CACHE_BASE_DOMAINS", ["bad domain.com"]),
    ("TENANT_CACHE_BASE_DOMAINS", ["a..b"]),
    ("TENANT_CACHE_BASE_DOMAINS", ["-bad.com"]),
    ("TENANT_CACHE_BASE_DOMAINS", [""]),
    ("TENANT_CACHE_BASE_DOMAINS", "example.com, bad_domain.com"),
    ("TENANT_CACHE_REQUIRED", "yes"),
    ("TENANT_CACHE_REQUIRED", 1),
    ("TENANT_CACHE_REQUIRED", None),
    ("TENANT_CACHE_USE_V2", "true"),
    ("TENANT_CACHE_USE_V2", 0),
    ("TENANT_CACHE_USE_V2", None),
    ("TENANT_CACHE_TTL", -1),
    ("TENANT_CACHE_TTL", 0),
    ("TENANT_CACHE_TTL", True),
    ("TENANT_CACHE_TTL", "300"),
    ("TENANT_CACHE_TTL", None),
    ("TENANT_CACHE_TTL", math.nan),
    ("TENANT_CACHE_TTL", math.inf),
    ("TENANT_CACHE_NEGATIVE_TTL", -0.5),
    ("TENANT_CACHE_NEGATIVE_TTL", False),
    ("TENANT_CACHE_NEGATIVE_TTL", "30"),
    ("TENANT_CACHE_NEGATIVE_TTL", None),
    ("TENANT_CACHE_IDLE_TIMEOUT", -1),
    ("TENANT_CACHE_IDLE_TIMEOUT", 0),
    ("TENANT_CACHE_IDLE_TIMEOUT", True),
    ("TENANT_CACHE_IDLE_TIMEOUT", "60"),
    ("TENANT_CACHE_MAX_ENTRIES", 0),
    ("TENANT_CACHE_MAX_ENTRIES", -1),
    ("TENANT_CACHE_MAX_ENTRIES", True),
    ("TENANT_CACHE_MAX_ENTRIES", 1.5),
    ("TENANT_CACHE_MAX_ENTRIES", 100.0),
    ("TENANT_CACHE_MAX_ENTRIES", "100"),
    ("TENANT_CACHE_MAX_ENTRIES", None),
    ("TENANT_CACHE_LOAD_TIMEOUT", -1),
    ("TENANT_CACHE_LOAD_TIMEOUT", 0),
    ("TENANT_CACHE_LOAD_TIMEOUT", False),
    ("TENANT_CACHE_LOAD_TIMEOUT", "5"),
    ("TENANT_CACHE_LOAD_TIMEOUT", math.inf),
    ("TENANT_CACHE_LOAD_TIMEOUT", math.nan),
    ("TENANT_CACHE_URL_PREFIX", "tenant-cache"),
    ("TENANT_CACHE_URL_PREFIX", "/tenant-cache/"),
    ("TENANT_CACHE_URL_PREFIX", "/"),
    ("TENANT_CACHE_URL_PREFIX", ""),
    ("TENANT_CACHE_URL_PREFIX", None),
    ("TENANT_CACHE_URL_PREFIX", 5),
    ("TENANT_CACHE_ADMIN_TOKEN", ""),
    ("TENANT_CACHE_ADMIN_TOKEN", 123),
    ("TENANT_CACHE_ADMIN_TOKEN", b"token"),
    ("TENANT_CACHE_ADMIN_TOKEN", False),
    ("TENANT_CACHE_STRATEGIES", []),
    ("TENANT_CACHE_STRATEGIES", None),
    ("TENANT_CACHE_STRATEGIES", ["header", "header"]),
    ("TENANT_CACHE_STRATEGIES", ["header", "cookie"]),
    ("TENANT_CACHE_STRATEGIES", [len]),
    ("TENANT_CACHE_STRATEGIES", "host, jwt"),
    ("TENANT_CACHE_ON_CONFLICT", "last"),
    ("TENANT_CACHE_ON_CONFLICT", None),
    ("TENANT_CACHE_HEADER_TRUSTED", []),
    ("TENANT_CACHE_HEADER_TRUSTED", ["10.0.0.1/8"]),
    ("TENANT_CACHE_HEADER_TRUSTED", ["10.0.0.0/33"]),
    ("TENANT_CACHE_HEADER_TRUSTED", ["gateway.internal"]),
    ("TENANT_CACHE_HEADER_TRUSTED", [10]),
    ("TENANT_CACHE_HEADER_TRUSTED", True),
    ("TENANT_CACHE_UNTRUSTED_HEADER", "drop"),
    ("TENANT_CACHE_UNTRUSTED_HEADER", None),
    ("TENANT_CACHE_PATH_PREFIX", "t"),
    ("TENANT_CACHE_PATH_PREFIX", "/t/"),
    ("TENANT_CACHE_PATH_PREFIX", "/"),
    ("TENANT_CACHE_PATH_PREFIX", "/t x"),
    ("TENANT_CACHE_PATH_PREFIX", "/t?"),
    ("TENANT_CACHE_PATH_PREFIX", None),
]


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[f"{k[13:]}={v!r}" for k, v in INVALID])
def test_invalid_value_raises_naming_the_key(key: str, value: Any) -> None:
    app = small_app(**{key: value})
    with pytest.raises(ValueError, match=key) as info:
        TenantCache(app, loader=DictLoader())
    # The message names exactly the bad key, not a neighbour that shares its prefix.
    others = [k for k in DEFAULTS if k != key and re.search(rf"\b{k}\b", str(info.value))]
    assert others == []
    # Nothing was registered on the app.
    assert "tenant_cache" not in app.extensions


VALID_EDGES: list[tuple[str, Any]] = [
    ("TENANT_CACHE_HEADER", "Tenant"),
    ("TENANT_CACHE_HEADER", "x-tenant-id"),
    ("TENANT_CACHE_BASE_DOMAINS", []),
    ("TENANT_CACHE_BASE_DOMAINS", ""),
    ("TENANT_CACHE_BASE_DOMAINS", ("example.com",)),
    ("TENANT_CACHE_BASE_DOMAINS", ["bücher.example"]),
    ("TENANT_CACHE_TTL", 0.001),
    ("TENANT_CACHE_NEGATIVE_TTL", 0),
    ("TENANT_CACHE_IDLE_TIMEOUT", None),
    ("TENANT_CACHE_IDLE_TIMEOUT", 1.5),
    ("TENANT_CACHE_MAX_ENTRIES", 1),
    ("TENANT_CACHE_LOAD_TIMEOUT", None),
    ("TENANT_CACHE_URL_PREFIX", "/a"),
    ("TENANT_CACHE_URL_PREFIX", "/a/b"),
    ("TENANT_CACHE_ADMIN_TOKEN", "t"),
    ("TENANT_CACHE_STRATEGIES", ["path"]),
    ("TENANT_CACHE_STRATEGIES", ("host", "header", "path")),
    ("TENANT_CACHE_STRATEGIES", "host, header"),
    ("TENANT_CACHE_ON_CONFLICT", "first"),
    ("TENANT_CACHE_HEADER_TRUSTED", ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]),
    ("TENANT_CACHE_HEADER_TRUSTED", "10.0.0.0/8, 127.0.0.1"),
    ("TENANT_CACHE_HEADER_TRUSTED", lambda request: True),
    ("TENANT_CACHE_UNTRUSTED_HEADER", "ignore"),
    ("TENANT_CACHE_PATH_PREFIX", "/org/tenants"),
]


@pytest.mark.parametrize(("key", "value"), VALID_EDGES)
def test_valid_edge_values_accepted(key: str, value: Any) -> None:
    app = small_app(**{key: value})
    TenantCache(app, loader=DictLoader())
    assert "tenant_cache" in app.extensions
    assert app.config[key] == value


def test_header_environ_key() -> None:
    app, _, _ = with_ext(TENANT_CACHE_HEADER="x-org-id")
    assert app.extensions["tenant_cache"].settings.header_environ_key == "HTTP_X_ORG_ID"


# -- init_app -----------------------------------------------------------------------------------


def test_second_init_app_on_one_app_raises() -> None:
    app, ext, _ = with_ext()
    state = app.extensions["tenant_cache"]
    with pytest.raises(RuntimeError, match="already"):
        ext.init_app(app)
    with pytest.raises(RuntimeError, match="already"):
        TenantCache(app, loader=DictLoader())
    assert app.extensions["tenant_cache"] is state


def test_init_app_without_a_loader_raises_type_error() -> None:
    app = small_app()
    with pytest.raises(TypeError, match="loader"):
        TenantCache(app)
    assert "tenant_cache" not in app.extensions
    with pytest.raises(TypeError, match="loader"):
        TenantCache().init_app(small_app())


def test_init_app_with_a_non_loader_raises_type_error() -> None:
    with pytest.raises(TypeError, match="loader"):
        TenantCache(small_app(), loader=object())  # type: ignore[arg-type]


def test_app_factory_pattern_with_loader_given_to_init_app() -> None:
    ext = TenantCache()
    app = small_app()
    loader = DictLoader(ACME)
    ext.init_app(app, loader=loader)
    assert app.extensions["tenant_cache"].loader is loader


def test_two_apps_have_separate_state() -> None:
    ext = TenantCache(loader=DictLoader(ACME))
    app1, app2 = small_app(TENANT_CACHE_TTL=10), small_app(TENANT_CACHE_TTL=20)
    ext.init_app(app1)
    ext.init_app(app2)
    for app in (app1, app2):

        @app.get("/whoami")
        def whoami() -> Any:
            return jsonify(slug=current_tenant.slug)

    state1, state2 = app1.extensions["tenant_cache"], app2.extensions["tenant_cache"]
    assert state1 is not state2
    assert state1.resolvers["v2"] is not state2.resolvers["v2"]
    assert (state1.settings.ttl, state2.settings.ttl) == (10.0, 20.0)

    assert app1.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"}).json == {
        "slug": "acme"
    }
    with app1.app_context():
        stats1 = ext.stats()["v2"]
    with app2.app_context():
        stats2 = ext.stats()["v2"]
    assert stats1["entry_count"] >= 1
    assert stats1["misses"] == 1
    assert stats2["entry_count"] == 0
    assert stats2["misses"] == 0
    assert stats2["hits"] == 0

    # Invalidating in the second app leaves the first app's cache alone.
    with app2.app_context():
        assert ext.invalidate_all() == 0
    with app1.app_context():
        assert ext.stats()["v2"]["entry_count"] == stats1["entry_count"]


def test_extension_object_does_not_keep_the_app() -> None:
    app, ext, _ = with_ext()
    assert all(value is not app for value in vars(ext).values())
