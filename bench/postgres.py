"""A throwaway Postgres server for the parts that run peers on Postgres (LangGraph's ``PostgresSaver``, DBOS).

    with postgres_server() as pg:
        dsn = pg.create_database("lg")       # postgresql://bench:...@127.0.0.1:PORT/lg

``initdb`` makes a cluster in a temporary directory, ``pg_ctl`` starts it on 127.0.0.1 and a free port (its
Unix socket in that directory, no other interface) and stops it at the end of the block; the directory is
then removed. No system-wide cluster is touched. The server keeps Postgres's defaults for durability
(``fsync``, ``synchronous_commit`` on), so each commit is on disk, as the other parts' stores are.

``initdb`` and ``postgres`` refuse to run as root: as root, both run as the ``postgres`` OS user (Debian's
``postgresql`` package creates it) through ``runuser``. Binaries: ``$AGEX_BENCH_PG_BIN``, else the newest
``/usr/lib/postgresql/<ver>/bin`` (Debian's layout), else ``initdb`` on ``PATH``.

Also the read-outs the parts share: a table's bytes and inserted rows, and the WAL position.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
USER = "bench"
OS_USER_AS_ROOT = "postgres"


class PostgresUnavailable(RuntimeError):
    """No Postgres binaries, or no unprivileged user to run them as."""


def bindir() -> Path:
    env = os.environ.get("AGEX_BENCH_PG_BIN")
    if env:
        return Path(env)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.parent.name)) or (0,)

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    if which:
        return Path(os.path.realpath(which)).parent
    raise PostgresUnavailable("no initdb found: install Postgres (Debian: apt-get install -y postgresql) or set "
                              "AGEX_BENCH_PG_BIN to its bin directory")


@dataclass
class Server:
    """A running throwaway server: ``dsn(database)`` to connect, ``create_database(name)`` for a fresh one."""

    port: int
    password: str
    version: str
    datadir: Path
    log_path: Path
    _stop: Callable[[], None] = field(repr=False, default=lambda: None)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@{HOST}:{self.port}/{database}?sslmode=disable"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as e:
            return f"(no log: {e})"


@contextlib.contextmanager
def postgres_server(progress: Callable[[str], None] = print, *, start_timeout: float = 60) -> Iterator[Server]:
    from agex.dev.emulators.gcloud import free_port

    bin_ = bindir()
    prefix: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam(OS_USER_AS_ROOT)
        except KeyError as e:
            raise PostgresUnavailable(f"running as root and there is no '{OS_USER_AS_ROOT}' user to run Postgres "
                                      "as (Debian's postgresql package creates it)") from e
        runuser = shutil.which("runuser")
        if not runuser:
            raise PostgresUnavailable("running as root and runuser is missing: cannot drop to the postgres user")
        prefix, owner = [runuser, "-u", OS_USER_AS_ROOT, "--"], (pw.pw_uid, pw.pw_gid)

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="agex-bench-pg-"))
    datadir, log_path, pwfile = tmp / "data", tmp / "server.log", tmp / "pw"
    password = secrets.token_urlsafe(18)
    if owner:
        os.chown(tmp, *owner)

    def run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # cwd: a directory the postgres user can enter (the bench's own cwd may not be)
        return subprocess.run([*prefix, *argv], cwd=tmp, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def pg_ctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([str(bin_ / "pg_ctl"), "-D", str(datadir), *args], timeout=timeout)

    started = False

    def stop() -> None:
        nonlocal started
        if not started:
            return
        started = False
        out = pg_ctl("stop", "-m", "fast", "-w", "-t", "30", timeout=60)
        if out.returncode != 0:
            # the server this block started, by the pid in its own postmaster.pid
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((datadir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)

    atexit.register(stop)  # a bench that dies in between leaves no server behind
    try:
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if owner:
            os.chown(pwfile, *owner)
        out = run([str(bin_ / "initdb"), "-D", str(datadir), "-U", USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                   # initdb's own fsync of the new cluster: nothing to keep if the machine dies now
                   "--no-sync"])
        pwfile.unlink()
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        version = (run([str(bin_ / "postgres"), "--version"]).stdout.strip() or "postgres (unknown version)")
        for attempt in range(3):  # the free port may be taken before the server binds it
            port = free_port()
            options = (f"-c listen_addresses={HOST} -c port={port} -c unix_socket_directories={tmp} "
                       "-c max_connections=60")
            out = pg_ctl("start", "-w", "-t", str(int(start_timeout)), "-l", str(log_path), "-o", options,
                         timeout=start_timeout + 30)
            if out.returncode == 0:
                started = True
                break
            if attempt == 2 or "could not bind" not in _read(log_path):
                raise RuntimeError(f"pg_ctl start failed ({out.returncode}): {out.stderr.strip()[-1000:]}\n"
                                   f"{_read(log_path)[-2000:]}")
        server = Server(port=port, password=password, version=version, datadir=datadir, log_path=log_path,
                        _stop=stop)
        progress(f"  Postgres ({version}) on {HOST}:{port}, data in {datadir} (up in {time.perf_counter() - t0:.1f}s)")
        yield server
    finally:
        stop()
        atexit.unregister(stop)
        shutil.rmtree(tmp, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --- read-outs -------------------------------------------------------------------------------------------


def wal_bytes(conn: Any) -> int:
    """The WAL insert position in bytes: the difference of two readings is what the server wrote to its WAL
    between them (all databases of the server)."""
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint").fetchone()
    return int(row[0])


def table_stats(conn: Any, schema: str = "public") -> dict[str, dict[str, int]]:
    """Per table of ``schema``: its bytes on disk with TOAST and indexes (``pg_total_relation_size``), its heap
    alone, and the rows inserted, updated and deleted since the statistics were reset (``pg_stat_user_tables``;
    a backend reports its counts when its transaction ends, at most once a second, and when it exits: read
    them after the writers have disconnected)."""
    rows = conn.execute(
        "SELECT relname, pg_total_relation_size(relid), pg_relation_size(relid), n_tup_ins, n_tup_upd, n_tup_del "
        "FROM pg_stat_user_tables WHERE schemaname = %s ORDER BY relname", (schema,)).fetchall()
    return {r[0]: {"total_bytes": int(r[1]), "heap_bytes": int(r[2]), "rows_inserted": int(r[3]),
                   "rows_updated": int(r[4]), "rows_deleted": int(r[5])} for r in rows}


def xact_commits(conn: Any) -> int:
    """Transactions committed in this connection's database so far (``pg_stat_database``). A backend reports
    its count at most once a second while it works and when it exits (an idle one within 10 s): take the
    difference around a span that starts before the writers connect and ends after they disconnect."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
               .fetchone()[0])


def database_bytes(conn: Any) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def settle_stats(conn: Any, seconds: float = 5.0) -> None:
    """Wait (up to ``seconds``) until the cumulative statistics stop changing: the writers' last counts are
    flushed when their backends exit, a moment after they disconnect."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    prev: Any = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = conn.execute("SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0) "
                           "FROM pg_stat_user_tables").fetchone()
        if cur == prev:
            return
        prev = cur
        time.sleep(0.3)
