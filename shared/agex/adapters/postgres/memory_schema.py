"""The tables of the Postgres memory stores (:mod:`agex.adapters.postgres.memory`), created idempotently in a
schema, and their deletion job.

    memories               (tenant, record_id)    a MemoryRecord: ``record`` (json, without its vector), the
                                                  vector as written (``vector``, double precision[]) and its
                                                  pgvector copy (``embedding``, vector(dimensions)), and the
                                                  columns searches filter on
    memory_entities        (tenant, entity_id)    an Entity as json, and its scope's columns
    memory_relations       (tenant, relation_id)  a Relation as json; subject and object for the walk
    memory_schema_version  (part)                 which layout each part ("memories", "graph") holds

The vector store and the graph store may share a schema, with each other and with the checkpoint store (their
table names differ); a schema holds vectors of one size, since ``embedding`` is declared with it. Ids and scope
keys are ``COLLATE "C"`` (code point order, as the other backends compare them). ``scope_user`` and
``source_user`` (the scope's user, the user it was learned from) serve erasure, through partial indexes;
``expire_at`` (indexed where set) serves the stores' ``delete_expired`` (:mod:`.retention`). Payloads are ``json``, not ``jsonb``: ``json``
keeps them exactly (a float's digits, a NUL character), and only ``metadata`` is ``jsonb``, for the filters'
containment test.

pgvector's type, operator and operator class are named with the schema the extension lives in, so the stores do
not depend on a connection's ``search_path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from agex.core.errors import ConfigurationError

from .connections import calling, check_schema

__all__ = ["GRAPH_TABLES", "HNSW_INDEX", "MEMORY_SCHEMA_VERSION", "VECTOR_TABLES",
           "ensure_graph_tables", "ensure_vector_tables"]

MEMORY_SCHEMA_VERSION = 1
VECTOR_TABLES = ("memories",)
GRAPH_TABLES = ("memory_entities", "memory_relations")
HNSW_INDEX = "memories_hnsw"
"""The approximate index a store made with ``hnsw=True`` creates, unless an index of this name exists."""

_VERSIONS = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.memory_schema_version (part text PRIMARY KEY, version integer NOT NULL);
"""

_VECTOR_DDL = """
CREATE TABLE IF NOT EXISTS {s}.memories (
    tenant          text COLLATE "C" NOT NULL,
    record_id       text COLLATE "C" NOT NULL,
    scope_key       text COLLATE "C" NOT NULL,
    scope_user      text COLLATE "C",
    source_user     text COLLATE "C",
    kind            text NOT NULL,
    status          text NOT NULL,
    embedding_model text NOT NULL,
    created_at      timestamptz NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    expire_at       timestamptz,
    metadata        jsonb NOT NULL,
    vector          double precision[] NOT NULL,
    embedding       {ext}.vector({dimensions}) NOT NULL,
    record          json NOT NULL,
    PRIMARY KEY (tenant, record_id)
);
CREATE INDEX IF NOT EXISTS memories_scope ON {s}.memories (tenant, scope_key, created_at DESC, record_id DESC);
CREATE INDEX IF NOT EXISTS memories_scope_user ON {s}.memories (tenant, scope_user) WHERE scope_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_source_user ON {s}.memories (tenant, source_user) WHERE source_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_expire ON {s}.memories (expire_at) WHERE expire_at IS NOT NULL;
"""

_HNSW_DDL = "CREATE INDEX IF NOT EXISTS {index} ON {s}.memories USING hnsw (embedding {ext}.vector_cosine_ops)"

_GRAPH_DDL = """
CREATE TABLE IF NOT EXISTS {s}.memory_entities (
    tenant      text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    scope_key   text COLLATE "C" NOT NULL,
    scope_user  text COLLATE "C",
    source_user text COLLATE "C",
    expire_at   timestamptz,
    entity      json NOT NULL,
    PRIMARY KEY (tenant, entity_id)
);
CREATE INDEX IF NOT EXISTS memory_entities_scope_user ON {s}.memory_entities (tenant, scope_user)
    WHERE scope_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memory_entities_source_user ON {s}.memory_entities (tenant, source_user)
    WHERE source_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memory_entities_expire ON {s}.memory_entities (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.memory_relations (
    tenant      text COLLATE "C" NOT NULL,
    relation_id text COLLATE "C" NOT NULL,
    scope_key   text COLLATE "C" NOT NULL,
    scope_user  text COLLATE "C",
    source_user text COLLATE "C",
    subject     text COLLATE "C" NOT NULL,
    object      text COLLATE "C" NOT NULL,
    valid_to    timestamptz,
    expire_at   timestamptz,
    relation    json NOT NULL,
    PRIMARY KEY (tenant, relation_id)
);
CREATE INDEX IF NOT EXISTS memory_relations_subject ON {s}.memory_relations (tenant, subject);
CREATE INDEX IF NOT EXISTS memory_relations_object ON {s}.memory_relations (tenant, object);
CREATE INDEX IF NOT EXISTS memory_relations_scope_user ON {s}.memory_relations (tenant, scope_user)
    WHERE scope_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memory_relations_source_user ON {s}.memory_relations (tenant, source_user)
    WHERE source_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS memory_relations_expire ON {s}.memory_relations (expire_at) WHERE expire_at IS NOT NULL;
"""


