"""Start and stop a throwaway ``redis-server`` for tests and local development: bound to 127.0.0.1 on a free
port, nothing persisted (``--save "" --appendonly no``), its working directory a temporary one removed when
it stops. The binary is Debian's (``apt-get install -y redis-server``); ``AGEX_REDIS_SERVER`` names another.

    with start_redis() as server:
        limiter = RedisLimiter.from_url(server.url, prefix="test:")

Only the standard library is imported here.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile

from agex.dev.emulators.gcloud import (
    HOST,
    EmulatorError,
    EmulatorNotInstalled,
    EmulatorProcess,
    free_port,
    spawn_and_wait,
)

__all__ = ["RedisServer", "redis_server_binary", "start_redis"]

DEFAULT_BINARY = "/usr/bin/redis-server"
INSTALL_HINT = "install it with `apt-get install -y redis-server`"


def redis_server_binary() -> str:
    """The ``redis-server`` to run: ``$AGEX_REDIS_SERVER``, Debian's, or the one on PATH."""
    for candidate in (os.environ.get("AGEX_REDIS_SERVER"), DEFAULT_BINARY, shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmulatorNotInstalled(f"redis-server not found at {DEFAULT_BINARY} nor on PATH; {INSTALL_HINT}")


class RedisServer:
    """A started ``redis-server``: ``url`` is ``redis://127.0.0.1:PORT/0``; ``stop()`` (or leaving the
    ``with`` block) kills it and removes its directory. Stopping twice is harmless."""

    def __init__(self, process: EmulatorProcess, directory: str) -> None:
        self.process = process
        self.directory = directory

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def host_port(self) -> str:
        return self.process.host_port

    @property
    def url(self) -> str:
        return f"redis://{self.host_port}/0"

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.process.pid}>"


def _pongs(port: int) -> bool:
    """``PING`` answered ``+PONG``: the server accepts commands (not merely the port bound)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _argv(binary: str, port: int, directory: str) -> list[str]:
    return [
        binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory,
        "--daemonize", "no", "--protected-mode", "yes", "--logfile", "",
    ]  # fmt: skip


def start_redis(port: int | None = None, *, timeout: float = 20) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1 (``port``, or a free one) and wait until it answers ``PING``.
    Raises ``EmulatorNotInstalled`` without the binary, ``EmulatorError`` (with its log) if it does not come up."""
    binary = redis_server_binary()
    directory = tempfile.mkdtemp(prefix="agex-redis-")
    attempts = 1 if port is not None else 3
    try:
        for attempt in range(1, attempts + 1):
            p = port if port is not None else free_port()
            try:
                proc = spawn_and_wait("redis", _argv(binary, p, directory), p, os.path.join(directory, f"{p}.log"),
                                      timeout, ready=functools.partial(_pongs, p), cwd=directory)
            except EmulatorError as e:
                # a picked port can be taken by another process before the server binds it: pick another
                if "already in use" in str(e).lower() and attempt < attempts:
                    continue
                raise
            return RedisServer(proc, directory)
        raise EmulatorError("redis-server: no free port found")  # not reached: the last attempt raised
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
