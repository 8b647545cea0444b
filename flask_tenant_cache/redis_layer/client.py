"""This process's Redis client: the user's or built from the URL, its health, checks and pub/sub."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Union

try:
    import redis
    from redis.cluster import RedisCluster
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "TENANT_CACHE_REDIS_URL needs redis-py: pip install 'flask-tenant-cache[redis]'"
    ) from exc

from redis.exceptions import (
    ClusterCrossSlotError,
    MovedError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
)

from flask_tenant_cache.redis_layer.keys import KeySpace

__all__ = [
    "ERRORS",
    "RedisConnection",
    "RedisSource",
    "Subscription",
    "is_configuration_error",
    "script_commands",
]

logger = logging.getLogger("flask_tenant_cache")

#: A redis-py client (``Redis``, ``RedisCluster``, ``Sentinel.master_for(...)``), a
#: zero-argument callable that returns one, or a ``redis://``, ``rediss://`` or ``unix://`` URL.
RedisSource = Union[str, "redis.Redis", RedisCluster, Callable[[], Any]]

#: What a Redis call may raise when Redis fails; caught, counted and served around. A
#: ``RedisClusterException`` (no node for a slot, a cluster that cannot be reached at
#: start-up) is no ``RedisError``, so it is named here too.
ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)

_CONFIGURATION_ERRORS = (MovedError, ClusterCrossSlotError, ReadOnlyError, NoPermissionError)
#: The same errors, as the server words them (an error raised inside a Lua script, or by a
#: client that does not map them to classes, is a plain ``ResponseError``).
_CONFIGURATION_CODES = re.compile(r"\b(MOVED|CROSSSLOT|READONLY|NOPERM)\b")


def is_configuration_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the deployment is wrong (waiting does not end it): a plain client
    on a cluster (MOVED, CROSSSLOT), a replica (READONLY) or an ACL refusal (NOPERM)."""
    if isinstance(exc, _CONFIGURATION_ERRORS):
        return True
    if isinstance(exc, RedisClusterException) and "same key slot" in str(exc):
        return True
    return isinstance(exc, redis.ResponseError) and bool(_CONFIGURATION_CODES.search(str(exc)))


def describe(exc: BaseException) -> str:
    """The error's class and its text: ``%r`` of a redis-py error is often its class alone."""
    return f"{type(exc).__name__}: {exc}"


def _is_client(value: object) -> bool:
    return isinstance(value, (redis.Redis, RedisCluster))


class Subscription:
    """A pub/sub connection: sharded (``SSUBSCRIBE``) on a cluster, plain elsewhere.

    :meth:`get_message` gives the plain pub/sub message types (``subscribe``, ``message``)
    whichever it is.
    """

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._pubsub: Any = None
        self.sharded = False

    def subscribe(self, *channels: str) -> None:
        """Subscribe to ``channels``, all of one slot on a cluster (raises what Redis raises)."""
        client = self._conn.client
        self.sharded = isinstance(client, RedisCluster)
        self._pubsub = client.pubsub()
        if self.sharded:
            self._pubsub.ssubscribe(*channels)
        else:
            self._pubsub.subscribe(*channels)

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        if not self.sharded:
            message: dict[str, Any] | None = self._pubsub.get_message(timeout=timeout)
            return message
        message = self._pubsub.get_sharded_message(timeout=timeout)
        if message is not None and message["type"] in ("ssubscribe", "smessage"):
            message = {**message, "type": message["type"][1:]}
        return message

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()