def ensure_vector_tables(pool: ConnectionPool, schema: str, dimensions: int, *, hnsw: bool = False,
                         create: bool = True) -> str:
    """Make sure ``schema`` holds the vector store's table for vectors of ``dimensions`` (and its HNSW index when
    ``hnsw``), creating what is missing unless ``create`` is False; the schema pgvector lives in. A table of
    another size is a ``ConfigurationError``: its vectors cannot be searched with this store's."""
    check_schema(schema)
    with calling(f"preparing the memory tables of schema {schema}"), pool.connection() as conn:
        with conn.transaction():
            found = _vector_state(conn, schema)
        if found is not None and _ready(schema, found, dimensions, hnsw):
            return found[0]  # an instance starting takes no lock and no DDL lock on a table in use
        if not create:
            raise ConfigurationError(f"Postgres schema {schema} has no memory table of {dimensions} dimensions"
                                     f"{' with its HNSW index' if hnsw else ''}: create it (create_schema=True once, "
                                     f"or the migration that owns the schema)")
        with _locked(conn, schema, extension=found is None):
            found = _vector_state(conn, schema)
            if found is None:
                _create_extension(conn)
                found = _vector_state(conn, schema)
                assert found is not None
            _ready(schema, found, dimensions, hnsw)  # what another creator made meanwhile must fit too
            params = {"s": sql.Identifier(schema), "ext": sql.Identifier(found[0])}
            conn.execute(sql.SQL(_VERSIONS + _VECTOR_DDL).format(dimensions=sql.Literal(dimensions), **params))
            _set_version(conn, schema, "memories")
            if hnsw:
                conn.execute(sql.SQL(_HNSW_DDL).format(index=sql.Identifier(HNSW_INDEX), **params))
        return found[0]


def ensure_graph_tables(pool: ConnectionPool, schema: str, *, create: bool = True) -> None:
    """Make sure ``schema`` holds the graph store's tables, creating them unless ``create`` is False."""
    check_schema(schema)
    with calling(f"preparing the memory graph tables of schema {schema}"), pool.connection() as conn:
        with conn.transaction():
            version = _version(conn, schema, "graph")
        if version is not None:
            _check_version(schema, "graph", version)
            return
        if not create:
            raise ConfigurationError(f"Postgres schema {schema} has no memory graph tables: create them "
                                     f"(create_schema=True once, or the migration that owns the schema)")
        with _locked(conn, schema, extension=False):
            if _version(conn, schema, "graph") is None:
                conn.execute(sql.SQL(_VERSIONS + _GRAPH_DDL).format(s=sql.Identifier(schema)))
                _set_version(conn, schema, "graph")


# --- what is there ---------------------------------------------------------------------------------------------


_State = tuple[str, int | None, int | None, bool]
"""pgvector's schema; the memory table's vector size (None: no table); its layout version; whether the HNSW index
exists."""


def _vector_state(conn: Connection[Any], schema: str) -> _State | None:
    """What the schema holds of the vector store; None while pgvector is not installed in the database."""
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                       "WHERE e.extname = 'vector'").fetchone()
    if row is None:
        return None
    table = f'"{schema}".memories'
    size = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                        "AND attname = 'embedding'", (table,)).fetchone()
    index = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".{HNSW_INDEX}',)).fetchone()
    return str(row[0]), int(size[0]) if size else None, _version(conn, schema, "memories"), bool(index and index[0])


def _ready(schema: str, state: _State, dimensions: int, hnsw: bool) -> bool:
    """Whether nothing is left to create; raises if what exists cannot serve this store."""
    _, size, version, indexed = state
    if size is not None and size != dimensions:
        raise ConfigurationError(f"the memories of Postgres schema {schema} hold vectors of {size} dimensions, and "
                                 f"this store is made for {dimensions}: use a schema per embedding size (and model)")
    if version is not None:
        _check_version(schema, "memories", version)
    return size is not None and version is not None and (indexed or not hnsw)


def _version(conn: Connection[Any], schema: str, part: str) -> int | None:
    found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".memory_schema_version',)).fetchone()
    if not found or found[0] is None:
        return None
    row = conn.execute(sql.SQL("SELECT version FROM {} WHERE part = %s").format(
        sql.Identifier(schema, "memory_schema_version")), (part,)).fetchone()
    return int(row[0]) if row else None


def _check_version(schema: str, part: str, version: int) -> None:
    if version > MEMORY_SCHEMA_VERSION:
        raise ConfigurationError(f"the {part} tables of {schema} have layout version {version}, newer than this "
                                 f"code's {MEMORY_SCHEMA_VERSION}: deploy the newer code, or use another schema")


def _set_version(conn: Connection[Any], schema: str, part: str) -> None:
    conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (part) DO NOTHING").format(
        sql.Identifier(schema, "memory_schema_version")), (part, MEMORY_SCHEMA_VERSION))


# --- creating it -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(conn: Connection[Any], schema: str, *, extension: bool) -> Iterator[None]:
    """A transaction for DDL, begun once this session holds the advisory lock of the schema (the checkpoint store's
    too, so that two stores creating one schema at once wait for each other: ``IF NOT EXISTS`` alone races on the
    catalogs) and, to create the extension, the database's lock of pgvector. The locks are session locks taken
    before the transaction begins, so that it sees what the creator it waited for committed."""
    locks = [f"agex schema {schema}", *(["agex extension vector"] if extension else [])]
    for lock in locks:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock,))
    conn.commit()
    try:
        with conn.transaction():
            yield
    finally:
        for lock in reversed(locks):
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
        conn.commit()


def _create_extension(conn: Connection[Any]) -> None:
    try:
        with conn.transaction():  # a savepoint: the message below says more than the server's
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as e:
        raise ConfigurationError(f"pgvector is not installed in this database and could not be ({e}): install the "
                                 f"extension on the server (pgvector 0.8 or later) and run CREATE EXTENSION vector as "
                                 f"a role allowed to") from e
