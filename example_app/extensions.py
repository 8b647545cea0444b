"""The example's extension object, created once and bound to each app by ``create_app``."""

from __future__ import annotations

from flask_tenant_cache import SQLAlchemyTenantLoader, TenantCache

from .models import Tenant, db

__all__ = ["tenant_cache"]

tenant_cache = TenantCache(loader=SQLAlchemyTenantLoader(db, Tenant, active_column="active"))
