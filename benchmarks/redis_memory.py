"""Redis memory per cached tenant in the L2: ``MEMORY USAGE`` of the keys and ``used_memory``.

Run alone with ``python -m benchmarks.redis_memory [--quick] [--json PATH]`` against the Redis
of ``TENANT_CACHE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), under a prefix
of its own that it deletes after. Each tenant is read once by slug, with one custom domain,
so it holds an entry, an alias set and three id pointers. On a cluster all of them are in
the app's one slot: this is what that slot grows by.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import redis
from flask import Flask

from flask_tenant_cache import Tenant, TenantCache, TenantIdentifier

from ._report import standalone

__all__ = ["bench_redis_memory"]

URL = os.environ.get("TENANT_CACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class Tenants:
    """Tenants ``tenant-00000``... with a custom domain each, built on each load."""

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        slug = identifier.value
        return Tenant(
            id=uuid.uuid5(uuid.NAMESPACE_DNS, slug),
            slug=slug,
            name=f"Tenant {slug}",
            domains=(f"{slug}.customer-domain.example",),
        )


def bench_redis_memory(quick: bool) -> dict[str, Any]:
    count = 200 if quick else 2000
    prefix = f"bench-memory-{uuid.uuid4().hex[:8]}"
    app = Flask(__name__)
    app.config.update(TENANT_CACHE_REDIS_URL=URL, TENANT_CACHE_REDIS_PREFIX=prefix)
    ext = TenantCache(app, loader=Tenants())
    app.add_url_rule("/", "index", lambda: "")
    admin = redis.Redis.from_url(URL)
    client = app.test_client()
    before = int(admin.info("memory")["used_memory"])
    for n in range(count):
        response = client.get("/", headers={"X-Tenant-ID": f"tenant-{n:05d}"})
        assert response.status_code == 200
    after = int(admin.info("memory")["used_memory"])
    keys = list(admin.scan_iter(match="{" + prefix + "}:*", count=1000))
    usage = sum(int(admin.memory_usage(key, samples=0) or 0) for key in keys)
    for key in keys:
        admin.unlink(key)
    with app.app_context():
        ext.close()
    admin.close()
    return {
        "tenants": count,
        "keys_per_tenant": len(keys) / count,
        "memory_usage_bytes_per_tenant": usage / count,
        "used_memory_bytes_per_tenant": (after - before) / count,
    }


def show(result: dict[str, Any]) -> None:
    print(
        f"{result['tenants']} tenants, {result['keys_per_tenant']:.1f} keys each: "
        f"MEMORY USAGE {result['memory_usage_bytes_per_tenant']:.0f} B per tenant, "
        f"used_memory {result['used_memory_bytes_per_tenant']:.0f} B per tenant"
    )


if __name__ == "__main__":
    raise SystemExit(
        standalone(
            "python -m benchmarks.redis_memory",
            __doc__,
            "200 tenants instead of 2000",
            bench_redis_memory,
            show,
        )
    )
