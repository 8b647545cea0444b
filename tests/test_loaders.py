"""Tests of loaders.py: ``SQLAlchemyTenantLoader`` on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
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
    """The ``build_app`` app (seeded ``tenants`` table) on a SQLite file or on PostgreSQL."""
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


# -- rows as real apps store them -----------------------------------------------------------------

HOOLI_ID = uuid.UUID("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f")
LEGACY_ID = uuid.UUID("4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a")
#: A row no header could name consistently (an underscore in its slug).
LEGACY_ROW = {"id": LEGACY_ID, "slug": "legacy_slug", "domain": "legacy.test", "name": "Legacy"}


def _insert(db: Any, model: Any, *rows: dict[str, Any]) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.insert(model), [{"active": True, "plan": "free", **r} for r in rows])


def _agree(loader: SQLAlchemyTenantLoader) -> list[Tenant]:
    """Every tenant warm() would store is what load() answers for each of its aliases."""
    tenants = list(loader.iter_tenants())
    for tenant in tenants:
        for alias in tenant.aliases:
            assert loader.load(alias) == tenant, alias
    return tenants


class TestStoredSpellings:
    def test_slug_and_domain_in_another_case_resolve(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        _insert(
            db,
            model,
            {"id": HOOLI_ID, "slug": "Hooli", "domain": "Portal.Hooli.COM", "name": "Hooli"},
        )
        by_slug = sql_loader.load(TenantIdentifier.slug("hooli"))
        by_host = sql_loader.load(TenantIdentifier.host("portal.hooli.com"))
        assert by_slug is not None
        assert by_slug == by_host
        assert by_slug.slug == "hooli"
        assert by_slug.domains == ("portal.hooli.com",)
        assert by_slug in _agree(sql_loader)

    @pytest.mark.parametrize("stored", ["straße.de", "Straße.DE", "xn--strae-oqa.de"])
    def test_domain_in_unicode_or_punycode_resolves(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any, stored: str
    ) -> None:
        _insert(db, model, {"id": HOOLI_ID, "slug": "hooli", "domain": stored, "name": "H"})
        for host in ("straße.de", "xn--strae-oqa.de", "STRASSE.de".replace("SS", "ß")):
            tenant = sql_loader.load(TenantIdentifier.host(host))
            assert tenant is not None, host
            assert tenant.domains == ("xn--strae-oqa.de",)
        assert sql_loader.load(TenantIdentifier.host("strasse.de")) is None
        _agree(sql_loader)

    def test_domain_the_query_cannot_find_is_left_out_loudly(
        self,
        sql_loader: SQLAlchemyTenantLoader,
        db: Any,
        model: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        # Non-ASCII capitals: SQLite's lower() leaves them, PostgreSQL's may fold them.
        _insert(db, model, {"id": HOOLI_ID, "slug": "hooli", "domain": "ÄCME.test", "name": "H"})
        assert sql_loader.load(TenantIdentifier.host("äcme.test")) is None
        tenant = sql_loader.load(TenantIdentifier.slug("hooli"))
        assert tenant is not None
        assert tenant.domains == ()
        assert str(HOOLI_ID) in caplog.text
        assert "ÄCME.test" in caplog.text
        _agree(sql_loader)


class TestRowsThatCannotBeTenants:
    def test_warm_skips_the_row_with_one_warning_and_counts_it(
        self,
        sql_loader: SQLAlchemyTenantLoader,
        db: Any,
        model: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        _insert(db, model, LEGACY_ROW)
        caplog.clear()
        tenants = list(sql_loader.iter_tenants())
        assert {t.id for t in tenants} == {ACME_ID, GLOBEX_ID, INITECH_ID}
        warnings = [r for r in caplog.records if str(LEGACY_ID) in r.getMessage()]
        assert len(warnings) == 1
        assert "cannot be a tenant" in warnings[0].getMessage()
        assert sql_loader.rejected_rows == 1

    def test_its_lookups_are_not_found(
        self, sql_loader: SQLAlchemyTenantLoader, db: Any, model: Any
    ) -> None:
        _insert(db, model, LEGACY_ROW)
        assert sql_loader.load(TenantIdentifier.uuid(LEGACY_ID)) is None
        assert sql_loader.load(TenantIdentifier.host("legacy.test")) is None
        assert sql_loader.rejected_rows == 2
        assert sql_loader.load(TenantIdentifier.slug("acme")) is not None

    def test_through_the_app_a_cached_404_and_warm_serves_the_others(self, backend: Flask) -> None:
        db, model = backend.extensions["test"]["db"], backend.extensions["test"]["model"]
        loader, ext = backend.extensions["test"]["loader"], backend.extensions["test"]["ext"]
        _insert(db, model, LEGACY_ROW)
        assert ext.warm().read == 3
        assert loader.inner.rejected_rows == 1
        client = backend.test_client()
        assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
        assert loader.calls == []
        for _ in range(3):
            response = client.get("/whoami", headers={"Host": "legacy.test"})
            assert response.status_code == 404
            assert response.json["error"] == "tenant_not_found"
        assert loader.calls == [TenantIdentifier.host("legacy.test")]


def test_rejected_rows_are_in_the_stats() -> None:
    app = build_app(loader_factory=SQLAlchemyTenantLoader)
    with app.app_context():
        test = app.extensions["test"]
        _insert(test["db"], test["model"], LEGACY_ROW)
        assert test["ext"].stats()["loader"] == {"rejected_rows": 0}
        assert test["ext"].warm().rejected == 1
        assert test["ext"].stats()["loader"] == {"rejected_rows": 1}


# -- several domains per tenant -------------------------------------------------------------------


def _domain_app(database_uri: str) -> Flask:
    def factory(db: Any, model: Any, **kwargs: Any) -> Any:
        class TenantDomain(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "tenant_domains"
            id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
            tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"))
            domain: Mapped[str] = mapped_column(sa.String(253), unique=True)

        factory.domain_model = TenantDomain  # type: ignore[attr-defined]
        from tests.helpers.app import CountingLoader

        return CountingLoader(
            SQLAlchemyTenantLoader(db, model, domain_model=TenantDomain, **kwargs)
        )

    app = build_app(database_uri, loader_factory=factory)
    domain_model = factory.domain_model  # type: ignore[attr-defined]
    with app.app_context():
        db = app.extensions["test"]["db"]
        with db.engine.begin() as conn:
            conn.execute(
                sa.insert(domain_model),
                [
                    {"tenant_id": ACME_ID, "domain": "Shop.Acme.com"},
                    {"tenant_id": ACME_ID, "domain": "acmé.example"},
                    {"tenant_id": GLOBEX_ID, "domain": "globex.example"},
                ],
            )
    return app


class TestDomainTable:
    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
    def domain_app(self, request: pytest.FixtureRequest) -> Iterator[Flask]:
        if request.param == "sqlite":
            app = _domain_app("sqlite://")
            with app.app_context():
                yield app
            return
        admin, schema, url = _create_pg_schema()
        try:
            app = _domain_app(url)
            with app.app_context():
                yield app
                app.extensions["test"]["db"].engine.dispose()
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()

    def test_every_domain_resolves_and_is_listed(self, domain_app: Flask) -> None:
        loader = domain_app.extensions["test"]["loader"].inner
        acme = loader.load(TenantIdentifier.uuid(ACME_ID))
        assert acme is not None
        assert set(acme.domains) == {"acme.test", "shop.acme.com", "xn--acm-dma.example"}
        for host in ("acme.test", "shop.acme.com", "acmé.example", "xn--acm-dma.example"):
            assert loader.load(TenantIdentifier.host(host)) == acme, host
        globex = loader.load(TenantIdentifier.host("globex.example"))
        assert globex is not None
        assert globex.id == GLOBEX_ID
        tenants = _agree(loader)
        assert len(tenants) == 3

    def test_invalidating_one_domain_drops_every_alias(self, domain_app: Flask) -> None:
        ext, counting = (
            domain_app.extensions["test"]["ext"],
            domain_app.extensions["test"]["loader"],
        )
        client = domain_app.test_client()
        for host in ("shop.acme.com", "acme.test", "xn--acm-dma.example", "acme.example.com"):
            response = client.get("/whoami", headers={"Host": host})
            assert response.status_code == 200, host
            assert response.json["slug"] == "acme"
        assert ext.invalidate("shop.acme.com") == 1  # one entry, under every alias
        counting.calls.clear()
        for host in ("acme.test", "xn--acm-dma.example", "shop.acme.com"):
            assert client.get("/whoami", headers={"Host": host}).status_code == 200
        # Every alias was dropped: one reload, whose entry then answers every alias.
        assert counting.calls == [TenantIdentifier.host("acme.test")]


# -- integer and string primary keys -------------------------------------------------------------


def _keyed_model(key_type: Any) -> tuple[Any, sa.MetaData]:
    class KeyedBase(DeclarativeBase):
        pass

    class Keyed(KeyedBase):
        __tablename__ = "loader_test_keyed"
        id: Mapped[Any] = mapped_column(key_type, primary_key=True, autoincrement=False)
        slug: Mapped[str] = mapped_column(sa.String(63), unique=True)
        domain: Mapped[str | None] = mapped_column(sa.String(253), unique=True)
        name: Mapped[str] = mapped_column(sa.String(200))

    return Keyed, KeyedBase.metadata


class TestPrimaryKeyTypes:
    @pytest.mark.parametrize(("key_type", "key"), [(sa.Integer, 42), (sa.String(20), "org-42")])
    def test_id_keeps_its_type_and_is_reached_by_code_not_header(
        self, db: Any, key_type: Any, key: Any
    ) -> None:
        keyed, metadata = _keyed_model(key_type)
        metadata.drop_all(db.engine)
        metadata.create_all(db.engine)
        try:
            with db.engine.begin() as conn:
                conn.execute(
                    sa.insert(keyed),
                    [{"id": key, "slug": "answer", "domain": None, "name": "Answer"}],
                )
            loader = SQLAlchemyTenantLoader(db, keyed)
            tenant = loader.load(TenantIdentifier.id(key))
            assert tenant is not None
            assert tenant.id == key
            assert type(tenant.id) is type(key)
            assert loader.load(TenantIdentifier.slug("answer")) == tenant
            assert TenantIdentifier.id(key) in tenant.aliases
            # A header value is a slug, never a key that is not a UUID.
            assert loader.load(TenantIdentifier.slug("42")) is None
            assert loader.load(TenantIdentifier.id(7 if key == 42 else "org-7")) is None
            assert loader.load(TenantIdentifier.uuid(ACME_ID)) is None
            _agree(loader)
        finally:
            metadata.drop_all(db.engine)


@pytest.mark.postgres
def test_postgresql_uses_an_index_on_lower_column() -> None:
    """The documented expression indexes serve the loader's slug and domain queries."""
    admin, schema, url = _create_pg_schema()
    try:
        app = build_app(database_uri=url)
        with app.app_context():
            db, model = app.extensions["test"]["db"], app.extensions["test"]["model"]
            with db.engine.begin() as conn:
                conn.execute(
                    sa.text("CREATE UNIQUE INDEX tenants_slug_lower ON tenants (lower(slug))")
                )
                conn.execute(
                    sa.text("CREATE UNIQUE INDEX tenants_domain_lower ON tenants (lower(domain))")
                )
            executed: list[tuple[str, Any]] = []

            def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
                executed.append((statement, parameters))

            sa.event.listen(db.engine, "before_cursor_execute", record)
            loader = SQLAlchemyTenantLoader(db, model, active_column="active")
            assert loader.load(TenantIdentifier.slug("acme")) is not None
            assert loader.load(TenantIdentifier.host("portal.initech.example")) is not None
            sa.event.remove(db.engine, "before_cursor_execute", record)
            with db.engine.connect() as conn:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plans = [
                    "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql, params))
                    for sql, params in executed
                ]
            db.engine.dispose()
        assert "tenants_slug_lower" in plans[0], plans[0]
        assert "tenants_domain_lower" in plans[1], plans[1]
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_loads_in_several_threads_take_turns_on_an_in_memory_sqlite_connection() -> None:
    # Flask-SQLAlchemy gives "sqlite://" one connection that every thread shares (StaticPool);
    # two loads on it at once failed ("bad parameter or other API misuse"), read a row of
    # None, or crashed Python 3.13. The shadow comparisons load beside the request's own load.
    app = build_app("sqlite://")
    loader = app.extensions["test"]["loader"].inner
    lock = threading.Lock()
    running = [0, 0]  # now, most ever

    def enter(*_: Any) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.02)  # long enough for another thread to come in, if it can

    def leave(*_: Any) -> None:
        with lock:
            running[0] -= 1

    answers: list[Any] = []

    def load() -> None:
        with app.app_context():
            for slug in ("acme", "globex", "initech"):
                answers.append(loader.load(TenantIdentifier.slug(slug)).slug)

    with app.app_context():
        engine = app.extensions["test"]["db"].engine
    sa.event.listen(engine, "before_cursor_execute", enter)
    sa.event.listen(engine, "after_cursor_execute", leave)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(answers) == sorted(["acme", "globex", "initech"] * 4)
    assert running[1] == 1
