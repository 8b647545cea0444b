"""Loaders: where a resolver reads a tenant on a cache miss (they cache nothing)."""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from .identifiers import (
    InvalidIdentifier,
    TenantIdentifier,
    fold_ascii,
    host_to_unicode,
    normalize_host,
)
from .tenant import Tenant

__all__ = ["SQLAlchemyTenantLoader", "TenantLoader", "WarmableTenantLoader"]

logger = logging.getLogger("flask_tenant_cache")


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


def _matchable(stored: str) -> str | None:
    """The canonical host a stored domain is found under, or None if the query cannot find it.

    The query compares ``lower(column)`` (ASCII case folding on every database) with the
    canonical host and its Unicode spelling, so a stored value is found exactly when that
    folding makes it one of the two.
    """
    try:
        canonical = normalize_host(stored)
    except InvalidIdentifier:
        return None
    folded = fold_ascii(stored)
    return canonical if folded in (canonical, host_to_unicode(canonical)) else None


class SQLAlchemyTenantLoader:
    """Loads tenants from a Flask-SQLAlchemy model with one indexed query per miss.

    It selects only the columns it needs on a short connection of its own, so the request's
    session never holds tenant rows and no ORM object outlives the query.

    Slugs and domains are compared case-insensitively (``lower(column)``), so a row stored as
    ``Globex`` or ``Portal.Acme.com`` is found, and a domain may be stored in its Unicode or
    its punycode spelling. On PostgreSQL that needs an expression index per column, e.g.
    ``CREATE UNIQUE INDEX ON tenants (lower(slug))``; a plain index on the column is not used.

    A row that cannot be a tenant (a slug such as ``legacy_slug``, an empty id) is never
    served: :meth:`load` answers None for it (cached as not found) and :meth:`iter_tenants`
    skips it, each with a warning naming its id, counted in :attr:`rejected_rows`. A stored
    domain that the query cannot find (not a host name, or non-ASCII capitals) is left out
    of :attr:`Tenant.domains`, with a warning.

    :param db: the ``flask_sqlalchemy.SQLAlchemy`` instance (its engine for the current app is
        used).
    :param model: the tenant model.
    :param id_column: the primary key: a UUID, an integer or a string column.
    :param slug_column: the unique slug.
    :param domain_column: the unique, nullable custom domain (None if the model has none).
    :param domain_model: a model of custom domains, several per tenant (None if there is
        none); its domains are added to ``domain_column``'s.
    :param domain_tenant_column: ``domain_model``'s foreign key to the tenant's id.
    :param domain_value_column: ``domain_model``'s unique domain column.
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
        domain_model: Any = None,
        domain_tenant_column: str = "tenant_id",
        domain_value_column: str = "domain",
        name_column: str = "name",
        active_column: str | None = None,
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.model = model
        self.id_column = id_column
        self.slug_column = slug_column
        self.domain_column = domain_column
        self.domain_model = domain_model
        self.domain_value_column = domain_value_column
        #: Rows refused so far because they cannot be a tenant.
        self.rejected_rows = 0
        self._lock = threading.Lock()
        self._id = getattr(model, id_column)
        self._slug = getattr(model, slug_column)
        self._domain = getattr(model, domain_column) if domain_column else None
        self._columns = [self._id, self._slug, getattr(model, name_column)]
        self._columns.append(self._domain if self._domain is not None else sa.null())
        self._columns.append(getattr(model, active_column) if active_column else sa.true())
        self._columns.extend(getattr(model, name) for name in extra_columns)
        self._extra_names = tuple(extra_columns)
        self._alias_fk: Any = None
        self._alias_domain: Any = None
        if domain_model is not None:
            self._alias_fk = getattr(domain_model, domain_tenant_column)
            self._alias_domain = getattr(domain_model, domain_value_column)
            self._columns.append(self._alias_domain)
        self._id_type = _python_type(self._id)

    def _id_value(self, ident: TenantIdentifier) -> Any:
        """``ident``'s value as the id column holds it, or None if it cannot be one."""
        if self._id_type is uuid.UUID:
            return uuid.UUID(ident.value) if ident.kind == "uuid" else None
        if self._id_type is int:
            try:
                return int(ident.value) if ident.kind == "id" else None
            except ValueError:
                return None
        return ident.value

    def _where(self, ident: TenantIdentifier) -> Any:
        if ident.kind in ("uuid", "id"):
            value = self._id_value(ident)
            return sa.false() if value is None else self._id == value
        if ident.kind == "slug":
            return sa.func.lower(self._slug) == ident.value
        spellings = sorted({ident.value, host_to_unicode(ident.value)})
        matches = []
        if self._domain is not None:
            matches.append(sa.func.lower(self._domain).in_(spellings))
        if self._alias_domain is not None:
            owners = sa.select(self._alias_fk).where(
                sa.func.lower(self._alias_domain).in_(spellings)
            )
            matches.append(self._id.in_(owners))
        return sa.or_(*matches) if matches else sa.false()

    def _select(self) -> Any:
        query = sa.select(*self._columns)
        if self.domain_model is not None:
            query = query.select_from(self.model).outerjoin(
                self.domain_model, self._alias_fk == self._id
            )
        return query

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        """The tenant ``identifier`` names, or None; database errors propagate."""
        # The domain table joins in one row per domain: no LIMIT, one tenant's rows at most
        # (slug and domains are unique).
        with _connect(self.db.engine) as conn:
            rows = conn.execute(self._select().where(self._where(identifier))).all()
        for tenant in self._tenants(rows):
            # The database's lower() may fold more than ASCII: only what _matchable allows
            # is this tenant's, as iter_tenants() would say.
            if identifier.kind != "host" or identifier.value in tenant.domains:
                return tenant
        return None

    def iter_tenants(self) -> Iterator[Tenant]:
        """Every tenant, read in one query; rows that cannot be a tenant are skipped."""
        with _connect(self.db.engine) as conn:
            rows = conn.execute(self._select()).all()
        return iter(self._tenants(rows))

    def _tenants(self, rows: Sequence[Any]) -> list[Tenant]:
        grouped: dict[Any, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
        tenants = []
        for tenant_rows in grouped.values():
            tenant = self._tenant(tenant_rows)
            if tenant is not None:
                tenants.append(tenant)
        return tenants

    def _tenant(self, rows: Sequence[Sequence[Any]]) -> Tenant | None:
        n = len(self._extra_names)
        tenant_id, slug, name, domain, active, *rest = rows[0]
        extra = rest[:n]
        stored = [domain] if domain else []
        if self.domain_model is not None:
            stored += [row[5 + n] for row in rows if row[5 + n]]
        domains = []
        for value in dict.fromkeys(stored):
            canonical = _matchable(value) if isinstance(value, str) else None
            if canonical is None:
                logger.warning(
                    "tenant cache: tenant %r: domain %r is left out: lookups cannot find it "
                    "(store a host name, lowercase or in punycode)",
                    tenant_id,
                    value,
                )
            else:
                domains.append(canonical)
        try:
            return Tenant(
                id=tenant_id,
                slug=slug,
                name=name or "",
                domains=tuple(domains),
                is_active=bool(active),
                extra=dict(zip(self._extra_names, extra, strict=True)),
            )
        except (InvalidIdentifier, ValueError, TypeError) as exc:
            with self._lock:
                self.rejected_rows += 1
            logger.warning("tenant cache: row with id %r cannot be a tenant: %s", tenant_id, exc)
            return None


def _python_type(column: Any) -> type:
    try:
        python_type: type = column.type.python_type
    except NotImplementedError:
        return str
    return python_type


#: One lock per pool that hands every thread the same connection (see _connect).
_SHARED: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


@contextmanager
def _connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection of ``engine``, used by one load at a time where every thread shares one.

    Flask-SQLAlchemy gives an in-memory SQLite database (``sqlite://``) a ``StaticPool``: one
    DBAPI connection for every thread. Loads run in several threads at once (requests, the
    shadow comparisons), and two queries at once on that connection fail ("bad parameter or
    other API misuse"), read rows of None, or crash the interpreter.
    """
    pool = engine.pool
    if not isinstance(pool, StaticPool):
        with engine.connect() as conn:
            yield conn
        return
    with _SHARED_LOCK:
        lock = _SHARED.setdefault(pool, threading.Lock())
    with lock, engine.connect() as conn:
        yield conn
