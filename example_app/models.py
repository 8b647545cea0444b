"""The example's tenant table, its Flask-SQLAlchemy instance and the demo tenants."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ACME_ID",
    "DEMO_TENANTS",
    "GLOBEX_ID",
    "INITECH_ID",
    "Base",
    "Tenant",
    "db",
    "seed_demo_tenants",
]


class Base(DeclarativeBase):
    """The declarative base; Flask-SQLAlchemy shares its metadata."""


db = SQLAlchemy(model_class=Base)


class Tenant(Base):
    """One tenant row; the extension caches :class:`flask_tenant_cache.Tenant` snapshots of it."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(sa.String(63), unique=True)
    domain: Mapped[str | None] = mapped_column(sa.String(253), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)


ACME_ID = uuid.UUID("0b6f1d3e-6a51-4c59-9a8e-2f5d7c1a0001")
GLOBEX_ID = uuid.UUID("0b6f1d3e-6a51-4c59-9a8e-2f5d7c1a0002")
INITECH_ID = uuid.UUID("0b6f1d3e-6a51-4c59-9a8e-2f5d7c1a0003")

#: (id, slug, custom domain, name); fixed ids so the printed curl lines always work.
DEMO_TENANTS: tuple[tuple[uuid.UUID, str, str | None, str], ...] = (
    (ACME_ID, "acme", None, "Acme Corporation"),
    (GLOBEX_ID, "globex", None, "Globex Corporation"),
    (INITECH_ID, "initech", "portal.initech.test", "Initech"),
)


def seed_demo_tenants() -> int:
    """Create the table and, if it is empty, the demo tenants; return how many were added.

    An existing table is left as it is, so edits made through the admin page survive a restart.
    """
    db.create_all()
    if db.session.scalar(sa.select(sa.func.count()).select_from(Tenant)):
        return 0
    for tenant_id, slug, domain, name in DEMO_TENANTS:
        db.session.add(Tenant(id=tenant_id, slug=slug, domain=domain, name=name, active=True))
    db.session.commit()
    return len(DEMO_TENANTS)
