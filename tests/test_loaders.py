"""Tests of loaders.py: ``SQLAlchemyTenantLoader`` on SQLite in memory and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_tenant_cache import SQLAlchemyTenantLoader, Tenant, TenantIdentifier, TenantLoader
from flask_tenant_cache.loaders import WarmableTenantLoader
from tests.helpers.app import ACME_ID, GLOBEX_ID, INITECH_ID, SEED, build_app, need_service

PG_URL = os.environ.get(
    "TENANT_CACHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _create_pg_schema() -> tuple[sa.Engine, str, str]:
    """A fresh schema, and a URL whose connections use it, so parallel runs never collide."""
    schema = f"tc_loaders_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        need_service("PostgreSQL", str(exc))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return admin, schema, url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[Flask]:
    """The ``build_app`` app (seeded ``tenants`` table) on SQLite in memory or on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("app")
        return
    admin, schema, url = _create_pg_schema()
    try:
        try:
            app = build_app(database_uri=url)
        except sa.exc.OperationalError as exc:
            need_service("PostgreSQL", str(exc))
        with app.app_context():
            yield app
            db = app.extensions["test"]["db"]
            db.session.remove()
            db.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(backend: Flask) -> Any:
    return backend.extensions["test"]["db"]


@pytest.fixture
def model(backend: Flask) -> Any:
    return backend.extensions["test"]["model"]


@pytest.fixture
def sql_loader(db: Any, model: Any) -> SQLAlchemyTenantLoader:
    return SQLAlchemyTenantLoader(db, model, active_column="active")


# -- a second model, with other column names ----------------------------------------------------

ORG_ID = uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
DORMANT_ID = uuid.UUID("9f8e7d6c-5b4a-4c3d-8e1f-0a9b8c7d6e5f")


def make_org_model() -> tuple[Any, sa.MetaData]:
    class OrgBase(DeclarativeBase):
        pass

    class Org(OrgBase):
        __tablename__ = "loader_test_orgs"
        org_uuid: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
        handle: Mapped[str] = mapped_column(sa.String(63), unique=True)
        hostname: Mapped[str | None] = mapped_column(sa.String(253), unique=True)
        title: Mapped[str | None] = mapped_column(sa.String(200))
        enabled: Mapped[bool] = mapped_column(sa.Boolean)
        region: Mapped[str] = mapped_column(sa.String(20))
        seats: Mapped[int] = mapped_column(sa.Integer)

    return Org, OrgBase.metadata


@pytest.fixture
def org_model(db: Any) -> Iterator[Any]:
    org, metadata = make_org_model()
    metadata.drop_all(db.engine)
    metadata.create_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(org),
            [
                {
                    "org_uuid": ORG_ID,
                    "handle": "umbrella",
                    "hostname": "umbrella.example",
                    "title": "Umbrella",
                    "enabled": True,
                    "region": "eu",
                    "seats": 40,
                },
                {
                    "org_uuid": DORMANT_ID,
                    "handle": "dormant",
                    "hostname": None,
                    "title": None,
                    "enabled": False,
                    "region": "us",
                    "seats": 0,
                },
            ],
        )
    yield org
    metadata.drop_all(db.engine)


# -- the contract, on both backends -------------------------------------------------------------

EXPECTED = {
    tenant_id: Tenant(
        id=tenant_id,
        slug=slug,
        name=name,
        domains=(domain,) if domain else (),
        is_active=True,
    )
    for tenant_id, slug, domain, name in SEED
}


