"""Invalidation after a commit that changes tenant rows (``TENANT_CACHE_AUTO_INVALIDATE``)."""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from .identifiers import InvalidIdentifier, TenantIdentifier
from .loaders import SQLAlchemyTenantLoader

__all__ = ["install"]

logger = logging.getLogger("flask_tenant_cache")

_PENDING = "tenant_cache_pending"
_INSTALLED = "_tenant_cache_auto_invalidate"


def _aliases(loader: SQLAlchemyTenantLoader, row: Any) -> set[TenantIdentifier]:
    """Every identifier ``row`` had before the flush or has after it."""
    state = sa.inspect(row)
    found: set[TenantIdentifier] = set()
    for name, make in (
        (loader.id_column, TenantIdentifier.id),
        (loader.slug_column, TenantIdentifier.slug),
        (loader.domain_column, TenantIdentifier.host),
    ):
        if name is None:
            continue
        history = state.attrs[name].history
        for value in chain(history.added, history.unchanged, history.deleted):
            if value is None or value == "":
                continue
            try:
                found.add(make(value))
            except (InvalidIdentifier, ValueError):
                logger.warning("tenant cache: %s=%r names no tenant; not invalidated", name, value)
    return found


def _loader_of_current_app() -> SQLAlchemyTenantLoader | None:
    state = current_app.extensions.get("tenant_cache") if current_app else None
    if state is None or not state.settings.auto_invalidate:
        return None
    loader = state.loader
    return loader if isinstance(loader, SQLAlchemyTenantLoader) else None


def install(loader: SQLAlchemyTenantLoader) -> None:
    """Listen to ``loader.db``'s sessions; a commit invalidates the old and new aliases of every
    tenant row it inserted, updated or deleted, in the app it was committed in.

    Bulk statements (``session.execute(update(...))``) bypass the ORM's change tracking: call
    ``tenant_cache.invalidate`` after them.
    """
    session = loader.db.session
    if getattr(loader.db, _INSTALLED, False):
        return
    setattr(loader.db, _INSTALLED, True)

    @sa.event.listens_for(session, "after_flush")
    def collect(sess: Session, _context: Any) -> None:
        # The loader of the app in use, not the one installed first: apps may share a db.
        app_loader = _loader_of_current_app()
        if app_loader is None:
            return
        changed = chain(sess.new, sess.dirty, sess.deleted)
        rows = [r for r in changed if isinstance(r, app_loader.model)]
        if rows:
            pending = sess.info.setdefault(_PENDING, set())
            for row in rows:
                pending |= _aliases(app_loader, row)

    @sa.event.listens_for(session, "after_commit")
    def invalidate(sess: Session) -> None:
        pending = sess.info.pop(_PENDING, None)
        if not pending:
            return
        state = current_app.extensions.get("tenant_cache")
        if state is None or not state.settings.auto_invalidate:
            return
        for ident in pending:
            state.invalidate(ident)

    @sa.event.listens_for(session, "after_soft_rollback")
    def forget(sess: Session, previous: Any) -> None:
        # A savepoint's rollback keeps what was flushed before it; invalidating a little
        # more than changed is harmless, missing a change is not.
        if previous.parent is None:
            sess.info.pop(_PENDING, None)
