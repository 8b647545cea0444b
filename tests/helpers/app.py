"""Test helpers: the seeded tenant app, a counting loader, a hand-moved clock, recorders."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.test import EnvironBuilder

from flask_tenant_cache import (
    SQLAlchemyTenantLoader,
    Tenant,
    TenantCache,
    TenantIdentifier,
    current_resolver_version,
    current_tenant,
)

IN_CI = os.environ.get("CI", "").lower() == "true"

ACME_ID = uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a")
GLOBEX_ID = uuid.UUID("7d9e2b1c-3a4f-4b6d-9e8f-1a2b3c4d5e6f")
INITECH_ID = uuid.UUID("1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9")
ADMIN_TOKEN = "test-admin-token-0123456789"


def need_service(name: str, reason: str) -> None:
    """Skip a test whose service is missing, except under ``CI=true`` where it fails."""
    message = f"{name} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


def make_model(db: SQLAlchemy) -> Any:
    """The tenant model the tests use (one per ``SQLAlchemy`` instance)."""

    class TenantRow(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "tenants"
        id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
        slug: Mapped[str] = mapped_column(sa.String(63), unique=True)
        domain: Mapped[str | None] = mapped_column(sa.String(253), unique=True)
        name: Mapped[str] = mapped_column(sa.String(200))
        active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
        plan: Mapped[str] = mapped_column(sa.String(20), default="free")

    return TenantRow


SEED = [
    (ACME_ID, "acme", "acme.test", "Acme Corp"),
    (GLOBEX_ID, "globex", None, "Globex"),
    (INITECH_ID, "initech", "portal.initech.example", "Initech"),
]


class CountingLoader:
    """Wraps a loader, counting calls; ``fail`` and ``hold()`` inject outages and pauses."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[TenantIdentifier] = []
        self.fail: BaseException | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def hold(self) -> threading.Event:
        """Pause the loads from now on until the returned gate is set.

        ``entered`` is cleared with it, so a wait on it sees a load that came after the hold,
        never one that an earlier request (a warm-up, a subscription's first request) ran.
        """
        self.gate = threading.Event()
        self.entered.clear()
        return self.gate

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        with self._lock:
            self.calls.append(identifier)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        result: Tenant | None = self.inner.load(identifier)
        return result

    def iter_tenants(self) -> Any:
        return self.inner.iter_tenants()


class FakeTimer:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: Where each app's own SQLite file goes (removed when the test process ends).
_DATABASES = tempfile.TemporaryDirectory(prefix="tenant-cache-tests-")
_NUMBERS = itertools.count()


def _own_database() -> str:
    """A new SQLite file's URI. Not ``sqlite://``: Flask-SQLAlchemy gives an in-memory database
    one connection that every thread shares, and two threads loading at once on it (a shadow
    comparison beside the request's own load) made it fail ("bad parameter or other API
    misuse") or read a row of ``None``."""
    return f"sqlite:///{_DATABASES.name}/app{next(_NUMBERS)}.db"


def build_app(
    database_uri: str | None = None,
    *,
    loader_factory: Callable[..., Any] | None = None,
    flag_provider: Any = None,
    admin_authorizer: Callable[[], bool] | None = None,
    redis: Any = None,
    clock: Callable[[], float] | None = None,
    strategies: dict[str, Callable[[Any], Any]] | None = None,
    **config: Any,
) -> Flask:
    """An app with the extension, a seeded tenant table and a few views.

    Its database is ``database_uri``, by default a SQLite file of its own.

    The loader is a ``CountingLoader`` around ``SQLAlchemyTenantLoader`` unless
    ``loader_factory`` (called like ``SQLAlchemyTenantLoader``) builds it instead;
    ``flag_provider`` and ``redis`` go to ``TenantCache`` and ``admin_authorizer`` is
    registered on it. ``TENANT_CACHE_ADMIN_TOKEN=None`` leaves the admin routes without a
    token. ``clock`` (a ``FakeTimer``) is the extension's timer and wall clock both.
    ``strategies`` are identifier strategies registered by name before ``init_app``.
    """
    app = Flask(__name__)
    app.config.update(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_uri or _own_database(),
            "TENANT_CACHE_BASE_DOMAINS": ["example.com"],
            "TENANT_CACHE_ADMIN_TOKEN": ADMIN_TOKEN,
            **config,
        }
    )
    db = SQLAlchemy(app)  # a metadata of its own: tests may build several apps
    model = make_model(db)
    if loader_factory is None:
        loader = CountingLoader(SQLAlchemyTenantLoader(db, model, active_column="active"))
    else:
        loader = loader_factory(db, model, active_column="active")
    clocks: dict[str, Any] = {} if clock is None else {"timer": clock, "clock": clock}
    tenant_cache = TenantCache(loader=loader, flag_provider=flag_provider, redis=redis, **clocks)
    for name, strategy in (strategies or {}).items():
        tenant_cache.identifier_strategy(strategy, name=name)
    tenant_cache.init_app(app)
    if admin_authorizer is not None:
        tenant_cache.admin_authorizer(admin_authorizer)
    app.extensions["test"] = {"db": db, "model": model, "loader": loader, "ext": tenant_cache}

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(
            slug=current_tenant.slug,
            id=str(current_tenant.id),
            name=current_tenant.name,
            version=current_resolver_version(),
        )

    @app.get("/health")
    @tenant_cache.exempt
    def health() -> Any:
        return jsonify(ok=True, tenant=None if not current_tenant else current_tenant.slug)

    with app.app_context():
        db.drop_all()
        db.create_all()
        for tenant_id, slug, domain, name in SEED:
            db.session.add(model(id=tenant_id, slug=slug, domain=domain, name=name))
        db.session.commit()
    return app


def update_tenant(app: Flask, tenant_id: uuid.UUID, **values: Any) -> None:
    """Change a tenant row of ``app`` (as an admin would), without touching the cache.

    It uses the session of the app context in place (push one around it if there is none).
    """
    db = app.extensions["test"]["db"]
    row = db.session.get(app.extensions["test"]["model"], tenant_id)
    for key, value in values.items():
        setattr(row, key, value)
    db.session.commit()


def update_tenant_in(app: Flask, tenant_id: uuid.UUID, **values: Any) -> None:
    """``update_tenant`` in an app context of its own."""
    with app.app_context():
        update_tenant(app, tenant_id, **values)


class Recorder:
    """A signal receiver that keeps every (sender, kwargs) it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.events.append((sender, kwargs))


def call(app: Flask, path: str = "/whoami", **environ: str) -> tuple[int, dict[str, str], bytes]:
    """Call the WSGI app with raw environ values (the test client rejects some of them)."""
    env = EnvironBuilder(path=path).get_environ()
    env.update(environ)
    status: list[str] = []
    headers: list[list[tuple[str, str]]] = []

    def start_response(s: str, h: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(s)
        headers.append(h)

    body = b"".join(app(env, start_response))
    return int(status[0].split()[0]), dict(headers[0]), body
