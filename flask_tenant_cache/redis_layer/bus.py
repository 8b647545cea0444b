"""The invalidation bus: messages on a Redis channel, a queue while Redis is down, a subscriber."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.redis_layer import scripts
from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.l2 import LOSS_MARGIN, RedisL2
from flask_tenant_cache.redis_layer.sequence import MessageSequence, Verdict

__all__ = ["InvalidationBus", "InvalidationHandler"]

logger = logging.getLogger("flask_tenant_cache")

#: What the bus does on a message: (cache key or None for all, tenant ids).
InvalidationHandler = Callable[[str | None, list[str]], object]

#: What reading the sequence may raise: Redis failing, or a counter that is not a number.
_READ_ERRORS: tuple[type[Exception], ...] = (*ERRORS, ValueError)

#: The longest wait between two attempts to subscribe again (s): a Redis that comes back
#: is heard within this, and its queued invalidations sent.
MAX_BACKOFF = 0.1

#: Messages longer than this are dropped unread: ours are far shorter, and parsing is bounded.
MAX_MESSAGE_BYTES = 64 * 1024


def decode(data: Any) -> dict[str, Any] | None:
    """A bus message as a dict with its origin ``"o"`` checked, or None if it cannot be read.

    Anything may arrive on a channel (another version, a stray client, a hostile peer): no
    exception raised by parsing one, ``RecursionError`` included, leaves this function.
    """
    if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(data)
    except Exception:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("o"), str):
        return None
    number = message.get("s")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        return None
    if "rollout" in message:
        rv = message.get("rv")
        return message if isinstance(rv, int) and not isinstance(rv, bool) else None
    key, ids = message.get("k"), message.get("ids")
    if (key is not None and not isinstance(key, str)) or not isinstance(ids, list):
        return None
    try:
        # Any primary key a tenant may have (a UUID, an integer, a string), checked.
        message["ids"] = [TenantIdentifier.id(i).value for i in ids]
    except (ValueError, TypeError, AttributeError):
        return None
    return message


class InvalidationBus:
    """Invalidations shared by every process: L2 first, then a message on ``channel``.

    Invalidations that cannot reach Redis are queued (bounded; past the bound, one flush of
    everything replaces them) and sent when it answers again. The subscriber thread flushes
    the local caches on every (re)subscribe, since messages published while it was
    disconnected are lost.

    :param on_invalidate: applies a message from another process to this process's caches.
    :param on_resubscribe: flushes this process's caches.
    :param on_subscribed: runs after each (re)subscribe and flush (the rollout's resync).
    :param on_rollout: applies a rollout override (and its version) another process stored.
    """

    def __init__(
        self,
        conn: RedisConnection,
        l2: RedisL2,
        *,
        channel: str,
        on_invalidate: InvalidationHandler,
        on_resubscribe: Callable[[], object],
        on_subscribed: Callable[[], object],
        on_rollout: Callable[[Any, int], object],
        max_pending: int = 1000,
    ) -> None:
        self.conn = conn
        self.l2 = l2
        self.channel = channel
        self._on_invalidate = on_invalidate
        self._on_resubscribe = on_resubscribe
        self._on_subscribed = on_subscribed
        self._on_rollout = on_rollout
        #: Unsent invalidations, oldest first: cache key (None: everything) -> its ticket.
        self._pending: dict[str | None, int] = {}
        self._max_pending = max_pending
        self._tickets = 0
        self._publish_client: Any = None
        self._logged_dropped = False
        self.sequence = MessageSequence()
        self.counters = dict.fromkeys(
            (
                "published",
                "received",
                "subscribes",
                "resubscribes",
                "disconnects",
                "pending_sent",
                "dropped_messages",
                "handler_errors",
                "subscriber_errors",
                "subscriber_deaths",
                "subscriber_restarts",
                "gaps",
            ),
            0,
        )
        self._reset()
        conn.on_fork(self._reset)
        conn.on_recovery(lambda: self._kick.set())

    def _reset(self) -> None:
        """No thread and no lock shared with the parent: at start, and in a child after a fork.

        The queue is kept: sending one of the parent's invalidations again is harmless.
        """
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        #: Set once this process's subscriber subscribed and dropped what it may have missed.
        self.synced = threading.Event()
        self._stop = threading.Event()
        #: Set to try subscribing again at once (Redis answered a request meanwhile).
        self._kick = threading.Event()
        #: True while subscribed and in step: whatever was missed was dropped.
        self.listening = False
        #: How many times the L2 had been discarded when the subscription last dropped.
        self._discards_at_drop = 0
        self._thread: threading.Thread | None = None
        self.started = False

    # -- sending ----------------------------------------------------------------------------

    def invalidate(self, ident: TenantIdentifier | None) -> list[str]:
        """Drop ``ident``'s tenant (None: everything) from L2, then tell every process.

        :returns: the ids of the tenants dropped from L2 (queued for later if Redis is down).
        """
        key = None if ident is None else ident.cache_key
        if self._pending and self.conn.available():
            self._send_pending()  # older ones first, whoever comes next
        if self._pending:
            self._queue(key)  # behind the older ones, in order
            return []
        try:
            ids = self._send(key)
        except ERRORS as exc:
            self.conn.failed("invalidation", exc)
            self._queue(key)
            return []
        self.conn.succeeded()
        return ids

    def _send(self, key: str | None) -> list[str]:
        if key is None:
            self.l2.flush()
            ids: list[str] = []
        else:
            ids = self.l2.drop(key)
        self.publish({"k": key, "ids": ids})
        return ids

    def publish(self, message: dict[str, Any]) -> None:
        """Announce ``message`` to every other process, numbered (raises what Redis raises)."""
        body = json.dumps({"o": self.conn.node_id, **message})
        client = self.conn.client
        if self._publish_client is not client:  # a fork gives the connection a new client
            self._publish_script = client.register_script(scripts.PUBLISH)
            self._publish_client = client
        command = self.conn.publish_command
        self._publish_script(keys=[self.l2.keys.sequence], args=[self.channel, body[1:], command])
        with self._lock:
            self.counters["published"] += 1

    def after_loss(self) -> None:
        """Redis lost writes and the L2 was discarded: number on from what was seen here,
        and drop the local caches."""
        last = self.sequence.last
        if last is not None:
            with contextlib.suppress(*ERRORS):  # if it fails, the next subscribe sees a gap
                floor = last + LOSS_MARGIN
                self.sequence.last = self.l2.raise_counter(self.l2.keys.sequence, floor)
        self._on_resubscribe()

    def _queue(self, key: str | None) -> None:
        with self._lock:
            self._tickets += 1
            if key not in self._pending and len(self._pending) >= self._max_pending:
                # Past the bound, one flush of everything covers them all.
                self._pending.clear()
                key = None
            # Queued again, it moves to the end with a new ticket: a send already under way
            # may predate the change it is for.
            self._pending.pop(key, None)
            self._pending[key] = self._tickets
        # Delivered when Redis answers again, whatever this process serves meanwhile: the
        # subscriber reconnects on its own and sends the queue first.
        self.start()

    def _send_pending(self) -> None:
        """Send the queue, oldest first; each stays queued (so L2 stays unread) until sent."""
        if not self._send_lock.acquire(blocking=False):
            return  # another thread is sending it
        try:
            with self._lock:
                batch = list(self._pending.items())
            for key, ticket in batch:
                try:
                    ids = self._send(key)
                except ERRORS as exc:
                    self.conn.failed("queued invalidation", exc)
                    return  # the rest stays queued
                with self._lock:
                    self.counters["pending_sent"] += 1
                    if key is None:  # everything queued before it is covered
                        self._pending = {k: t for k, t in self._pending.items() if t > ticket}
                    elif self._pending.get(key) == ticket:
                        del self._pending[key]
                # Whatever this process read from Redis since it was queued is dropped again.
                self._apply_locally(key, ids)
        finally:
            self._send_lock.release()

    def _apply_locally(self, key: str | None, ids: list[str]) -> None:
        if key is None:
            self._on_resubscribe()
        else:
            self._on_invalidate(key, ids)

    @property
    def pending(self) -> int:
        """Invalidations waiting for Redis to answer again (L2 is not read meanwhile)."""
        return len(self._pending)

    # -- the subscriber ---------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's subscriber thread (idempotent; called lazily after a fork).

        A thread that died is started again, and the restart counted.
        """
        with self._lock:
            if self.started:
                return
            self.started = True
            if self._thread is not None:
                self.counters["subscriber_restarts"] += 1
            self._thread = threading.Thread(
                target=self._run, name="tenant-cache-invalidation-bus", daemon=True
            )
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._listen()
                except Exception:
                    # A bug here must not end the invalidations of this process: count it and
                    # listen again (the resubscribe flushes what it may have missed).
                    with self._lock:
                        self.counters["subscriber_errors"] += 1
                    logger.exception("tenant cache: the invalidation subscriber failed")
                    self._stop.wait(1.0)
        finally:
            if not self._stop.is_set():
                with self._lock:
                    self.counters["subscriber_deaths"] += 1
                    self.started = False  # the next request or invalidation starts another
                logger.error("tenant cache: the invalidation subscriber died; it will restart")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the subscriber thread and make one last attempt at the queue."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pending:
            self._send_pending()

    def _listen(self) -> None:
        backoff = 0.05
        subscribed_before = False
        loaded = self.l2.keys.loaded
        while not self._stop.is_set():
            pubsub = self.conn.pubsub()
            try:
                pubsub.subscribe(self.channel, loaded)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if self.conn.available():
                        if self._pending:
                            self._send_pending()
                        if self.l2.unfinished:
                            self.l2.retry()
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    if message["type"] == "subscribe" and channel == loaded:
                        self.l2.wakeups = True
                    elif message["type"] == "subscribe":
                        backoff = 0.05
                        self._subscribed(again=subscribed_before)
                        subscribed_before = True
                    elif message["type"] == "message" and channel == loaded:
                        self.l2.wake(message["data"].decode(errors="replace"))
                    elif message["type"] == "message":
                        self._received(message["data"])
            except ERRORS as exc:
                with self._lock:
                    self.counters["disconnects"] += 1
                if self.listening:
                    self._discards_at_drop = self.l2.generation
                self.listening = False
                self.conn.failed("subscription", exc)
                self._kick.wait(backoff)
                self._kick.clear()
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                self.l2.wakeups = False
                with contextlib.suppress(*ERRORS):
                    pubsub.close()

    def _subscribed(self, *, again: bool) -> None:
        self.conn.succeeded()
        try:
            client = self.conn.client
            current = int(client.get(self.l2.keys.sequence) or 0)
            run_id = self.conn.run_id(self.l2.keys.sequence)
        except _READ_ERRORS as exc:
            self.conn.failed("sequence read", exc)
            verdict = Verdict.GAP  # nothing proven: whatever was published meanwhile is lost
        else:
            verdict = self.sequence.subscribed(current, run_id)
        if verdict is Verdict.LOST and self.l2.generation != self._discards_at_drop:
            self._on_resubscribe()  # a request here noticed the loss and discarded the L2
        elif verdict is Verdict.LOST:
            self.l2.distrust("the server restarted or its invalidation sequence went back")
        elif verdict is Verdict.GAP:
            self._on_resubscribe()
            if again:  # counted after the flush: whoever reads the count sees it done
                with self._lock:
                    self.counters["gaps"] += 1
        self._on_subscribed()
        with self._lock:  # counted once in step: what was missed is dropped, the override read
            self.counters["resubscribes" if again else "subscribes"] += 1
        self.listening = True
        self.synced.set()

    def _received(self, data: Any) -> None:
        message = decode(data)
        if message is None:
            with self._lock:
                self.counters["dropped_messages"] += 1
                first, self._logged_dropped = not self._logged_dropped, True
            if first:  # counted always; logged once, so a flood of them cannot flood the log
                logger.warning("tenant cache: unreadable bus message dropped: %.200r", data)
            return
        with self._lock:
            self.counters["received"] += 1
        if message.get("s") is not None and self.sequence.received(message["s"]) is Verdict.GAP:
            logger.warning("tenant cache: bus messages were missed; flushing the local caches")
            self._on_resubscribe()
            with self._lock:  # counted after the flush: whoever reads the count sees it done
                self.counters["gaps"] += 1
        if message["o"] == self.conn.node_id:
            return
        if "rollout" in message:
            self._on_rollout(message["rollout"], message["rv"])
            return
        try:
            self._on_invalidate(message["k"], message["ids"])
        except Exception:
            # Not applied as asked: drop everything instead, which covers it. Counted once the
            # flush is done, so whoever reads the counter finds the caches flushed.
            logger.exception("tenant cache: an invalidation failed; flushing the local caches")
            self._on_resubscribe()
            with self._lock:
                self.counters["handler_errors"] += 1

    def stats(self) -> dict[str, int]:
        """The bus's counters, with the invalidations still queued."""
        with self._lock:
            return {**self.counters, "pending": len(self._pending)}
