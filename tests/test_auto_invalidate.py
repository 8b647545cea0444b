"""TENANT_CACHE_AUTO_INVALIDATE: a commit that changes tenant rows invalidates their aliases."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

from flask_tenant_cache import (
    SQLAlchemyTenantLoader,
    Tenant,
    TenantCache,
    TenantIdentifier,
)
from tests.helpers.app import ACME_ID, SEED, CountingLoader, build_app, make_model


class CountingSQLAlchemyLoader(SQLAlchemyTenantLoader):
    """The real loader (auto-invalidation needs one), counting its calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[TenantIdentifier] = []
        self._lock = threading.Lock()

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        with self._lock:
            self.calls.append(identifier)
        return super().load(identifier)


def build_auto_app(**config: Any) -> Flask:
    """``build_app``'s app with auto-invalidation on the real loader, which counts its calls."""
    config = {"TENANT_CACHE_AUTO_INVALIDATE": True, **config}
    return build_app(loader_factory=CountingSQLAlchemyLoader, **config)


@pytest.fixture
def app() -> Iterator[Flask]:
    app = build_auto_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def db_of(app: Flask) -> Any:
    return app.extensions["test"]["db"]


def model_of(app: Flask) -> Any:
    return app.extensions["test"]["model"]


def calls(app: Flask) -> int:
    return len(app.extensions["test"]["loader"].calls)


def by_slug(client: FlaskClient, slug: str) -> Any:
    return client.get("/whoami", headers={"X-Tenant-ID": slug})


def by_host(client: FlaskClient, host: str) -> Any:
    return client.get("/whoami", headers={"Host": host})


def warm_acme(client: FlaskClient) -> None:
    """Cache acme by slug, UUID and domain (and check it is served from the cache)."""
    for response in (
        by_slug(client, "acme"),
        by_slug(client, str(ACME_ID)),
        by_host(client, "acme.test"),
    ):
        assert response.status_code == 200
        assert response.json["slug"] == "acme"


def acme_row(app: Flask) -> Any:
    return db_of(app).session.get(model_of(app), ACME_ID)


