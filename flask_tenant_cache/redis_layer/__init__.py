"""The Redis layer: second layer, invalidation bus and shared rollout override."""

from __future__ import annotations

from flask_tenant_cache.redis_layer.layer import RedisLayer

__all__ = ["RedisLayer"]
