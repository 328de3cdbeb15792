"""The throwaway Postgres of tests and local development (``agex.dev.emulators.postgres_server``): pgvector
is there, and a stopped server leaves neither a process nor its directory behind."""

from __future__ import annotations

import socket

import psycopg
import pytest

from agex.dev.emulators import gcloud
from agex.dev.emulators.postgres_server import postgres_bindir, start_postgres


def test_pgvector_can_be_created_and_queried(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TEMP TABLE items (id int, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        nearest = conn.execute("SELECT id FROM items ORDER BY embedding <=> '[1,0,0]' LIMIT 2").fetchall()
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert nearest == [(1,), (3,)]
    assert version is not None and tuple(int(x) for x in version[0].split(".")[:2]) >= (0, 8)


def test_a_stopped_server_leaves_nothing_behind() -> None:
    server = start_postgres()
    assert server.pgvector and server.root.is_dir()
    assert server.dsn.startswith(f"postgresql://agex:{server.password}@127.0.0.1:{server.port}/postgres")
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    server.stop()
    server.stop()  # twice is harmless
    assert not server.root.exists() and not server.proc.alive() and pid is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0


def test_binaries_named_but_missing_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("AGEX_POSTGRES_BIN", str(tmp_path))
    with pytest.raises(gcloud.EmulatorNotInstalled, match="no 'postgres' binary"):
        postgres_bindir()