class TestSQLAlchemyTenantLoader:
    def test_is_a_warmable_loader(self, sql_loader: SQLAlchemyTenantLoader) -> None:
        assert isinstance(sql_loader, TenantLoader)
        assert isinstance(sql_loader, WarmableTenantLoader)

    @pytest.mark.parametrize("tenant_id", [ACME_ID, GLOBEX_ID, INITECH_ID])
    def test_load_by_uuid(self, sql_loader: SQLAlchemyTenantLoader, tenant_id: uuid.UUID) -> None:
        assert sql_loader.load(TenantIdentifier.uuid(tenant_id)) == EXPECTED[tenant_id]

    @pytest.mark.parametrize(
        ("slug", "tenant_id"), [("acme", ACME_ID), ("globex", GLOBEX_ID), ("initech", INITECH_ID)]
    )
    def test_load_by_slug(
        self, sql_loader: SQLAlchemyTenantLoader, slug: str, tenant_id: uuid.UUID
    ) -> None:
        assert sql_loader.load(TenantIdentifier.slug(slug)) == EXPECTED[tenant_id]

    @pytest.mark.parametrize(
        ("host", "tenant_id"), [("acme.test", ACME_ID), ("Portal.Initech.Example.", INITECH_ID)]
    )
    def test_load_by_host(
        self, sql_loader: SQLAlchemyTenantLoader, host: str, tenant_id: uuid.UUID
    ) -> None:
        tenant = sql_loader.load(TenantIdentifier.host(host))
        assert tenant == EXPECTED[tenant_id]
        assert tenant is not None
        assert tenant.domains == EXPECTED[tenant_id].domains

    @pytest.mark.parametrize(
        "ident",
        [
            TenantIdentifier.uuid(uuid.UUID("00000000-0000-4000-8000-000000000000")),
            TenantIdentifier.slug("nope"),
            TenantIdentifier.slug("acme-corp"),
            TenantIdentifier.host("nope.test"),
            TenantIdentifier.host("test"),
            # A slug is not a host, nor the other way round.
            TenantIdentifier("host", "acme"),
            TenantIdentifier("slug", "acme.test"),
        ],
        ids=lambda ident: ident.cache_key,
    )
    def test_unknown_is_none(
        self, sql_loader: SQLAlchemyTenantLoader, ident: TenantIdentifier
    ) -> None:
        assert sql_loader.load(ident) is None

    def test_inactive_tenant(self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any) -> None:
        with db.engine.begin() as conn:
            conn.execute(sa.update(model).where(model.id == GLOBEX_ID).values(active=False))
        tenant = sql_loader.load(TenantIdentifier.slug("globex"))
        assert tenant is not None
        assert tenant.is_active is False
        assert tenant.id == GLOBEX_ID
        active = sql_loader.load(TenantIdentifier.slug("acme"))
        assert active is not None
        assert active.is_active is True

    def test_without_active_column_everyone_is_active(self, db: Any, model: Any) -> None:
        with db.engine.begin() as conn:
            conn.execute(sa.update(model).values(active=False))
        loader = SQLAlchemyTenantLoader(db, model)
        tenant = loader.load(TenantIdentifier.slug("acme"))
        assert tenant is not None
        assert tenant.is_active is True

    def test_without_domain_column_hosts_find_nothing(self, db: Any, model: Any) -> None:
        loader = SQLAlchemyTenantLoader(db, model, domain_column=None)
        assert loader.load(TenantIdentifier.host("acme.test")) is None
        tenant = loader.load(TenantIdentifier.slug("acme"))
        assert tenant is not None
        assert tenant.domains == ()

    def test_extra_columns(self, db: Any, model: Any) -> None:
        with db.engine.begin() as conn:
            conn.execute(sa.update(model).where(model.id == ACME_ID).values(plan="enterprise"))
        loader = SQLAlchemyTenantLoader(db, model, active_column="active", extra_columns=["plan"])
        acme = loader.load(TenantIdentifier.uuid(ACME_ID))
        globex = loader.load(TenantIdentifier.uuid(GLOBEX_ID))
        assert acme is not None
        assert globex is not None
        assert dict(acme.extra) == {"plan": "enterprise"}
        assert dict(globex.extra) == {"plan": "free"}
        with pytest.raises(TypeError):
            acme.extra["plan"] = "free"  # type: ignore[index]
        # Without extra_columns nothing is copied.
        plain = SQLAlchemyTenantLoader(db, model).load(TenantIdentifier.uuid(ACME_ID))
        assert plain is not None
        assert dict(plain.extra) == {}

    def test_custom_column_names(self, db: Any, org_model: Any) -> None:
        loader = SQLAlchemyTenantLoader(
            db,
            org_model,
            id_column="org_uuid",
            slug_column="handle",
            domain_column="hostname",
            name_column="title",
            active_column="enabled",
            extra_columns=("region", "seats"),
        )
        expected = Tenant(
            id=ORG_ID,
            slug="umbrella",
            name="Umbrella",
            domains=("umbrella.example",),
            is_active=True,
            extra={"region": "eu", "seats": 40},
        )
        for ident in (
            TenantIdentifier.uuid(ORG_ID),
            TenantIdentifier.slug("UMBRELLA"),
            TenantIdentifier.host("umbrella.example"),
        ):
            tenant = loader.load(ident)
            assert tenant == expected
            assert tenant is not None
            assert dict(tenant.extra) == {"region": "eu", "seats": 40}
        dormant = loader.load(TenantIdentifier.slug("dormant"))
        assert dormant == Tenant(
            id=DORMANT_ID,
            slug="dormant",
            name="",
            domains=(),
            is_active=False,
            extra={"region": "us", "seats": 0},
        )
        # The other table's tenants are not this loader's.
        assert loader.load(TenantIdentifier.slug("acme")) is None
        assert {t.slug for t in loader.iter_tenants()} == {"umbrella", "dormant"}

    def test_unknown_column_name_fails_at_construction(self, db: Any, model: Any) -> None:
        with pytest.raises(AttributeError):
            SQLAlchemyTenantLoader(db, model, slug_column="handle")
        with pytest.raises(AttributeError):
            SQLAlchemyTenantLoader(db, model, extra_columns=["nope"])

    def test_iter_tenants_returns_all(self, sql_loader: SQLAlchemyTenantLoader) -> None:
        tenants = list(sql_loader.iter_tenants())
        assert len(tenants) == len(SEED)
        assert {t.id: t for t in tenants} == EXPECTED
        assert all(type(t) is Tenant for t in tenants)
        # A fresh query each time, not a consumed iterator or a cached list.
        assert len(list(sql_loader.iter_tenants())) == len(SEED)

    def test_iter_tenants_sees_new_rows(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        new_id = uuid.uuid4()
        with db.engine.begin() as conn:
            conn.execute(
                sa.insert(model).values(
                    id=new_id, slug="hooli", domain=None, name="Hooli", active=True, plan="free"
                )
            )
        assert {t.slug for t in sql_loader.iter_tenants()} == {
            "acme",
            "globex",
            "initech",
            "hooli",
        }
        assert sql_loader.load(TenantIdentifier.uuid(new_id)) == Tenant(
            id=new_id, slug="hooli", name="Hooli"
        )

    def test_iter_tenants_empty_table(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        with db.engine.begin() as conn:
            conn.execute(sa.delete(model))
        assert list(sql_loader.iter_tenants()) == []

    def test_returns_snapshots_not_orm_objects(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        db.session.expunge_all()
        results = [
            sql_loader.load(TenantIdentifier.uuid(ACME_ID)),
            sql_loader.load(TenantIdentifier.slug("globex")),
            sql_loader.load(TenantIdentifier.host("portal.initech.example")),
            *sql_loader.iter_tenants(),
        ]
        for tenant in results:
            assert type(tenant) is Tenant
            assert not isinstance(tenant, model)
            assert sa.inspect(tenant, raiseerr=False) is None
            assert isinstance(tenant.id, uuid.UUID)
        # The request's session holds no tenant rows afterwards.
        assert len(db.session.identity_map) == 0
        assert not db.session().in_transaction()

    def test_snapshot_does_not_follow_the_row(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        before = sql_loader.load(TenantIdentifier.slug("acme"))
        with db.engine.begin() as conn:
            conn.execute(sa.update(model).where(model.id == ACME_ID).values(name="Renamed"))
        assert before is not None
        assert before.name == "Acme Corp"
        after = sql_loader.load(TenantIdentifier.slug("acme"))
        assert after is not None
        assert after.name == "Renamed"

    def test_loader_holds_no_connection(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        sql_loader.load(TenantIdentifier.slug("acme"))
        list(sql_loader.iter_tenants())
        # Dropping the table needs every connection to have let go of it (PostgreSQL locks).
        model.__table__.drop(db.engine)
        assert not sa.inspect(db.engine).has_table(model.__tablename__)
        model.__table__.create(db.engine)

    def test_database_error_propagates(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        assert sql_loader.load(TenantIdentifier.slug("acme")) is not None
        model.__table__.drop(db.engine)
        with pytest.raises(sa.exc.DBAPIError):
            sql_loader.load(TenantIdentifier.slug("acme"))
        with pytest.raises(sa.exc.DBAPIError):
            sql_loader.load(TenantIdentifier.uuid(ACME_ID))
        with pytest.raises(sa.exc.DBAPIError):
            list(sql_loader.iter_tenants())
        model.__table__.create(db.engine)
        # Back to "not found", not a cached error.
        assert sql_loader.load(TenantIdentifier.slug("acme")) is None

    def test_unreachable_database_error_propagates(self, backend: Flask, model: Any) -> None:
        db = backend.extensions["test"]["db"]
        if db.engine.dialect.name == "sqlite":
            dead_url = "sqlite:////nonexistent-tenant-cache-dir/tenants.db"
        else:
            dead_url = db.engine.url.set(port=1).render_as_string(hide_password=False)
        dead = sa.create_engine(dead_url)

        class DeadDatabase:
            engine = dead

        loader = SQLAlchemyTenantLoader(DeadDatabase(), model, active_column="active")
        try:
            with pytest.raises(sa.exc.OperationalError):
                loader.load(TenantIdentifier.slug("acme"))
            with pytest.raises(sa.exc.OperationalError):
                list(loader.iter_tenants())
        finally:
            dead.dispose()
