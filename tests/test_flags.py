"""Flag providers and the rollout: buckets, stickiness, precedence, OpenFeature."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tenant_cache import TenantIdentifier
from flask_tenant_cache.flags import (
    Decision,
    FlagContext,
    OpenFeatureProvider,
    Rollout,
    parse_override,
    rollout_bucket,
)

ROOT = Path(__file__).resolve().parents[1]

ACME = TenantIdentifier.slug("acme")  # bucket 201
GLOBEX = TenantIdentifier.slug("globex")  # bucket 2585
INITECH = TenantIdentifier.slug("initech")  # bucket 3710
ACME_HOST = TenantIdentifier.host("acme.test")  # bucket 9853

#: Computed once from the documented algorithm; another service must reproduce these.
VECTORS = {
    "slug:acme": 201,
    "slug:globex": 2585,
    "slug:initech": 3710,
    "host:acme.test": 9853,
    "host:portal.initech.example": 9301,
    "host:xn--bcher-kva.example": 7913,
    "uuid:5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a": 7508,
    "uuid:00000000-0000-0000-0000-000000000000": 9953,
    "slug:a": 669,
    "": 4548,
}

KEYS = [f"slug:tenant-{i}" for i in range(2000)]


def reference_bucket(key: str) -> int:
    """The documented algorithm, written out independently of the package."""
    digest = hashlib.sha256(b"flask-tenant-cache:v2:" + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10000


def config(**values: Any) -> dict[str, Any]:
    return {"TENANT_CACHE_USE_V2": True, "TENANT_CACHE_V2_PERCENT": None, **values}


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "bucket"), sorted(VECTORS.items()))
def test_bucket_vectors_are_fixed(key: str, bucket: int) -> None:
    assert rollout_bucket(key) == bucket
    assert reference_bucket(key) == bucket


def test_buckets_match_the_documented_algorithm() -> None:
    buckets = [rollout_bucket(key) for key in KEYS]
    assert buckets == [reference_bucket(key) for key in KEYS]
    assert all(0 <= b <= 9999 for b in buckets)
    assert len(set(buckets)) > 1500  # spread over the range, not a constant


def test_buckets_are_the_same_in_other_processes_whatever_their_hash_seed() -> None:
    keys = [*VECTORS, *KEYS[:200]]
    expected = [rollout_bucket(key) for key in keys]
    script = (
        "import json, sys\n"
        "from flask_tenant_cache.flags import rollout_bucket\n"
        "keys = json.loads(sys.stdin.read())\n"
        "print(json.dumps([rollout_bucket(k) for k in keys]))\n"
    )
    hashes = set()
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script + "print(hash('slug:acme'))"],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            check=True,
        )
        lines = result.stdout.splitlines()
        assert json.loads(lines[0]) == expected, f"PYTHONHASHSEED={seed}"
        hashes.add(lines[1])
    assert len(hashes) > 1  # the seeds did change hash(): the buckets do not depend on it


# -- percentage rollout --------------------------------------------------------------------


def on_v2(percent: float) -> set[str]:
    rollout = Rollout()
    cfg = config(TENANT_CACHE_V2_PERCENT=percent)
    result = set()
    for key in KEYS:
        ident = TenantIdentifier.from_cache_key(key)
        decision = rollout.decide(ident, None, cfg)
        assert decision.reason == "percentage"
        assert decision.bucket == reference_bucket(key)
        if decision.version == "v2":
            result.add(key)
    return result


def test_raising_the_percentage_only_moves_tenants_to_v2() -> None:
    percents = [0, 1, 5, 10, 25, 30, 50, 75, 90, 99.5, 100]
    sets = {p: on_v2(p) for p in percents}
    assert sets[0] == set()
    assert sets[100] == set(KEYS)
    for low, high in itertools.pairwise(percents):
        assert sets[low] <= sets[high], (low, high)
        assert len(sets[low]) <= len(sets[high])
    for low, high in [(1, 50), (10, 90), (25, 30), (50, 99.5)]:
        assert sets[low] < sets[high], (low, high)
    assert 0.27 * len(KEYS) <= len(sets[30]) <= 0.33 * len(KEYS)
    assert sets[30] == {k for k in KEYS if reference_bucket(k) < 3000}


def test_a_percentage_decision_is_sticky_per_tenant() -> None:
    cfg = config(TENANT_CACHE_V2_PERCENT=10)
    first = [Rollout().decide(i, None, cfg) for i in (ACME, GLOBEX, INITECH)]
    again = [Rollout().decide(i, None, cfg) for i in (ACME, GLOBEX, INITECH)]
    assert first == again
    assert first == [
        Decision("v2", "percentage", 201),
        Decision("v1", "percentage", 2585),
        Decision("v1", "percentage", 3710),
    ]


# -- parse_override ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("v1", "v1"),
        ("v2", "v2"),
        (0, 0.0),
        (100, 100.0),
        (12.5, 12.5),
        ("25", 25.0),
        ("25%", 25.0),
        ("0", 0.0),
        (None, None),
    ],
)
def test_parse_override_accepts(value: Any, expected: Any) -> None:
    result = parse_override(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "value",
    ["v3", "V1", -1, 101, 100.01, True, False, "abc", "", "nan", float("nan"), [], {}, b"v1"],
)
def test_parse_override_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="rollout"):
        parse_override(value)


# -- precedence ----------------------------------------------------------------------------


def test_config_toggle_is_the_default() -> None:
    rollout = Rollout()
    assert rollout.decide(ACME, None, config()) == Decision("v2", "config")
    assert rollout.decide(ACME, None, config(TENANT_CACHE_USE_V2=False)) == Decision("v1", "config")


def test_percentage_beats_the_toggle() -> None:
    rollout = Rollout()
    cfg = config(TENANT_CACHE_USE_V2=True, TENANT_CACHE_V2_PERCENT=0)
    assert rollout.decide(ACME, None, cfg) == Decision("v1", "percentage", 201)
    cfg = config(TENANT_CACHE_USE_V2=False, TENANT_CACHE_V2_PERCENT=100)
    assert rollout.decide(INITECH, None, cfg) == Decision("v2", "percentage", 3710)
    assert rollout.stats(cfg)["mode"] == "percentage"


def test_provider_beats_the_settings_and_override_beats_everything() -> None:
    asked: list[FlagContext] = []

    def provider(context: FlagContext) -> str:
        asked.append(context)
        return "v1" if context.identifier == ACME else "v2"

    rollout = Rollout(provider)
    cfg = config(TENANT_CACHE_USE_V2=True, TENANT_CACHE_V2_PERCENT=100)
    request = object()
    assert rollout.decide(ACME, request, cfg) == Decision("v1", "provider")
    assert rollout.decide(GLOBEX, request, cfg) == Decision("v2", "provider")
    assert asked[0] == FlagContext(ACME, request, cfg)
    assert rollout.stats(cfg)["mode"] == "provider"
    assert rollout.stats(cfg)["provider"] == "provider"

    rollout.override = "v2"
    assert rollout.decide(ACME, request, cfg) == Decision("v2", "override")
    rollout.override = "v1"
    assert rollout.decide(GLOBEX, request, cfg) == Decision("v1", "override")
    rollout.override = 10.0
    assert rollout.decide(ACME, request, cfg) == Decision("v2", "override", 201)
    assert rollout.decide(GLOBEX, request, cfg) == Decision("v1", "override", 2585)
    assert len(asked) == 2  # the provider is not asked while an override holds
    stats = rollout.stats(cfg)
    assert (stats["mode"], stats["override"], stats["v2_percent"]) == ("override", 10.0, 100)

    rollout.override = None  # lifting it restores the provider
    assert rollout.decide(ACME, request, cfg) == Decision("v1", "provider")


def test_override_beats_the_config_and_lifting_it_restores_the_config() -> None:
    rollout = Rollout()
    cfg = config(TENANT_CACHE_V2_PERCENT=10)
    rollout.override = "v1"
    assert rollout.decide(ACME, None, cfg) == Decision("v1", "override")
    rollout.override = 0.0
    assert rollout.decide(ACME, None, cfg) == Decision("v1", "override", 201)
    rollout.override = None
    assert rollout.decide(ACME, None, cfg) == Decision("v2", "percentage", 201)
    assert cfg["TENANT_CACHE_V2_PERCENT"] == 10


class Boom(Exception):
    pass


def raising(context: FlagContext) -> str:
    raise Boom("flag service down")


@pytest.mark.parametrize(
    "provider",
    [raising, lambda c: "v3", lambda c: None, lambda c: True, lambda c: "V2", lambda c: 2],
)
def test_a_failing_or_garbage_provider_falls_back_to_v1(provider: Any) -> None:
    rollout = Rollout(provider)
    cfg = config(TENANT_CACHE_USE_V2=True)
    for expected_errors in (1, 2):
        assert rollout.decide(ACME, None, cfg) == Decision("v1", "provider-error")
        assert rollout.provider_errors == expected_errors
    assert rollout.stats(cfg)["provider_errors"] == 2


# -- OpenFeature ---------------------------------------------------------------------------


@pytest.fixture
def openfeature() -> Iterator[Any]:
    pytest.importorskip("openfeature")
    from openfeature import api

    yield api
    api.clear_providers()


def test_openfeature_targeting_key_is_the_tenant_cache_key(openfeature: Any) -> None:
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    seen: list[Any] = []

    def only_acme(flag: Any, context: Any) -> Any:
        seen.append(context)
        on = context.targeting_key == "slug:acme"
        return FlagResolutionDetails(value=on, reason=Reason.TARGETING_MATCH)

    flag = InMemoryFlag("off", {"on": True, "off": False}, context_evaluator=only_acme)
    openfeature.set_provider(InMemoryProvider({"tenant-cache-v2": flag}))
    provider = OpenFeatureProvider()
    assert provider(FlagContext(ACME, None, config())) == "v2"
    assert provider(FlagContext(GLOBEX, None, config())) == "v1"
    assert provider(FlagContext(ACME_HOST, None, config())) == "v1"
    assert seen[0].targeting_key == "slug:acme"
    assert seen[0].attributes == {"kind": "slug", "value": "acme"}
    assert seen[2].targeting_key == "host:acme.test"

    rollout = Rollout(provider)
    assert rollout.decide(ACME, None, config(TENANT_CACHE_USE_V2=False)) == Decision(
        "v2", "provider"
    )
    assert rollout.decide(GLOBEX, None, config()) == Decision("v1", "provider")
    assert rollout.stats(config())["provider"] == "openfeature:tenant-cache-v2"


def test_openfeature_static_flag_and_custom_key(openfeature: Any) -> None:
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    flags = {"resolver-v2": InMemoryFlag("on", {"on": True, "off": False})}
    openfeature.set_provider(InMemoryProvider(flags))
    assert OpenFeatureProvider(flag_key="resolver-v2")(FlagContext(INITECH, None, {})) == "v2"
    # the default flag key is not defined in this provider: the default answers
    assert OpenFeatureProvider()(FlagContext(INITECH, None, {})) == "v1"


def test_openfeature_missing_flag_uses_the_default(openfeature: Any) -> None:
    from openfeature.provider.in_memory_provider import InMemoryProvider

    openfeature.set_provider(InMemoryProvider({}))
    context = FlagContext(ACME, None, config())
    assert OpenFeatureProvider()(context) == "v1"
    assert OpenFeatureProvider(default=True)(context) == "v2"
    rollout = Rollout(OpenFeatureProvider(default=True))
    assert rollout.decide(ACME, None, config(TENANT_CACHE_USE_V2=False)) == Decision(
        "v2", "provider"
    )
    assert rollout.provider_errors == 0
