"""Real Redis topologies for tests: a three-master Redis Cluster, and a primary with a
replica watched by one Sentinel, started from the `redis-server` binary the embedded
server uses (and the `redis-cli` beside it). Tests skip with the reason when either is
missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from brain.redis_server import RedisUnavailable, redis_binary


def binaries() -> tuple[str, str]:
    """(redis-server, redis-cli), or skip the test saying which is missing."""
    try:
        server = redis_binary()
    except RedisUnavailable as exc:
        pytest.skip(f"no redis-server binary: {exc}")
    cli = Path(server).with_name("redis-cli")
    if not cli.exists():
        found = shutil.which("redis-cli")
        if found is None:
            pytest.skip(f"no redis-cli beside {server} or on PATH")
        cli = Path(found)
    return server, str(cli)


def free_ports(count: int) -> list[int]:
    """Ports free right now (a cluster node also needs its port + 10000 free)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock, socket.socket() as bus:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port + 10000 > 65535 or port in ports:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _wait_until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class Topology:
    """Processes started for one test, stopped at the end."""

    root: Path
    server: str
    cli: str
    nodes: list[Node] = field(default_factory=list)

    def start(self, name: str, port: int, *args: str) -> Node:
        directory = self.root / name
        directory.mkdir(parents=True)
        command = [
            self.server, *args,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        node = Node(port, process, directory)
        self.nodes.append(node)
        _wait_until(lambda: node.client().ping(), f"{name} did not answer on {port}")
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()


@contextmanager
def topology(root: Path) -> Iterator[Topology]:
    server, cli = binaries()
    started = Topology(root, server, cli)
    try:
        yield started
    finally:
        started.stop()


def start_cluster(nodes: Topology, masters: int = 3) -> list[Node]:
    """`masters` masters with `--cluster-enabled yes`, joined by `redis-cli --cluster
    create`, every slot served."""
    options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--cluster-node-timeout", "2000", "--appendonly", "yes")  # fmt: skip
    started = [
        nodes.start(f"cluster{n}", port, *options) for n, port in enumerate(free_ports(masters))
    ]
    subprocess.run(
        [nodes.cli, "--cluster", "create", *(n.address for n in started), "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _wait_until(
        lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in started),
        "the cluster did not become ok",
    )
    return started


SERVICE = "deskmate"


def start_sentinel(nodes: Topology, replicas: int = 2) -> tuple[Node, list[Node], Node]:
    """(primary, replicas, sentinel): the sentinel declares the primary down after 1 s of
    silence and fails over on its own vote. Two replicas by default, so that the new
    primary still has one to confirm writes after the old one is gone."""
    primary_port, sentinel_port, *replica_ports = free_ports(2 + replicas)
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    primary = nodes.start("primary", primary_port, *durable)
    started = [
        nodes.start(f"replica{n}", port, *durable, "--replicaof", "127.0.0.1", str(primary_port))
        for n, port in enumerate(replica_ports)
    ]
    for replica in started:
        _wait_until(
            lambda replica=replica: (
                replica.client().info("replication")["master_link_status"] == "up"
            ),
            "a replica did not sync",
        )
    config = nodes.root / "sentinel.conf"
    config.write_text(
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
        f"sentinel parallel-syncs {SERVICE} {replicas}\n"
    )
    sentinel = nodes.start("sentinel", sentinel_port, str(config), "--sentinel")
    _wait_until(
        lambda: int(_any(sentinel.client().sentinel_master(SERVICE))["num-slaves"]) == replicas,
        "the sentinel did not find the replicas",
    )
    return primary, started, sentinel


def primary_port(sentinel: Node) -> int:
    """The port of the server the sentinel names as the primary."""
    return int(_any(sentinel.client().sentinel_get_master_addr_by_name(SERVICE))[1])


def _any(response: object) -> Any:
    """A sentinel command's reply (redis-py types them as a union with bool)."""
    return response


def wait_for_new_primary(sentinel: Node, old: int, timeout: float = 20.0) -> int:
    """Until the sentinel names another server than the one on `old` as the primary,
    and that one serves as a primary; its port."""
    _wait_until(lambda: primary_port(sentinel) != old, "the sentinel did not fail over", timeout)
    port = primary_port(sentinel)
    node = redis.Redis(port=port, decode_responses=True, socket_timeout=5)
    _wait_until(lambda: node.info("replication")["role"] == "master", "no new primary", timeout)
    return port
