"""Rollout plan and guard tests: probe identifiers by bucket, traffic, ticks, a broken v2."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from flask import Flask

from flask_tenant_cache.flags import rollout_bucket
from tests.helpers.app import FakeTimer

_counter = itertools.count()


def probes(below: float | None = None, *, at_least: float | None = None) -> Iterator[str]:
    """Fresh unknown slugs whose bucket is below ``below`` % (on v2 from that percentage
    up), or at least ``at_least`` % (on v1 below it); each one misses the caches once.
    """
    while True:
        slug = f"probe-{next(_counter)}"
        bucket = rollout_bucket(f"slug:{slug}") / 100
        if (below is None or bucket < below) and (at_least is None or bucket >= at_least):
            yield slug


_TOP = probes(at_least=99.9)


def serve(app: Flask, slug: str) -> Any:
    """GET /whoami for ``slug`` by header."""
    return app.test_client().get("/whoami", headers={"X-Tenant-ID": slug})


def send(app: Flask, slugs: Iterator[str], count: int) -> list[int]:
    """``count`` requests for the next ``count`` slugs; their status codes."""
    return [serve(app, next(slugs)).status_code for _ in range(count)]


def tick(app: Flask, clock: FakeTimer, seconds: float = 1.0) -> None:
    """Move the clock past the control interval and serve a request, which ticks.

    The request is for an unknown slug in the top bucket: on v1 below 100 %.
    """
    clock.advance(seconds)
    serve(app, next(_TOP))


def control(app: Flask) -> dict[str, Any]:
    """``stats()["control"]`` of ``app``."""
    with app.app_context():
        result: dict[str, Any] = app.extensions["test"]["ext"].stats()["control"]
        return result


def plan_percent(app: Flask) -> float | None:
    """The percentage ``app`` serves from its plan now."""
    percent: float | None = app.extensions["tenant_cache"].rollout.plan_percent
    return percent


class Broken:
    """Wraps a loader: ``mode`` ``"slow"`` moves the clock on each load, ``"fail"`` raises,
    ``"other"`` answers another tenant (``globex``) for every identifier it finds.
    """

    def __init__(self, inner: Any, clock: FakeTimer, mode: str) -> None:
        self.inner, self.clock, self.mode = inner, clock, mode

    def load(self, identifier: Any) -> Any:
        if self.mode == "slow":
            self.clock.advance(0.5)
        elif self.mode == "fail":
            raise ConnectionError("v2's database is down")
        elif self.mode == "other":
            tenant = self.inner.load(identifier)
            if tenant is not None:
                from flask_tenant_cache import TenantIdentifier

                return self.inner.load(TenantIdentifier.slug("globex"))
            return tenant
        return self.inner.load(identifier)


def break_v2(app: Flask, clock: FakeTimer, mode: str) -> None:
    """Give ``app``'s v2 resolver a broken loader (v1 keeps the good one) and an empty cache.

    Its Redis second layer is detached too: the good answers there would hide the loader.
    """
    resolver = app.extensions["tenant_cache"].resolvers["v2"]
    resolver.loader = Broken(resolver.loader, clock, mode)
    resolver.l2 = None
    resolver.invalidate_all()
