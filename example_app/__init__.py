"""An example multi-tenant app: Flask-SQLAlchemy tenants served through flask-tenant-cache."""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask

from .admin import admin
from .extensions import tenant_cache
from .models import DEMO_TENANTS, Tenant, db, seed_demo_tenants
from .views import site

__all__ = ["DEMO_TENANTS", "INSTANCE_PATH", "Tenant", "create_app", "db", "tenant_cache"]

#: Where the default SQLite file lives (git-ignored).
INSTANCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance")
DEFAULT_DATABASE_URL = "sqlite:///example.sqlite3"  # relative: inside INSTANCE_PATH
BASE_DOMAIN = "localtest.me"  # public DNS sends *.localtest.me to 127.0.0.1


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the example app; ``config`` overrides the defaults and the environment.

    ``EXAMPLE_DATABASE_URL`` picks the database (default: a SQLite file under
    ``example_app/instance/``); ``EXAMPLE_ADMIN_TOKEN`` the admin token (default: a random
    one, in ``app.config["EXAMPLE_ADMIN_TOKEN"]``); ``EXAMPLE_SECRET_KEY`` the key that signs
    the admin session cookie (default: a random one, so sessions end at a restart). The demo
    tenants are seeded into an empty table. Edits committed through the ORM invalidate the
    cache by themselves (``TENANT_CACHE_AUTO_INVALIDATE``).
    """
    app = Flask(__name__, instance_path=INSTANCE_PATH)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=os.environ.get("EXAMPLE_DATABASE_URL", DEFAULT_DATABASE_URL),
        TENANT_CACHE_BASE_DOMAINS=[BASE_DOMAIN],
        EXAMPLE_ADMIN_TOKEN=os.environ.get("EXAMPLE_ADMIN_TOKEN") or secrets.token_urlsafe(24),
        EXAMPLE_SEED=True,
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY") or secrets.token_hex(32),
        SESSION_COOKIE_SAMESITE="Lax",
        TENANT_CACHE_AUTO_INVALIDATE=True,
    )
    app.config.update(config or {})
    # One token for the example's admin pages and the extension's stats/invalidate routes.
    app.config.setdefault("TENANT_CACHE_ADMIN_TOKEN", app.config["EXAMPLE_ADMIN_TOKEN"])

    db.init_app(app)
    tenant_cache.init_app(app)
    app.register_blueprint(site)
    app.register_blueprint(admin)

    if app.config["EXAMPLE_SEED"]:
        with app.app_context():
            seed_demo_tenants()
    return app
