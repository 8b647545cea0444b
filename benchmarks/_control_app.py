"""The guarded app for the control benchmark, loaded by gunicorn: ``_control_app:guarded()``."""

from __future__ import annotations

import os

from flask import Flask, Response

from example_app.models import Tenant, db
from flask_tenant_cache import (
    SQLAlchemyTenantLoader,
    TenantCache,
    TenantLookupError,
    current_resolver_version,
    require_tenant,
)

from ._http_apps import _base_app

__all__ = ["FAULT_ENV", "PREFIX_ENV", "REDIS_ENV", "guarded"]

#: A file whose existence makes every v2 lookup fail (the fault the guard must catch).
FAULT_ENV = "BENCH_CONTROL_FAULT_FILE"
REDIS_ENV = "BENCH_CONTROL_REDIS_URL"
PREFIX_ENV = "BENCH_CONTROL_PREFIX"


def guarded() -> Flask:
    """The HTTP benchmark's app on a plan at 50 % with the guard, sharing Redis."""
    app = _base_app("bench_control")
    app.config.update(
        TENANT_CACHE_USE_V2=False,
        TENANT_CACHE_REDIS_URL=os.environ[REDIS_ENV],
        TENANT_CACHE_REDIS_PREFIX=os.environ[PREFIX_ENV],
        TENANT_CACHE_ROLLOUT_PLAN=[(50, 3600), (100, 3600)],
    )
    TenantCache(app, loader=SQLAlchemyTenantLoader(db, Tenant, active_column="active"))
    fault = os.environ[FAULT_ENV]
    v2 = app.extensions["tenant_cache"].resolvers["v2"]
    resolve = v2.resolve

    def failing_resolve(ident: object) -> object:
        if os.path.exists(fault):
            raise TenantLookupError("v2 made to fail by the benchmark")
        return resolve(ident)

    v2.resolve = failing_resolve

    @app.get("/")
    def index() -> dict[str, str]:
        return {"tenant": require_tenant().slug}

    @app.after_request
    def tag(response: Response) -> Response:
        response.headers["X-Resolver"] = current_resolver_version() or "-"
        response.headers["X-Worker"] = str(os.getpid())
        return response

    return app
