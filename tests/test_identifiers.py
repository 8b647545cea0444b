"""Tests of identifiers.py: parsing, validation and normalisation of tenant identifiers."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flask_tenant_cache.identifiers import (
    MAX_HOST_LENGTH,
    MAX_SLUG_LENGTH,
    InvalidIdentifier,
    TenantIdentifier,
    TenantIdentifierValidator,
    normalize_host,
)

UID = uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a")
CANONICAL_UUID = "5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"


@pytest.fixture
def validator() -> TenantIdentifierValidator:
    return TenantIdentifierValidator(["example.com"])


# -- TenantIdentifier ---------------------------------------------------------------------------


class TestTenantIdentifier:
    def test_cache_key_is_kind_and_value(self) -> None:
        assert TenantIdentifier("slug", "acme").cache_key == "slug:acme"
        assert TenantIdentifier("host", "acme.test").cache_key == "host:acme.test"
        assert TenantIdentifier("uuid", CANONICAL_UUID).cache_key == f"uuid:{CANONICAL_UUID}"

    def test_same_value_different_kind_differ(self) -> None:
        assert TenantIdentifier("slug", "acme") != TenantIdentifier("host", "acme")
        assert (
            TenantIdentifier("slug", "acme").cache_key != TenantIdentifier("host", "acme").cache_key
        )

    def test_equal_and_hashable(self) -> None:
        a, b = TenantIdentifier("slug", "acme"), TenantIdentifier("slug", "acme")
        assert a == b
        assert hash(a) == hash(b)
        assert len({a, b}) == 1

    def test_frozen(self) -> None:
        ident = TenantIdentifier("slug", "acme")
        with pytest.raises(dataclasses.FrozenInstanceError):
            ident.value = "other"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            ident.cache_key = "slug:other"  # type: ignore[misc]
        assert ident.cache_key == "slug:acme"

    @pytest.mark.parametrize(
        "value",
        [UID, CANONICAL_UUID, CANONICAL_UUID.upper(), UID.hex, UID.hex.upper(), f"{{{UID}}}"],
    )
    def test_uuid_constructor_canonicalises(self, value: object) -> None:
        ident = TenantIdentifier.uuid(value)  # type: ignore[arg-type]
        assert ident.kind == "uuid"
        assert ident.value == CANONICAL_UUID
        assert ident.cache_key == f"uuid:{CANONICAL_UUID}"

    def test_uuid_constructor_rejects_garbage(self) -> None:
        with pytest.raises(ValueError, match="hexadecimal UUID"):
            TenantIdentifier.uuid("not-a-uuid")

    def test_slug_constructor_folds_case(self) -> None:
        assert TenantIdentifier.slug("AcMe") == TenantIdentifier("slug", "acme")

    @pytest.mark.parametrize("bad", ["", "-acme", "acme-", "ac me", "café", "a" * 64, "a.b"])
    def test_slug_constructor_validates(self, bad: str) -> None:
        with pytest.raises(InvalidIdentifier):
            TenantIdentifier.slug(bad)

    def test_host_constructor_normalises(self) -> None:
        ident = TenantIdentifier.host("Portal.Initech.Example.:8443")
        assert ident == TenantIdentifier("host", "portal.initech.example")

    def test_host_constructor_validates(self) -> None:
        with pytest.raises(InvalidIdentifier):
            TenantIdentifier.host("bad_host.example")

    def test_invalid_identifier_is_a_value_error(self) -> None:
        assert issubclass(InvalidIdentifier, ValueError)


# -- normalize_host -----------------------------------------------------------------------------


class TestNormalizeHost:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("acme.test", "acme.test"),
            ("ACME.Test", "acme.test"),
            ("acme.test:8080", "acme.test"),
            ("acme.test.", "acme.test"),
            ("ACME.TEST.:443", "acme.test"),
            ("localhost", "localhost"),
            ("localhost:5000", "localhost"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("a-b.c-d.example", "a-b.c-d.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("bücher.example.:8080", "xn--bcher-kva.example"),
            ("a.test:0", "a.test"),
            ("a.test:65535", "a.test"),
        ],
    )
    def test_canonical_form(self, raw: str, expected: str) -> None:
        assert normalize_host(raw) == expected

    def test_labels_of_63_chars_accepted(self) -> None:
        host = "a" * 63 + ".example"
        assert normalize_host(host) == host

    def test_label_of_64_chars_rejected(self) -> None:
        with pytest.raises(InvalidIdentifier, match="label"):
            normalize_host("a" * 64 + ".example")

    def test_253_chars_accepted(self) -> None:
        host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
        assert len(host) == MAX_HOST_LENGTH
        assert normalize_host(host) == host
        # The trailing dot and the port do not count towards the limit.
        assert normalize_host(host + ".:8080") == host

    def test_254_chars_rejected(self) -> None:
        host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])
        assert len(host) == MAX_HOST_LENGTH + 1
        with pytest.raises(InvalidIdentifier, match="253"):
            normalize_host(host)

    def test_far_too_long_rejected_before_work(self) -> None:
        with pytest.raises(InvalidIdentifier, match="longer than 253"):
            normalize_host("a." * 500 + "com")

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("", "empty"),
            ("-acme.test", "label"),
            ("acme-.test", "label"),
            ("ac_me.test", "label"),
            ("acme..test", r"'\.\.'"),
            (".acme.test", "label"),
            ("acme.test..", r"'\.\.'"),
            ("ac me.test", "whitespace"),
            ("acme.test\t", "whitespace"),
            ("acme.test\n", "whitespace"),
            ("acme\x00.test", "control character"),
            ("acme\x7f.test", "control character"),
            ("acme.test/x", "'/'"),
            ("acme%2e.test", "'%'"),
            ("acme\\.test", r"'\\\\'"),
            ("acme.test:", "port"),
            ("acme.test:abc", "port"),
            ("acme.test:-1", "port"),
            ("acme.test:65536", "port"),
            ("acme.test:99999", "port"),
            ("acme.test:\u00b2", "port"),
            ("acme.test:\uff18\uff10", "port"),
            ("acme.test:80:80", "port|label"),
            (":8080", "port"),
            ("acme.t\u00e9st\u200b\u0000", "control character"),
            ("a.\ufffd.com", "internationalised"),
            ("xn--.example\u00e9", "internationalised"),
        ],
    )
    def test_rejections_say_why(self, raw: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            normalize_host(raw)

    def test_punycode_and_unicode_forms_are_one(self) -> None:
        assert normalize_host("bücher.example") == normalize_host("XN--BCHER-KVA.example.")


# -- parse_header -------------------------------------------------------------------------------


class TestParseHeader:
    @pytest.mark.parametrize(
        "raw",
        [
            CANONICAL_UUID,
            CANONICAL_UUID.upper(),
            UID.hex,
            UID.hex.upper(),
            "5F0c4F2a-1B2c-4D3e-8F9a-0B1c2D3e4F5a",
        ],
    )
    def test_uuid_any_case_with_or_without_hyphens(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        ident = validator.parse_header(raw)
        assert ident.kind == "uuid"
        assert ident.value == CANONICAL_UUID

    @pytest.mark.parametrize(
        "raw",
        [
            "5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5",  # 31 hex digits with hyphens
            "5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5aa",  # 33 hex digits
            "5f0c4f2a1b2c4d3e8f9a0b1c2d3e4f5",  # 31 hex digits, no hyphens
            "5f0c4f2a1b2c4d3e8f9a0b1c2d3e4f5a0",  # 33 hex digits, no hyphens
            "5f0c4f2a-1b2c4d3e-8f9a-0b1c2d3e4f5a",  # hyphens misplaced
            "5f0c4f2a--1b2c-4d3e-8f9a-0b1c2d3e4f5a",
        ],
    )
    def test_malformed_uuid(self, validator: TenantIdentifierValidator, raw: str) -> None:
        with pytest.raises(InvalidIdentifier, match="malformed UUID"):
            validator.parse_header(raw)

    @pytest.mark.parametrize(
        "raw",
        [f"{{{CANONICAL_UUID}}}", f"urn:uuid:{CANONICAL_UUID}", f"({CANONICAL_UUID})"],
    )
    def test_other_uuid_spellings_are_not_accepted(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        with pytest.raises(InvalidIdentifier):
            validator.parse_header(raw)

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("acme", "acme"),
            ("ACME", "acme"),
            ("AcMe-Corp", "acme-corp"),
            ("a", "a"),
            ("7", "7"),
            ("a-b-c", "a-b-c"),
            ("a--b", "a--b"),
            ("x" * MAX_SLUG_LENGTH, "x" * MAX_SLUG_LENGTH),
            ("deadbeef", "deadbeef"),
        ],
    )
    def test_slug(self, validator: TenantIdentifierValidator, raw: str, expected: str) -> None:
        ident = validator.parse_header(raw)
        assert ident == TenantIdentifier("slug", expected)
        assert ident.cache_key == f"slug:{expected}"

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("x" * (MAX_SLUG_LENGTH + 1), "at most 63"),
            ("-acme", "inner hyphens"),
            ("acme-", "inner hyphens"),
            ("-", "inner hyphens"),
            ("ac_me", "inner hyphens"),
            ("ac+me", "inner hyphens"),
            ("ac:me", "inner hyphens"),
            ("café", "ASCII"),
            ("ÄCME", "ASCII"),
            ("acme\u00a0", "ASCII"),
        ],
    )
    def test_bad_slug(self, validator: TenantIdentifierValidator, raw: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validator.parse_header(raw)

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("", "empty"),
            ("x" * 300, "longer than 253"),
            ("a" * 300 + ".example.com", "longer than 253"),
            ("ac me", "whitespace"),
            (" acme", "whitespace"),
            ("acme ", "whitespace"),
            ("ac\tme", "whitespace"),
            ("acme\r\n", "whitespace"),
            ("ac\x00me", "control character"),
            ("ac\x1bme", "control character"),
            ("ac\x7fme", "control character"),
            ("ac/me", "'/'"),
            ("../etc/passwd", r"'/'|'\.\.'"),
            ("ac%20me", "'%'"),
            ("ac\\me", r"'\\\\'"),
            ("acme..example.com", r"'\.\.'"),
            ("..", r"'\.\.'"),
        ],
    )
    def test_rejections_say_why(
        self, validator: TenantIdentifierValidator, raw: str, message: str
    ) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validator.parse_header(raw)

    def test_value_with_a_dot_is_a_host(self, validator: TenantIdentifierValidator) -> None:
        assert validator.parse_header("Portal.Initech.Example") == TenantIdentifier(
            "host", "portal.initech.example"
        )
        # A subdomain of a base domain is read as a slug, as in the Host header.
        assert validator.parse_header("ACME.example.com") == TenantIdentifier("slug", "acme")
        assert validator.parse_header("bücher.example") == TenantIdentifier(
            "host", "xn--bcher-kva.example"
        )

    @pytest.mark.parametrize(
        "raw", ["example.com", "www.example.com", "127.0.0.1", "10.0.0.1:80", "[::ffff:1.2.3.4]"]
    )
    def test_header_host_that_names_no_tenant_is_rejected(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        with pytest.raises(InvalidIdentifier, match="names no tenant"):
            validator.parse_header(raw)

    def test_bad_host_in_header(self, validator: TenantIdentifierValidator) -> None:
        with pytest.raises(InvalidIdentifier, match="label"):
            validator.parse_header("bad_host.example")
        with pytest.raises(InvalidIdentifier, match="port"):
            validator.parse_header("acme.test:http")

    def test_parse_is_parse_header(self, validator: TenantIdentifierValidator) -> None:
        for raw in ("ACME", UID.hex, "acme.test"):
            assert validator.parse(raw) == validator.parse_header(raw)
        with pytest.raises(InvalidIdentifier):
            validator.parse("a b")

    def test_rejected_input_is_not_memoised(self, validator: TenantIdentifierValidator) -> None:
        for _ in range(3):
            with pytest.raises(InvalidIdentifier):
                validator.parse_header("a b")
        assert validator.parse_header("acme").value == "acme"


# -- parse_host ---------------------------------------------------------------------------------


class TestParseHost:
    @pytest.mark.parametrize(
        "raw",
        [
            "acme.example.com",
            "ACME.EXAMPLE.COM",
            "acme.example.com.",
            "acme.example.com:8080",
            "Acme.Example.Com.:443",
        ],
    )
    def test_one_label_under_base_is_slug(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        assert validator.parse_host(raw) == TenantIdentifier("slug", "acme")

    @pytest.mark.parametrize(
        "raw",
        [
            "example.com",
            "EXAMPLE.com.",
            "example.com:8080",
            "www.example.com",
            "WWW.Example.com.:80",
        ],
    )
    def test_base_domain_and_www_name_no_tenant(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        assert validator.parse_host(raw) is None

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("a.b.example.com", "a.b.example.com"),
            ("www.acme.example.com", "www.acme.example.com"),
            ("portal.initech.example", "portal.initech.example"),
            ("acme.test:8080", "acme.test"),
            ("notexample.com", "notexample.com"),
            ("acme.example.com.evil.test", "acme.example.com.evil.test"),
            ("bücher.example", "xn--bcher-kva.example"),
        ],
    )
    def test_custom_domain(
        self, validator: TenantIdentifierValidator, raw: str, expected: str
    ) -> None:
        assert validator.parse_host(raw) == TenantIdentifier("host", expected)

    @pytest.mark.parametrize(
        "raw",
        [
            "localhost",
            "LOCALHOST:5000",
            "intranet.",
            "127.0.0.1",
            "127.0.0.1:8080",
            "192.168.0.10",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]",
            "[2001:DB8::1]:443",
            "[::ffff:192.0.2.1]",
        ],
    )
    def test_ip_and_single_label_name_no_tenant(
        self, validator: TenantIdentifierValidator, raw: str
    ) -> None:
        assert validator.parse_host(raw) is None

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("[::1", "IPv6"),
            ("[nope]", "IPv6"),
            ("[1.2.3.4]", "IPv6"),
            ("[::1]:", "port"),
            ("[::1]:http", "port"),
            ("[::1]:70000", "port"),
            ("[::1]junk", "port"),
            ("[::1] ", "whitespace"),
            ("::1", "label"),
        ],
    )
    def test_malformed_ip_literals(
        self, validator: TenantIdentifierValidator, raw: str, message: str
    ) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validator.parse_host(raw)

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("", "empty"),
            ("acme.example.com:abc", "port"),
            ("acme.example.com:99999", "port"),
            ("acme.example.com:\u00b2", "port"),
            ("ac me.example.com", "whitespace"),
            ("acme.example.com/", "'/'"),
            ("acme..example.com", r"'\.\.'"),
            ("ac_me.example.com", "label"),
            ("a" * 254 + ".com", "253"),
        ],
    )
    def test_bad_host(self, validator: TenantIdentifierValidator, raw: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validator.parse_host(raw)

    def test_base_domains_are_normalised(self) -> None:
        v = TenantIdentifierValidator(["Example.COM.", "bücher.example"])
        assert v.base_domains == ("example.com", "xn--bcher-kva.example")
        assert v.parse_host("acme.example.com") == TenantIdentifier("slug", "acme")
        assert v.parse_host("shop.bücher.example") == TenantIdentifier("slug", "shop")
        assert v.parse_host("shop.xn--bcher-kva.example") == TenantIdentifier("slug", "shop")
        assert v.parse_host("bücher.example") is None

    def test_several_base_domains(self) -> None:
        v = TenantIdentifierValidator(["example.com", "example.org"])
        assert v.parse_host("acme.example.com") == TenantIdentifier("slug", "acme")
        assert v.parse_host("acme.example.org") == TenantIdentifier("slug", "acme")
        assert v.parse_host("example.org") is None
        assert v.parse_host("acme.example.net") == TenantIdentifier("host", "acme.example.net")

    def test_no_base_domain_every_host_is_custom(self) -> None:
        v = TenantIdentifierValidator()
        assert v.parse_host("acme.example.com") == TenantIdentifier("host", "acme.example.com")
        assert v.parse_host("localhost") is None

    def test_invalid_base_domain_rejected(self) -> None:
        with pytest.raises(InvalidIdentifier):
            TenantIdentifierValidator(["bad domain.com"])


# -- one identifier, one cache key --------------------------------------------------------------

SPELLINGS = {
    "uuid": [
        CANONICAL_UUID,
        CANONICAL_UUID.upper(),
        UID.hex,
        UID.hex.upper(),
        "5F0C4F2A-1b2c-4D3E-8f9a-0B1C2D3E4F5A",
    ],
    "slug": [
        "acme",
        "ACME",
        "Acme",
        "acme.example.com",
        "ACME.EXAMPLE.COM.",
        "acme.example.com:8080",
        "Acme.Example.Com.:443",
    ],
    "host": [
        "bücher.example",
        "BÜCHER.EXAMPLE",
        "bücher.example.",
        "bücher.example:8080",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE.:443",
    ],
}


@pytest.mark.parametrize(
    ("group", "raw"), [(group, raw) for group, raws in SPELLINGS.items() for raw in raws]
)
def test_every_spelling_gives_one_cache_key(
    validator: TenantIdentifierValidator, group: str, raw: str
) -> None:
    expected = validator.parse_header(SPELLINGS[group][0]).cache_key
    assert validator.parse_header(raw).cache_key == expected
    if "." in raw:
        host_ident = validator.parse_host(raw)
        assert host_ident is not None
        assert host_ident.cache_key == expected


def test_spelling_groups_are_distinct(validator: TenantIdentifierValidator) -> None:
    keys = {group: validator.parse_header(raws[0]).cache_key for group, raws in SPELLINGS.items()}
    assert keys == {
        "uuid": f"uuid:{CANONICAL_UUID}",
        "slug": "slug:acme",
        "host": "host:xn--bcher-kva.example",
    }


# -- properties ---------------------------------------------------------------------------------

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
PROPERTY_VALIDATOR = TenantIdentifierValidator(["example.com"])


def _check_result(ident: TenantIdentifier) -> None:
    assert ident.kind in ("uuid", "slug", "host")
    assert ident.value.isascii()
    assert 1 <= len(ident.value) <= MAX_HOST_LENGTH
    assert _CONTROL_OR_SPACE.search(ident.value) is None
    assert not any(unicodedata.category(c).startswith(("C", "Z")) for c in ident.value)
    assert ident.value == ident.value.lower()
    assert ident.cache_key == f"{ident.kind}:{ident.value}"
    if ident.kind == "slug":
        assert len(ident.value) <= MAX_SLUG_LENGTH
        assert "." not in ident.value


def _parse(raw: str) -> tuple[TenantIdentifier | None, str]:
    """The identifier, or None and the rejection's message; any other exception propagates."""
    try:
        return PROPERTY_VALIDATOR.parse_header(raw), ""
    except InvalidIdentifier as exc:
        return None, str(exc)


