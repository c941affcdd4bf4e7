"""Redis deployments beyond one plain server, started for a test on loopback: TLS and
Unix-socket servers, a Sentinel-managed primary with replicas, and a Redis Cluster.
Real `redis-server` processes (Sentinel is `redis-server --sentinel`); always stopped."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.crc import key_slot

from realtime.dev.embedded import RedisServer, free_port


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout_s}s")


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, signed by it (openssl):
    (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=realtime test CA", "-keyout", ca_key, "-out", ca)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", key, "-out", csr)  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "1", "-extfile", ext, "-out", cert)  # fmt: skip
    return ca, cert, key


class SentinelServer(RedisServer):
    """`redis-server sentinel.conf --sentinel` watching one primary as `service`."""

    def __init__(
        self, directory: Path, primary_port: int, service: str, *, down_after_ms: int
    ) -> None:
        super().__init__(directory=directory)
        self.primary_port = primary_port
        self.service = service
        self.down_after_ms = down_after_ms

    def command(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"  # Sentinel rewrites it: must be writable
        if not conf.exists():
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"logfile {self.directory / 'redis.log'}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 2\n"
            )
        return [self.binary, str(conf), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


# What makes a failover lose nothing that was confirmed: an fsync per write, and a
# primary that refuses writes when no replica follows it closely.
DURABLE = [
    "--appendonly", "yes", "--appendfsync", "always",
    "--min-replicas-to-write", "1", "--min-replicas-max-lag", "5",
]  # fmt: skip


class SentinelSet:
    """A primary, `replicas` replicas (all durable as above) and one Sentinel."""

    def __init__(self, directory: Path, *, replicas: int = 2, service: str = "rtmaster") -> None:
        self.service = service
        self.dead_sentinel_port = free_port()
        self.primary = RedisServer(directory=directory / "primary", extra_args=DURABLE)
        self.replicas = [
            RedisServer(
                directory=directory / f"replica{n}",
                extra_args=[*DURABLE, "--replicaof", "127.0.0.1", str(self.primary.port)],
            )
            for n in range(replicas)
        ]
        self.sentinel = SentinelServer(
            directory / "sentinel", self.primary.port, service, down_after_ms=500
        )

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        # A dead Sentinel first: clients must go on to the next one.
        sentinels = f"127.0.0.1:{self.dead_sentinel_port},127.0.0.1:{self.sentinel.port}"
        return f"redis+sentinel://{sentinels}/0/{self.service}"

    def start(self) -> SentinelSet:
        for server in self.servers:
            server.start()
        self.sentinel.start()
        with self.sentinel.client() as sentinel:
            wait_until(
                lambda: len(sentinel.sentinel_slaves(self.service)) == len(self.replicas),
                "replicas known to the Sentinel",
            )
        with redis.Redis(port=self.primary.port, decode_responses=True) as primary:
            wait_until(
                lambda: primary.info("replication")["connected_slaves"] == len(self.replicas),
                "replicas in sync",
            )
        return self

    def primary_port(self) -> int:
        with self.sentinel.client() as sentinel:
            _host, port = sentinel.sentinel_get_master_addr_by_name(self.service)
            return int(port)

    def cleanup(self) -> None:
        self.sentinel.cleanup()
        for server in self.servers:
            server.cleanup()


class ClusterSet:
    """A Redis Cluster of `masters` primaries (no replicas), made with
    `redis-cli --cluster create`; the slots split evenly between them."""

    def __init__(self, directory: Path, *, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(directory=directory / f"node{n}", extra_args=self._node_args(directory, n))
            for n in range(masters)
        ]

    @staticmethod
    def _node_args(directory: Path, n: int) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / f"node{n}" / "nodes.conf"),
            "--cluster-node-timeout", "2000",
            "--cluster-port", str(free_port()),  # not port + 10000: that may be > 65535
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def node_of(self, key: str) -> RedisServer:
        """The node that serves `key`'s hash slot."""
        slot = key_slot(key.encode())
        with redis.Redis(port=self.nodes[0].port) as client:
            for low, high, (_host, port, *_id), *_replicas in client.execute_command(
                "CLUSTER", "SLOTS"
            ):
                if low <= slot <= high:
                    return next(n for n in self.nodes if n.port == int(port))
        raise LookupError(key)

    def start(self) -> ClusterSet:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *[f"127.0.0.1:{node.port}" for node in self.nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                wait_until(lambda c=client: c.cluster("info")["cluster_state"] == "ok", "cluster")
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
