"""Loaders: where a resolver reads a tenant on a cache miss (they cache nothing)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from .identifiers import TenantIdentifier
from .tenant import Tenant

__all__ = ["SQLAlchemyTenantLoader", "TenantLoader", "WarmableTenantLoader"]


@runtime_checkable
class TenantLoader(Protocol):
    """Anything with ``load(identifier) -> Tenant | None`` is a loader.

    ``load`` returns None when no tenant has the identifier, and raises when it cannot tell
    (the database is down): the resolver then answers 503 and caches nothing.
    """

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        """The tenant ``identifier`` names, or None."""


@runtime_checkable
class WarmableTenantLoader(TenantLoader, Protocol):
    """A loader that can also list every tenant, for ``flask tenant-cache warm``."""

    def iter_tenants(self) -> Iterable[Tenant]:
        """Every tenant."""


class SQLAlchemyTenantLoader:
    """Loads tenants from a Flask-SQLAlchemy model with one indexed query per miss.

    It selects only the columns it needs on a short connection of its own, so the request's
    session never holds tenant rows and no ORM object outlives the query.

    :param db: the ``flask_sqlalchemy.SQLAlchemy`` instance (its engine for the current app is
        used).
    :param model: the tenant model.
    :param id_column: the UUID primary key.
    :param slug_column: the unique slug.
    :param domain_column: the unique, nullable custom domain (None if the model has none).
    :param name_column: the display name.
    :param active_column: a boolean column (None: every tenant is active).
    :param extra_columns: further columns copied into :attr:`Tenant.extra`.
    """

    def __init__(
        self,
        db: Any,
        model: Any,
        *,
        id_column: str = "id",
        slug_column: str = "slug",
        domain_column: str | None = "domain",
        name_column: str = "name",
        active_column: str | None = None,
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.model = model
        self.id_column = id_column
        self.slug_column = slug_column
        self.domain_column = domain_column
        self._id = getattr(model, id_column)
        self._slug = getattr(model, slug_column)
        self._domain = getattr(model, domain_column) if domain_column else None
        self._columns = [self._id, self._slug, getattr(model, name_column)]
        self._columns.append(self._domain if self._domain is not None else sa.null())
        self._columns.append(getattr(model, active_column) if active_column else sa.true())
        self._columns.extend(getattr(model, name) for name in extra_columns)
        self._extra_names = tuple(extra_columns)

    def _where(self, ident: TenantIdentifier) -> Any:
        if ident.kind == "uuid":
            return self._id == uuid.UUID(ident.value)
        if ident.kind == "slug":
            return self._slug == ident.value
        if self._domain is None:
            return sa.false()
        return self._domain == ident.value

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        """The tenant ``identifier`` names, or None; database errors propagate."""
        query = sa.select(*self._columns).where(self._where(identifier)).limit(1)
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._tenant(row)

    def iter_tenants(self) -> Iterator[Tenant]:
        """Every tenant, read in one query."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(*self._columns)).all()
        return iter([self._tenant(row) for row in rows])

    def _tenant(self, row: Sequence[Any]) -> Tenant:
        tenant_id, slug, name, domain, active, *extra = row
        return Tenant(
            id=tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id)),
            slug=slug,
            name=name or "",
            domains=(domain,) if domain else (),
            is_active=bool(active),
            extra=dict(zip(self._extra_names, extra, strict=True)),
        )