def _check_idempotent(ident: TenantIdentifier) -> None:
    again = PROPERTY_VALIDATOR.parse_header(ident.value)
    assert again.cache_key == ident.cache_key
    assert again == ident


@settings(max_examples=500)
@given(st.text())
@example("")
@example("ACME")
@example("bücher.example:80")
@example("[::1]")
@example("acme.example.com:\u00b2")
@example("a\u3002\u3002b.com")
@example("\udcff.com")
@example("ß.com")
@example("x" * 300)
def test_parse_header_accepts_or_raises_invalid_identifier(raw: str) -> None:
    ident, message = _parse(raw)
    if ident is None:
        assert message
        return
    _check_result(ident)
    _check_idempotent(ident)


_LABEL = st.from_regex(r"\A[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?\Z")
_HOSTISH = st.builds(
    lambda labels, base, dot, port: ".".join(labels) + base + dot + port,
    st.lists(_LABEL | st.sampled_from(["bücher", "www", "ÄÖÜ", "xn--bcher-kva"]), max_size=4),
    st.sampled_from(["", ".example.com", ".EXAMPLE.com", ".example.org", ".com"]),
    st.sampled_from(["", "."]),
    st.sampled_from(["", ":80", ":8080", ":", ":x", ":99999"]),
)


@settings(max_examples=500)
@given(_HOSTISH)
def test_host_like_input_accepts_or_raises_invalid_identifier(raw: str) -> None:
    ident, message = _parse(raw)
    if ident is None:
        assert message
    else:
        _check_result(ident)
        _check_idempotent(ident)
    try:
        host_ident = PROPERTY_VALIDATOR.parse_host(raw)
    except InvalidIdentifier:
        return
    if host_ident is not None:
        _check_result(host_ident)
        _check_idempotent(host_ident)