class RedisConnection:
    """This process's Redis client, its health and circuit breaker, and its identity.

    After a failure, :meth:`available` is false for ``retry_interval`` seconds, so a slow or
    dead server costs no request more than one socket timeout. In a child forked from this
    process the identity and the health are new, the client too when this connection built
    it (from the URL or the callable), and the hooks given to :meth:`on_fork` run: nothing
    per-process is shared across a fork. (A client given as an object is kept: redis-py's
    connection pools open new connections in a forked child by themselves.)

    :param source: a URL, a redis-py client, or a callable that returns one (see
        :data:`RedisSource`).
    :param socket_timeout: seconds any call or connection attempt waits for Redis (for a
        client built from the URL).
    :param retry_interval: seconds Redis is left alone after a failure.
    :param timer: the clock, injected so tests move time instead of sleeping.
    """

    def __init__(
        self,
        source: RedisSource,
        *,
        socket_timeout: float,
        retry_interval: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(source, str) and not _is_client(source) and not callable(source):
            raise TypeError(
                "redis= takes a redis-py client (Redis, RedisCluster, Sentinel.master_for) "
                f"or a callable that returns one, not {type(source).__name__}"
            )
        self.source = source
        self.socket_timeout = socket_timeout
        self.retry_interval = retry_interval
        self._timer = timer
        self._fork_hooks: list[Callable[[], object]] = []
        self._recovery_hooks: list[Callable[[], object]] = []
        self.errors = 0
        #: Failures that waiting does not end (see :func:`is_configuration_error`).
        self.configuration_errors = 0
        self._reset()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _reset(self) -> None:
        #: This process's identity: new in each process and after each fork.
        self.node_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._outage = False
        self._client: Any = None
        try:
            self._client = self._build()
        except ERRORS as exc:  # the callable's client could not reach Redis: build it later
            self.failed("connection", exc)

    def _build(self) -> Any:
        if isinstance(self.source, str):
            return redis.Redis.from_url(
                self.source,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                health_check_interval=5,
            )
        if _is_client(self.source):
            return self.source
        client = self.source()  # type: ignore[operator]
        if not _is_client(client):
            raise TypeError(
                "the redis= callable must return a redis-py client (Redis or RedisCluster), "
                f"not {type(client).__name__}"
            )
        return client

    def _after_fork(self) -> None:
        self._reset()
        for hook in self._fork_hooks:
            hook()

    def on_fork(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` in a forked child, after the client was replaced."""
        self._fork_hooks.append(hook)

    def on_recovery(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` when Redis answers again after an outage."""
        self._recovery_hooks.append(hook)

    @property
    def client(self) -> Any:
        """This process's Redis client (a new one after a fork; raises what building it
        raises while the callable cannot build one)."""
        if self._client is None:
            self._client = self._build()
        return self._client

    @property
    def cluster(self) -> bool:
        """Whether the client is a ``RedisCluster`` (sharded pub/sub, every primary scanned).

        Raises what building the client raises, while the callable cannot build one.
        """
        return isinstance(self.client, RedisCluster)

    def pubsub(self) -> Subscription:
        """A new pub/sub connection (on a cluster, to the node of the channel's slot)."""
        return Subscription(self)

    def run_id(self, key: str) -> str:
        """The run id of the server that holds ``key``: on a cluster, its slot's primary
        (``INFO`` there answers for whichever node the client picks)."""
        client = self.client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            info = client.info("server", target_nodes=node)
        else:
            info = client.info("server")
        return str(info.get("run_id", ""))

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on a cluster (its subscribers are sharded), ``PUBLISH`` elsewhere."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    def publish(self, channel: str, message: str) -> None:
        """Publish ``message`` on ``channel`` with :attr:`publish_command`."""
        self.client.execute_command(self.publish_command, channel, message)

    def available(self) -> bool:
        """False for ``retry_interval`` seconds after a failure: Redis is left alone then."""
        return self._timer() >= self._down_until

    def failed(self, what: str, exc: BaseException) -> None:
        """Count a failure, start the pause, and log the first of an outage with its text.

        A configuration error (see :func:`is_configuration_error`) is also counted apart and
        logged as an error. A READONLY answer also drops the client's connections: the
        server at that address became a replica, and an address that follows the primary
        (a managed service's primary endpoint) gives the new one on the next connection.
        """
        configuration = is_configuration_error(exc)
        with self._lock:
            self.errors += 1
            self.configuration_errors += configuration
            self._down_until = self._timer() + self.retry_interval
            first = not self._outage
            self._outage = True
        if isinstance(exc, ReadOnlyError) and isinstance(self._client, redis.Redis):
            self._client.connection_pool.disconnect()
        if first and configuration:
            logger.error(
                "tenant cache: Redis %s refused by the deployment (a configuration error, "
                "not an outage: see the deployment guide): %s",
                what,
                describe(exc),
            )
        elif first:
            logger.warning(
                "tenant cache: Redis %s failed, serving around it: %s", what, describe(exc)
            )

    def succeeded(self) -> None:
        """Note that Redis answered: the pause ends (logged once after an outage)."""
        if self._outage:
            with self._lock:
                recovered, self._outage = self._outage, False
                self._down_until = 0.0  # whoever saw it answer, every caller may use it now
            if recovered:
                logger.warning("tenant cache: Redis answers again")
                for hook in self._recovery_hooks:
                    hook()

    def close(self) -> None:
        """Close the client's connections, unless the client is the app's own object."""
        if not _is_client(self.source) and self._client is not None:
            self._client.close()

    def check(self, keys: KeySpace, channel: str, commands: Iterable[str]) -> None:
        """Refuse a deployment this client cannot work with, if Redis answers.

        :param commands: the commands the scripts run (each tried here, see
            :data:`PROBES`).
        :raises ValueError: naming the problem: a plain client on a cluster node, a replica,
            or an ACL user without a command, the keys or the channel.
        """
        try:
            if not isinstance(self.client, RedisCluster):
                self._check_server()
            missing = self._check_rights(keys, channel, commands)
        except ERRORS as exc:
            if is_configuration_error(exc):
                raise ValueError(f"Redis refuses this app's deployment: {describe(exc)}") from exc
            # Unreachable: start anyway and serve around it, as after any outage.
            self.failed("start-up check", exc)
            return
        if missing:
            raise ValueError(
                "the Redis user lacks what the tenant cache needs: "
                + "; ".join(missing)
                + " (see the ACL section of the deployment guide)"
            )

    def _check_server(self) -> None:
        try:
            hello = self._client.execute_command("HELLO")
        except NoPermissionError as exc:
            raise ValueError(f"the Redis user may not run HELLO: {exc}") from exc
        # A map on RESP3, or with redis-py's HELLO parser; a flat list of pairs otherwise.
        if isinstance(hello, dict):
            pairs: Iterable[Any] = hello.items()
        else:
            pairs = zip(hello[::2], hello[1::2], strict=False)
        info = {_text(k): _text(v) for k, v in pairs}
        if info.get("mode") == "sentinel":
            raise ValueError(
                "the Redis client points at a Sentinel, not at a data server: pass "
                "redis=Sentinel(...).master_for(name) (redis.sentinel.Sentinel)"
            )
        if info.get("mode") == "cluster":
            raise ValueError(
                "TENANT_CACHE_REDIS_URL (or redis=) points at a Redis Cluster node with a "
                "plain client: pass redis=RedisCluster(...) (redis.cluster.RedisCluster)"
            )
        if info.get("role") not in (None, "master"):
            raise ValueError(
                f"the Redis client points at a read-only {info['role']}: use the primary "
                "(with Sentinel: Sentinel(...).master_for(name))"
            )

    def _probe(self, command: str, key: str) -> None:
        if command != "multi":
            self._client.execute_command(*PROBES[command](key))
            return
        # MULTI alone would leave a pooled connection in a transaction: one whole one instead.
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(key)
            pipe.execute()
        except RedisClusterException:
            pass  # an older redis-py has no transactions on a cluster: not the user's rights
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc):  # "Transaction discarded because of: NOPERM ..."
                raise NoPermissionError(str(exc)) from exc
            raise

    def _check_rights(self, keys: KeySpace, channel: str, commands: Iterable[str]) -> list[str]:
        missing: list[str] = []
        probe = keys.base + "check:" + self.node_id
        wanted = dict.fromkeys([*BASE_COMMANDS, *(c.lower() for c in commands)])
        wanted.update(dict.fromkeys(["spublish"] if self.cluster else ["publish"]))
        for command in wanted:
            try:
                self._probe(command, probe)
            except NoPermissionError as exc:
                if command.endswith("publish") and "channel" in str(exc):
                    continue  # the probe's channel, not this app's: SUBSCRIBE checks that one
                missing.append(_refusal(command, exc, keys, channel))
            except redis.ResponseError:
                pass  # refused for its arguments (NOSCRIPT, a probe's type): so permitted
        subscription = self.pubsub()
        try:
            try:
                subscription.subscribe(channel)
                deadline = time.monotonic() + max(1.0, self.socket_timeout)
                while subscription.get_message(timeout=0.05) is None:
                    if time.monotonic() > deadline:
                        raise redis.TimeoutError(f"no answer to the subscription to {channel}")
            finally:
                subscription.close()
        except NoPermissionError as exc:
            command = "ssubscribe" if self.cluster else "subscribe"
            missing.append(_refusal(command, exc, keys, channel))
        with contextlib.suppress(*ERRORS):
            self._client.delete(probe, probe + ":set")
        return sorted(set(missing))


def script_commands(scripts: Iterable[str]) -> list[str]:
    """The commands that Lua ``scripts`` run (``redis.call('GET', ...)`` gives ``get``)."""
    return sorted({m.lower() for s in scripts for m in re.findall(r"redis\.call\('(\w+)'", s)})


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _refusal(command: str, exc: NoPermissionError, keys: KeySpace, channel: str) -> str:
    text = str(exc)
    if "channel" in text:
        return f"the channel {channel!r} (add &{channel} or &{keys.base}*)"
    if "key" in text:
        return f"the keys {keys.base}* (add ~{keys.base}*)"
    named = re.search(r"run the '([^']+)' command", text)  # EXEC, in a MULTI probe
    command = named.group(1).lower() if named else command
    return f"the command {command.upper()} (add +{command})"


#: Commands run outside the scripts: redis-py runs the scripts with EVALSHA and loads them
#: with SCRIPT LOAD the first time; INFO gives the server's run id (a restart that lost
#: writes changes it); the lists and the transaction keep the shadow mismatch records; the
#: rest read, flush and publish.
BASE_COMMANDS = (
    *("ping", "info", "evalsha", "script|load"),
    *("get", "mget", "set", "del", "incrby", "scan", "unlink"),
    *("lpush", "ltrim", "lrange", "multi"),  # "multi": a whole MULTI ... EXEC
)

#: A harmless call of each command the extension runs, on a key of its own.
PROBES: dict[str, Callable[[str], tuple[Any, ...]]] = {
    "ping": lambda key: ("PING",),
    "info": lambda key: ("INFO", "server"),
    "evalsha": lambda key: ("EVALSHA", "0" * 40, 1, key),
    "script|load": lambda key: ("SCRIPT", "LOAD", "return 1"),
    "get": lambda key: ("GET", key),
    "mget": lambda key: ("MGET", key),
    "set": lambda key: ("SET", key, "1", "PX", 60000),
    "del": lambda key: ("DEL", key),
    "incr": lambda key: ("INCR", key),
    "incrby": lambda key: ("INCRBY", key, 1),
    "expire": lambda key: ("EXPIRE", key, 60),
    "sadd": lambda key: ("SADD", key + ":set", "1"),
    "smembers": lambda key: ("SMEMBERS", key + ":set"),
    "scan": lambda key: ("SCAN", 0, "MATCH", key, "COUNT", 1),
    "unlink": lambda key: ("UNLINK", key + ":set"),
    "lpush": lambda key: ("LPUSH", key + ":list", "check"),
    "ltrim": lambda key: ("LTRIM", key + ":list", 0, 0),
    "lrange": lambda key: ("LRANGE", key + ":list", 0, 0),
    "publish": lambda key: ("PUBLISH", key, "check"),
    "spublish": lambda key: ("SPUBLISH", key, "check"),
}
