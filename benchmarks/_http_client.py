"""A minimal HTTP/1.1 keep-alive client for the load generator, to loopback addresses only."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Connection", "ProtocolError", "Target"]


class ProtocolError(Exception):
    """A response this client does not read (chunked, or not HTTP/1.x)."""


@dataclass(frozen=True)
class Target:
    """Where the requests go: a loopback address only, so a typo cannot load another host.

    :param host: an IPv4 or IPv6 loopback address (``127.0.0.1``, ``::1``).
    :param port: the server's port.
    :param path: the request path.
    :param header: the header carrying the tenant's slug.
    """

    host: str
    port: int
    path: str = "/"
    header: str = "X-Tenant-ID"

    def __post_init__(self) -> None:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the load generator only targets loopback addresses, not {self.host}")
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port {self.port}")

    def requests(self, tenants: Sequence[str]) -> list[bytes]:
        """One ready-to-send keep-alive GET per tenant."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {host}:{self.port}\r\n"
                f"{self.header}: {slug}\r\nAccept: application/json\r\n\r\n"
            ).encode("ascii")
            for slug in tenants
        ]


class Connection:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0

    async def request(self, data: bytes) -> int:
        """Send ``data``, read the whole response, return its status."""
        for attempt in (0, 1):
            fresh = self.writer is None
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.target.host, self.target.port
                )
                self.opened += 1
            try:
                self.writer.write(data)
                status, close = await _read_response(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                # A kept-alive connection the server closed while idle: retry once on a new
                # one, as HTTP clients do for idempotent requests.
                if fresh or attempt:
                    raise
                continue
            if close:
                self.close()
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of one response, and whether the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    status = int(rest[:3])
    close = version == b"HTTP/1.0"
    length: int | None = None
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked responses are not supported")
    if length is None:
        await reader.read()
        return status, True
    await reader.readexactly(length)
    return status, close