def test_renaming_the_slug_invalidates_old_and_new(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    assert by_slug(client, "acme-labs").status_code == 404  # a negative entry for the new slug
    before = calls(app)
    warm_acme(client)
    assert by_slug(client, "acme-labs").status_code == 404
    assert calls(app) == before  # everything above was cached

    acme_row(app).slug = "acme-labs"
    db_of(app).session.commit()

    assert by_slug(client, "acme").status_code == 404
    response = by_slug(client, "acme-labs")
    assert response.status_code == 200
    assert response.json["slug"] == "acme-labs"
    assert by_slug(client, str(ACME_ID)).json["slug"] == "acme-labs"
    assert by_host(client, "acme.test").json["slug"] == "acme-labs"
    assert calls(app) == before + 2  # "acme", then "acme-labs", which cached every alias


def test_a_row_changed_after_its_attributes_expired_is_invalidated(
    app: Flask, client: FlaskClient
) -> None:
    db = db_of(app)
    row = acme_row(app)
    db.session.commit()  # expire_on_commit: the row's loaded values are gone
    warm_acme(client)
    row.slug = "acme-labs"  # set without loading the old value
    db.session.commit()
    assert by_slug(client, "acme").status_code == 404
    assert by_slug(client, "acme-labs").status_code == 200
    assert by_host(client, "acme.test").json["slug"] == "acme-labs"


def test_deleting_an_expired_row_is_invalidated(app: Flask, client: FlaskClient) -> None:
    db = db_of(app)
    row = acme_row(app)
    db.session.commit()
    warm_acme(client)
    db.session.delete(row)
    db.session.commit()
    assert by_slug(client, "acme").status_code == 404
    assert by_slug(client, str(ACME_ID)).status_code == 404
    assert by_host(client, "acme.test").status_code == 404


def test_moving_the_domain_invalidates_old_and_new(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    assert by_host(client, "acme.example.org").status_code == 404  # negative entry
    acme_row(app).domain = "acme.example.org"
    db_of(app).session.commit()
    assert by_host(client, "acme.test").status_code == 404
    response = by_host(client, "acme.example.org")
    assert response.status_code == 200
    assert response.json["slug"] == "acme"


def test_changing_the_name_is_seen_by_every_alias(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    acme_row(app).name = "Acme Renamed"
    db_of(app).session.commit()
    assert by_slug(client, "acme").json["name"] == "Acme Renamed"
    assert by_slug(client, str(ACME_ID)).json["name"] == "Acme Renamed"
    assert by_host(client, "acme.test").json["name"] == "Acme Renamed"


def test_deleting_a_tenant_is_404_at_once(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    db = db_of(app)
    db.session.delete(acme_row(app))
    db.session.commit()
    assert by_slug(client, "acme").status_code == 404
    assert by_slug(client, str(ACME_ID)).status_code == 404
    assert by_host(client, "acme.test").status_code == 404


def test_inserting_a_cached_not_found_tenant_is_200_at_once(
    app: Flask, client: FlaskClient
) -> None:
    assert by_slug(client, "newco").status_code == 404
    before = calls(app)
    assert by_slug(client, "newco").status_code == 404
    assert calls(app) == before  # the not-found answer is cached
    db = db_of(app)
    db.session.add(model_of(app)(id=uuid.uuid4(), slug="newco", domain=None, name="NewCo"))
    db.session.commit()
    response = by_slug(client, "newco")
    assert response.status_code == 200
    assert response.json["name"] == "NewCo"


def test_a_rollback_invalidates_nothing(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    before = calls(app)
    invalidations = app.extensions["tenant_cache"].stats()["v2"]["invalidations"]
    db = db_of(app)
    acme_row(app).slug = "acme-labs"
    db.session.flush()  # the listener has seen the change...
    db.session.rollback()  # ...which never happened
    # A later commit that touches no tenant row must not invalidate what was rolled back.
    db.session.execute(sa.text("select 1"))
    db.session.commit()
    warm_acme(client)
    assert calls(app) == before
    assert app.extensions["tenant_cache"].stats()["v2"]["invalidations"] == invalidations


def test_a_commit_of_other_tenants_keeps_acme_cached(app: Flask, client: FlaskClient) -> None:
    warm_acme(client)
    before = calls(app)
    db = db_of(app)
    db.session.get(model_of(app), SEED[1][0]).name = "Globex Renamed"
    db.session.commit()
    warm_acme(client)
    assert calls(app) == before


def test_off_by_default_a_commit_invalidates_nothing() -> None:
    app = build_auto_app(TENANT_CACHE_AUTO_INVALIDATE=False)
    client = app.test_client()
    with app.app_context():
        warm_acme(client)
        assert by_slug(client, "acme-labs").status_code == 404
        acme_row(app).slug = "acme-labs"
        db_of(app).session.commit()
        # Documented: without the key, the stale entry is served until invalidated.
        assert by_slug(client, "acme").json["slug"] == "acme"
        assert by_slug(client, "acme-labs").status_code == 404
        app.extensions["test"]["ext"].invalidate("acme")
        assert by_slug(client, "acme").status_code == 404
        assert by_slug(client, "acme-labs").json["slug"] == "acme-labs"


def test_a_loader_that_is_not_sqlalchemy_is_rejected_at_init_app() -> None:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", TENANT_CACHE_AUTO_INVALIDATE=True)
    db = SQLAlchemy(app)
    wrapped = CountingLoader(SQLAlchemyTenantLoader(db, make_model(db)))
    with pytest.raises(ValueError, match="TENANT_CACHE_AUTO_INVALIDATE"):
        TenantCache(app, loader=wrapped)
    assert "tenant_cache" not in app.extensions


def test_a_non_boolean_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="TENANT_CACHE_AUTO_INVALIDATE"):
        build_auto_app(TENANT_CACHE_AUTO_INVALIDATE="yes")


def test_a_savepoint_rollback_keeps_what_was_flushed_before_it(
    app: Flask, client: FlaskClient
) -> None:
    warm_acme(client)
    session = db_of(app).session
    acme_row(app).slug = "acme-labs"
    session.flush()  # collected: acme's old and new names
    savepoint = session.begin_nested()
    acme_row(app).name = "Never Saved"
    session.flush()
    savepoint.rollback()
    session.commit()
    assert by_slug(client, "acme").status_code == 404
    assert by_slug(client, "acme-labs").json["name"] == "Acme Corp"