@given(st.uuids())
def test_any_uuid_spelling_is_one_key(value: uuid.UUID) -> None:
    expected = f"uuid:{value}"
    for raw in (str(value), str(value).upper(), value.hex, value.hex.upper()):
        assert PROPERTY_VALIDATOR.parse_header(raw).cache_key == expected


@pytest.mark.parametrize(
    "label", ["5f0c4f2a1b2c4d3e8f9a0b1c2d3e4f5", "5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"]
)
def test_a_uuid_like_subdomain_is_no_slug(label: str) -> None:
    # The header reads such a value as a UUID, so a slug spelled like it would name two things.
    with pytest.raises(InvalidIdentifier, match="look like a UUID"):
        TenantIdentifierValidator(["example.com"]).parse_host(f"{label}.example.com")


# -- IDNA 2008 with UTS #46, as browsers read hosts -----------------------------------------------

#: From UTS #46 section 1.3.2 "Deviations" and the WHATWG URL tests (wpt url/resources/
#: toascii.json): the non-transitional (IDNA 2008) A-label of each.
UTS46_DEVIATIONS = [
    ("faß.de", "xn--fa-hia.de"),
    ("βόλος.com", "xn--nxasmm1c.com"),
    ("\u0dc1\u0dca\u200d\u0dbb\u0dd3.com", "xn--10cl1a0b660p.com"),
    ("\u0646\u0627\u0645\u0647\u200c\u0627\u06cc.com", "xn--mgba3gch31f060k.com"),
]

