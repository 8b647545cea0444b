"""Redis for the tests: waiting, stats, and a private redis-server that tests may break."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

SHARED_REDIS_URL = os.environ.get("TENANT_CACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, what: str | Callable[[], str] = "it"
) -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds, saying
    ``what`` it waited for (a callable: asked then, to say what it saw last)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.01)


def stats(app: Flask) -> dict[str, Any]:
    """``ext.stats()`` of a test app, in an app context of its own."""
    with app.app_context():
        result: dict[str, Any] = app.extensions["test"]["ext"].stats()
        return result


def listening(*apps: Flask, serve: Callable[[Flask], Any] | None = None) -> None:
    """Serve one request on each app (which starts its subscriber); wait until all subscribed.

    The request is ``serve(app)``; by default a GET /whoami for acme, which must answer 200.
    """
    for app in apps:
        if serve is not None:
            serve(app)
            continue
        response = app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"})
        assert response.status_code == 200, response.data
    wait_for(
        lambda: all(stats(each)["redis"]["subscribes"] >= 1 for each in apps),
        what="the subscription",
    )


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux: 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port that nothing listens on now, below the range of outgoing connections.

    A port from that range (what binding port 0 gives) can be taken by any client connection
    between this check and the server's bind: a cluster node's bus port was, and the node
    exited with "Address already in use".
    """
    low = _ephemeral_low()
    if low > 20_001:
        for _ in range(200):
            port = random.randrange(20_000, low)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


class PrivateRedis:
    """A redis-server of the test's own, on a free port, to kill, pause and restart."""

    def __init__(self, binary: str, *args: str) -> None:
        self.binary = binary
        #: More ``redis-server`` options, given on every start.
        self.args = args
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tenant-cache-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def config(self) -> dict[str, Any]:
        """The app settings that put the extension on this server."""
        return {"TENANT_CACHE_REDIS_URL": self.url}

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, what="redis-server to start")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.resume()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
