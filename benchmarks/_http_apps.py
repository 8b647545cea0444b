"""WSGI apps for the HTTP benchmark, loaded by gunicorn: ``benchmarks._http_apps:bare()``."""

from __future__ import annotations

import os
import uuid

from flask import Flask, Response, request

from example_app.models import DEMO_TENANTS, Tenant, db, seed_demo_tenants
from flask_tenant_cache import SQLAlchemyTenantLoader, TenantCache, require_tenant
from flask_tenant_cache.extension import BLUEPRINT_NAME

__all__ = [
    "ADMIN_TOKEN_ENV",
    "DATABASE_ENV",
    "PID_HEADER",
    "bare",
    "seed",
    "tenant_slugs",
    "with_extension",
]

#: The SQLite file the apps read tenants from (written by :func:`seed`).
DATABASE_ENV = "BENCH_HTTP_DATABASE"
#: The bearer token of ``GET /_tenant-cache/stats``.
ADMIN_TOKEN_ENV = "BENCH_HTTP_ADMIN_TOKEN"
#: Response header of the stats route naming the worker process, since each worker has its own
#: cache and counters.
PID_HEADER = "X-Bench-Worker-Pid"


def tenant_slugs(count: int) -> list[str]:
    """The example's demo tenants, then ``tenant-003`` ...: ``count`` slugs in all."""
    demo = [slug for _, slug, _, _ in DEMO_TENANTS]
    return [*demo, *(f"tenant-{i:03d}" for i in range(len(demo), count))][:count]


def _base_app(name: str) -> Flask:
    """Flask-SQLAlchemy on the seeded file, as in the example app, with no tenant logic."""
    path = os.environ.get(DATABASE_ENV)
    if not path:
        raise RuntimeError(f"set {DATABASE_ENV} to the SQLite file written by seed()")
    app = Flask(name)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{os.path.abspath(path)}",
        TENANT_CACHE_BASE_DOMAINS=["localtest.me"],
        TENANT_CACHE_ADMIN_TOKEN=os.environ.get(ADMIN_TOKEN_ENV) or None,
    )
    db.init_app(app)
    return app


def seed(path: str, count: int = 100) -> list[str]:
    """Create the example's tenant table in the SQLite file ``path`` with ``count`` tenants.

    :returns: their slugs, as :func:`tenant_slugs` lists them.
    """
    app = Flask("bench_http_seed")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.path.abspath(path)}"
    db.init_app(app)
    slugs = tenant_slugs(count)
    with app.app_context():
        seed_demo_tenants()
        for i, slug in enumerate(slugs[len(DEMO_TENANTS) :], start=len(DEMO_TENANTS)):
            db.session.add(Tenant(id=uuid.UUID(int=i + 1), slug=slug, name=f"Tenant {i}"))
        db.session.commit()
        db.session.remove()
    return slugs


def with_extension(use_v2: bool = True) -> Flask:
    """The example's model and loader behind TenantCache; ``/`` answers the tenant's slug.

    :param use_v2: ``TENANT_CACHE_USE_V2`` (False: every request on the v1 resolver).
    """
    app = _base_app(f"bench_http_{'v2' if use_v2 else 'v1'}")
    app.config["TENANT_CACHE_USE_V2"] = use_v2
    TenantCache(app, loader=SQLAlchemyTenantLoader(db, Tenant, active_column="active"))

    @app.get("/")
    def index() -> dict[str, str]:
        return {"tenant": require_tenant().slug}

    def tag_worker(response: Response) -> Response:
        response.headers[PID_HEADER] = str(os.getpid())
        return response

    # Scoped to the extension's blueprint, so the timed route pays nothing for it.
    app.after_request_funcs.setdefault(BLUEPRINT_NAME, []).append(tag_worker)
    return app


def bare() -> Flask:
    """The same app and view without the extension: an empty hook, the header echoed back."""
    app = _base_app("bench_http_bare")

    @app.before_request
    def no_tenant() -> None:
        return None

    @app.get("/")
    def index() -> dict[str, str | None]:
        return {"tenant": request.headers.get("X-Tenant-ID")}

    return app