#: wpt url/resources/toascii.json entries whose output is a host name (LDH labels).
WHATWG_TOASCII = [
    ("xn--zca.xn--zca", "xn--zca.xn--zca"),
    ("xn--zca.ß", "xn--zca.xn--zca"),
    ("a\u00adb", "ab"),
    ("1.\u064a", "1.xn--mhb"),
    ("\u064a.", "xn--mhb"),
]

#: wpt url/resources/toascii.json entries whose output is null (a failure), plus UTS #46
#: IdnaTestV2 cases of the same rules.
WHATWG_TOASCII_FAILURES = [
    "xn--a",  # invalid punycode
    "xn--a.xn--zca",
    "xn--a.ß",
    "xn--tešla",  # punycode with a non-ASCII character
    "\u200d.example",  # CheckJoiners
    "xn--1ug.example",
    "يa",  # CheckBidi: Arabic and Latin in one label
    "xn--a-yoc",
    "\ufffd.com",
    "xn--zn7c.com",  # U+FFFD in punycode
]


class TestIDNA2008:
    @pytest.mark.parametrize(("unicode", "ascii"), UTS46_DEVIATIONS)
    def test_deviations_map_as_browsers_do(self, unicode: str, ascii: str) -> None:
        assert normalize_host(unicode) == ascii
        assert normalize_host(ascii) == ascii
        assert normalize_host(unicode.upper() if unicode.isascii() else unicode) == ascii

    @pytest.mark.parametrize(("raw", "ascii"), WHATWG_TOASCII)
    def test_whatwg_toascii_vectors(self, raw: str, ascii: str) -> None:
        assert normalize_host(raw) == ascii

    @pytest.mark.parametrize("raw", WHATWG_TOASCII_FAILURES)
    def test_whatwg_toascii_failures_are_refused(self, raw: str) -> None:
        with pytest.raises(InvalidIdentifier, match="internationalised"):
            normalize_host(raw)

    def test_sharp_s_is_not_ss(self) -> None:
        # IDNA 2003 maps ß to ss: straße.de and the separately registrable strasse.de would
        # be one tenant.
        assert normalize_host("straße.de") == "xn--strae-oqa.de"
        assert normalize_host("straße.de") != normalize_host("strasse.de")
        assert normalize_host("xn--strae-oqa.de") == normalize_host("STRAßE.DE")

    def test_greek_final_sigma_is_kept(self) -> None:
        assert normalize_host("βόλος.com") != normalize_host("βόλοσ.com")
        # UTS #46 maps capital sigma to the medial one everywhere; str.lower() would not.
        assert normalize_host("ΒΌΛΟΣ.com") == normalize_host("βόλοσ.com")

    def test_hebrew_and_arabic_hosts(self) -> None:
        assert normalize_host("עברית.example") == "xn--5dbqzzl.example"
        assert normalize_host("مثال.إختبار") == "xn--mgbh0fb.xn--kgbechtv"

    @pytest.mark.parametrize("dot", ["\u3002", "\uff0e", "\uff61"])
    def test_ideographic_full_stops_are_dots(self, dot: str) -> None:
        assert normalize_host(f"acme{dot}example{dot}com") == "acme.example.com"
        assert normalize_host(f"acme.example.com{dot}") == "acme.example.com"
        assert normalize_host(f"bücher{dot}de{dot}") == "xn--bcher-kva.de"
        with pytest.raises(InvalidIdentifier, match=r"'\.\.'"):
            normalize_host(f"acme{dot}.com")

    @pytest.mark.parametrize("dot", ["\u3002", "\uff0e", "\uff61"])
    def test_ideographic_full_stops_in_host_and_header(
        self, validator: TenantIdentifierValidator, dot: str
    ) -> None:
        assert validator.parse_host(f"acme{dot}example{dot}com") == TenantIdentifier("slug", "acme")
        assert validator.parse_header(f"portal{dot}acme{dot}test") == TenantIdentifier(
            "host", "portal.acme.test"
        )

    def test_unicode_and_punycode_are_one_key(self, validator: TenantIdentifierValidator) -> None:
        unicode, ascii = validator.parse_host("straße.de"), validator.parse_host("xn--strae-oqa.de")
        assert unicode == ascii
        assert unicode is not None
        assert unicode.cache_key == "host:xn--strae-oqa.de"
        assert validator.parse_host("strasse.de") != unicode


class TestLongestBaseDomain:
    @pytest.mark.parametrize(
        "domains",
        [["example.com", "eu.example.com"], ["eu.example.com", "example.com"]],
    )
    def test_longest_base_domain_wins_in_any_order(self, domains: list[str]) -> None:
        v = TenantIdentifierValidator(domains)
        assert v.parse_host("acme.eu.example.com") == TenantIdentifier("slug", "acme")
        assert v.parse_host("acme.example.com") == TenantIdentifier("slug", "acme")
        assert v.parse_host("eu.example.com") is None
        assert v.parse_host("www.eu.example.com") is None
        assert v.parse_host("a.b.eu.example.com") == TenantIdentifier("host", "a.b.eu.example.com")
