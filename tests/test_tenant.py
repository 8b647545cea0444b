"""Tests of tenant.py: the frozen, picklable, JSON-able tenant snapshot."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import uuid
from typing import Any

import pytest

from flask_tenant_cache.identifiers import InvalidIdentifier, TenantIdentifier
from flask_tenant_cache.tenant import Tenant

TID = uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a")


def make(**overrides: Any) -> Tenant:
    values: dict[str, Any] = {
        "id": TID,
        "slug": "acme",
        "name": "Acme Corp",
        "domains": ("acme.test", "portal.acme.example"),
        "is_active": True,
        "extra": {"plan": "pro", "seats": 12, "tags": ["a", "b"], "meta": {"region": "eu"}},
    }
    values.update(overrides)
    return Tenant(**values)


class TestFrozen:
    @pytest.mark.parametrize(
        ("attr", "value"),
        [
            ("id", uuid.uuid4()),
            ("slug", "other"),
            ("name", "Other"),
            ("domains", ()),
            ("is_active", False),
            ("extra", {}),
        ],
    )
    def test_assignment_raises(self, attr: str, value: Any) -> None:
        tenant = make()
        before = getattr(tenant, attr)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(tenant, attr, value)
        assert getattr(tenant, attr) == before

    def test_deletion_raises(self) -> None:
        tenant = make()
        with pytest.raises(dataclasses.FrozenInstanceError):
            del tenant.slug

    def test_no_new_attributes(self) -> None:
        tenant = make()
        with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
            tenant.plan = "pro"  # type: ignore[attr-defined]
        assert not hasattr(tenant, "plan")

    def test_hashable_and_equal_by_value(self) -> None:
        assert make(extra={}) == make(extra={})
        assert make(name="A") != make(name="B")
        assert hash(make(extra={})) == hash(make(extra={}))
        assert len({make(), make(), make(slug="other")}) == 2


class TestNormalisation:
    @pytest.mark.parametrize("raw_id", [TID, str(TID), str(TID).upper(), TID.hex, TID.hex.upper()])
    def test_string_id_keeps_its_type_and_is_the_uuid_alias(self, raw_id: Any) -> None:
        tenant = make(id=raw_id)
        assert tenant.id == raw_id
        assert f"uuid:{TID}" in tenant.alias_keys

    def test_uuid_subclass_or_instance_kept(self) -> None:
        assert make(id=TID).id is TID

    @pytest.mark.parametrize("bad_id", ["", "a b", "x\x00", 1.5, None, True])
    def test_bad_id_raises(self, bad_id: Any) -> None:
        with pytest.raises(InvalidIdentifier):
            make(id=bad_id)

    @pytest.mark.parametrize(("tenant_id", "key"), [(42, "id:42"), ("org-7", "id:org-7")])
    def test_int_and_string_ids_keep_their_type(self, tenant_id: Any, key: str) -> None:
        tenant = make(id=tenant_id)
        assert tenant.id == tenant_id
        assert type(tenant.id) is type(tenant_id)
        assert key in tenant.alias_keys
        assert Tenant.from_dict(json.loads(json.dumps(tenant.to_dict()))) == tenant
        assert pickle.loads(pickle.dumps(tenant)).id == tenant_id

    def test_slug_lowercased(self) -> None:
        assert make(slug="AcMe").slug == "acme"

    @pytest.mark.parametrize("bad_slug", ["", "-acme", "ac me", "café", "a" * 64, "acme.test"])
    def test_bad_slug_raises(self, bad_slug: str) -> None:
        with pytest.raises(InvalidIdentifier):
            make(slug=bad_slug)

    def test_domains_normalised(self) -> None:
        tenant = make(domains=["ACME.Test.", "bücher.example:8080", "xn--bcher-kva.example"])
        assert tenant.domains == ("acme.test", "xn--bcher-kva.example", "xn--bcher-kva.example")
        assert isinstance(tenant.domains, tuple)

    def test_bad_domain_raises(self) -> None:
        with pytest.raises(InvalidIdentifier):
            make(domains=["bad_domain.test"])

    def test_defaults(self) -> None:
        tenant = Tenant(id=TID, slug="acme")
        assert tenant.name == ""
        assert tenant.domains == ()
        assert tenant.is_active is True
        assert dict(tenant.extra) == {}


class TestExtra:
    def test_read_only(self) -> None:
        tenant = make()
        with pytest.raises(TypeError):
            tenant.extra["plan"] = "free"  # type: ignore[index]
        with pytest.raises(TypeError):
            del tenant.extra["plan"]  # type: ignore[attr-defined]
        assert tenant.extra["plan"] == "pro"

    def test_copied_from_the_callers_dict(self) -> None:
        source = {"plan": "pro"}
        tenant = make(extra=source)
        source["plan"] = "free"
        source["new"] = 1
        assert dict(tenant.extra) == {"plan": "pro"}

    def test_default_extra_not_shared(self) -> None:
        a, b = Tenant(id=TID, slug="a"), Tenant(id=uuid.uuid4(), slug="b")
        with pytest.raises(TypeError):
            a.extra["x"] = 1  # type: ignore[index]
        assert dict(b.extra) == {}


class TestSerialisation:
    def test_pickle_round_trip(self) -> None:
        tenant = make()
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            clone = pickle.loads(pickle.dumps(tenant, protocol=protocol))
            assert clone == tenant
            assert clone is not tenant
            assert isinstance(clone.id, uuid.UUID)
            assert clone.extra == tenant.extra
            with pytest.raises(TypeError):
                clone.extra["plan"] = "free"
            with pytest.raises(dataclasses.FrozenInstanceError):
                clone.slug = "x"  # type: ignore[misc]

    def test_copy_and_deepcopy(self) -> None:
        tenant = make()
        assert copy.copy(tenant) == tenant
        assert copy.deepcopy(tenant) == tenant

    def test_to_dict_is_json_able(self) -> None:
        data = make().to_dict()
        assert data == {
            "id": str(TID),
            "id_type": "uuid",
            "slug": "acme",
            "name": "Acme Corp",
            "domains": ["acme.test", "portal.acme.example"],
            "is_active": True,
            "extra": {"plan": "pro", "seats": 12, "tags": ["a", "b"], "meta": {"region": "eu"}},
        }
        assert json.loads(json.dumps(data)) == data

    @pytest.mark.parametrize(
        "tenant",
        [
            make(),
            make(is_active=False),
            make(domains=(), extra={}),
            Tenant(id=TID, slug="acme"),
            make(domains=("bücher.example",), name="Bücher ✓"),
        ],
    )
    def test_json_round_trip(self, tenant: Tenant) -> None:
        clone = Tenant.from_dict(json.loads(json.dumps(tenant.to_dict())))
        assert clone == tenant
        assert clone.to_dict() == tenant.to_dict()
        assert isinstance(clone.id, uuid.UUID)
        assert isinstance(clone.domains, tuple)

    def test_from_dict_defaults(self) -> None:
        tenant = Tenant.from_dict({"id": str(TID), "slug": "ACME"})
        assert tenant == Tenant(id=TID, slug="acme")

    def test_from_dict_validates(self) -> None:
        with pytest.raises(ValueError, match="hexadecimal UUID"):
            Tenant.from_dict({"id": "nope", "slug": "acme"})
        with pytest.raises(InvalidIdentifier):
            Tenant.from_dict({"id": str(TID), "slug": "a b"})
        with pytest.raises(KeyError):
            Tenant.from_dict({"slug": "acme"})


class TestAliases:
    def test_aliases(self) -> None:
        tenant = make()
        assert tenant.aliases == (
            TenantIdentifier("uuid", str(TID)),
            TenantIdentifier("slug", "acme"),
            TenantIdentifier("host", "acme.test"),
            TenantIdentifier("host", "portal.acme.example"),
        )

    def test_alias_keys(self) -> None:
        assert make().alias_keys == frozenset(
            {f"uuid:{TID}", "slug:acme", "host:acme.test", "host:portal.acme.example"}
        )

    def test_no_domains(self) -> None:
        tenant = Tenant(id=TID, slug="Acme")
        assert tenant.alias_keys == frozenset({f"uuid:{TID}", "slug:acme"})

    def test_alias_keys_match_parsed_identifiers(self) -> None:
        from flask_tenant_cache.identifiers import TenantIdentifierValidator

        validator = TenantIdentifierValidator(["example.com"])
        tenant = make(id=TID, slug="ACME", domains=["Bücher.Example."])
        for raw in (TID.hex, str(TID).upper(), "Acme", "acme.example.com", "xn--bcher-kva.example"):
            assert validator.parse(raw).cache_key in tenant.alias_keys
        assert validator.parse("globex").cache_key not in tenant.alias_keys


def test_answers_to_every_alias_and_nothing_else() -> None:
    tenant = Tenant(id=uuid.UUID(int=7), slug="acme", domains=("acme.test", "b.test"))
    for alias in tenant.aliases:
        assert tenant.answers_to(alias)
    others = [
        TenantIdentifier("uuid", str(uuid.UUID(int=8))),
        TenantIdentifier("slug", "acme-2"),
        TenantIdentifier("host", "c.test"),
        TenantIdentifier("host", "acme"),
    ]
    assert [tenant.answers_to(o) for o in others] == [False] * 4
