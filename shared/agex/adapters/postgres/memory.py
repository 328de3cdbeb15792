"""Postgres adapters of the memory ports, with pgvector: records searched by cosine distance (``<=>``), and the graph
as rows (tables: :mod:`agex.adapters.postgres.memory_schema`). They apply the rules of
:mod:`agex.ports.memory_rules` as the other backends do, and pass the same conformance suite.

Search is exact by default: one statement computes the cosine distance of every record of the scopes named that
passes the conditions (validity, kind, status, model, and metadata as ``jsonb`` containment, so ``1`` equals
``1.0`` and not ``true``), the scope index narrowing the scan to those scopes; a per-user set of memories is small,
and a scan of it is fast. pgvector computes in single precision, so the records within a rounding margin of the
k-th distance are returned too, and the store scores them exactly from the vectors as written (doubles, kept beside
the pgvector copy): every backend returns the same records with the same scores.

With ``hnsw=True`` the store creates an HNSW index (``vector_cosine_ops``) and searches through it when the planner
finds that cheaper, with ``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8): the index is scanned further until
``k`` records pass the conditions, or ``hnsw.max_scan_tuples`` (20,000 by default) were read. The answer is then
approximate: a near record can be missed, and a very selective condition can return fewer than ``k``. The records
returned are scored exactly and ordered as in exact mode. The planner still scans a small scope through the scope
index, exactly. A store without ``hnsw`` stays exact even when the index exists: its statement cannot use it.

Writes that read first (upsert, supersede, adding and closing a relation) lock the rows they read (``FOR UPDATE``),
decide with the shared rules, and write in the same transaction; a row that did not exist is inserted with ``ON
CONFLICT DO NOTHING``, and if another writer inserted it meanwhile, the transaction is tried again on what it wrote,
so a retried write never undoes a supersession or a close. Adding a relation holds ``FOR KEY SHARE`` on its two
entities until it commits, so an erasure deleting one of them waits for it, then deletes the relation as well.
Erasure is one transaction per store; a search running meanwhile sees the user's memories all or not at all.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from psycopg import Connection, sql
from psycopg import errors as pgerr
from psycopg_pool import ConnectionPool

from agex.core.errors import NotFound, TransientError
from agex.core.memory import Entity, MemoryRecord, Relation, Scope
from agex.ports import memory_rules as rules
from agex.ports.memory import (
    ABOUT_LIMIT,
    GraphStore,
    MemoryFilter,
    MemoryPage,
    Neighbourhood,
    ScoredRecord,
    VectorStore,
)
from agex.ports.metrics_rules import utc
from agex.ports.rules import valid_document_id

from .connections import calling, check_schema, open_pool
from .memory_schema import GRAPH_TABLES, VECTOR_TABLES, ensure_graph_tables, ensure_vector_tables
from .retention import delete_expired

T = TypeVar("T")

__all__ = ["PostgresGraphStore", "PostgresVectorStore"]

_RETRIED = (pgerr.SerializationFailure, pgerr.DeadlockDetected)


class _Raced(Exception):
    """A row this transaction found missing was inserted by another before it could: try again."""


class _Tables:
    """What both stores share: the pool, the schema, and transactions tried again when the server refused them."""

    def __init__(self, pool_or_dsn: ConnectionPool | str, schema: str, max_attempts: int, lock_timeout_s: float,
                 max_connections: int) -> None:
        self.schema = check_schema(schema)
        self._owns_pool = isinstance(pool_or_dsn, str)
        self.pool = open_pool(pool_or_dsn, max_size=max_connections) if isinstance(pool_or_dsn, str) else pool_or_dsn
        self._max_attempts = max(1, max_attempts)
        self._lock_timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
        self._queries: dict[str, sql.Composed] = {}

    def close(self) -> None:
        """Close the pool if the store opened it."""
        if self._owns_pool:
            self.pool.close()

    def q(self, template: str, **names: sql.Composable) -> sql.Composed:
        """``template`` with ``{s}`` the schema (and ``names``); those without names are composed once."""
        if names:
            return sql.SQL(template).format(s=sql.Identifier(self.schema), **names)
        query = self._queries.get(template)
        if query is None:
            query = self._queries[template] = sql.SQL(template).format(s=sql.Identifier(self.schema))
        return query

    def rows(self, what: str, query: sql.Composed, params: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        with calling(what), self.pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def transact(self, what: str, body: Callable[[Connection[Any]], T]) -> T:
        """``body`` in a transaction, tried again (``max_attempts`` in all) when the server rolled it back for
        contention (a serialization failure, a deadlock) or when ``body`` raced another writer; then
        ``TransientError``. A row lock held longer than ``lock_timeout_s`` is ``TransientError`` at once."""
        cause: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # de-synchronize contenders
            try:
                with calling(what), self.pool.connection() as conn, conn.transaction():
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", (self._lock_timeout,))
                    return body(conn)
            except _Raced as e:
                cause = e
            except TransientError as e:
                if not isinstance(e.__cause__, _RETRIED):
                    raise  # a connection lost during the commit may have committed: the caller decides
                cause = e.__cause__
        raise TransientError(f"{what}: too much contention, gave up after {self._max_attempts} attempts") from cause


def _insert_or_update(conn: Connection[Any], insert: sql.Composed, update: sql.Composed,
                      new: Sequence[tuple[Any, ...]], changed: Sequence[tuple[Any, ...]]) -> None:
    """Insert the rows found missing, update the rows found (and locked); ``_Raced`` if one of the missing ones was
    inserted by another writer meanwhile (its write must be read before deciding again)."""
    with conn.cursor() as cur:
        if new:
            cur.executemany(insert, new)
            if cur.rowcount != len(new):
                raise _Raced
        if changed:
            cur.executemany(update, changed)


# --- the vector store --------------------------------------------------------------------------------------------

_RECORD_COLUMNS = ("scope_key, scope_user, source_user, kind, status, embedding_model, created_at, valid_from, "
                   "valid_to, expire_at, metadata, vector, embedding, record")
_RECORD_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::{ext}.vector, %s::json"
_INSERT_RECORD = ("INSERT INTO {s}.memories (tenant, record_id, " + _RECORD_COLUMNS + ") VALUES (%s, %s, "
                  + _RECORD_VALUES + ") ON CONFLICT (tenant, record_id) DO NOTHING")
_UPDATE_RECORD = ("UPDATE {s}.memories SET (" + _RECORD_COLUMNS + ") = (" + _RECORD_VALUES + ") "
                  "WHERE tenant = %s AND record_id = %s")
_LOCK_RECORDS = ("SELECT record, vector FROM {s}.memories WHERE (tenant, record_id) IN "
                 "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY tenant, record_id FOR UPDATE")
_SELECT_RECORD = "SELECT record, vector FROM {s}.memories WHERE tenant = %s AND record_id = %s"

# Every record of the scopes that passes the conditions, by pgvector's distance; then, by primary key, those within
# the rounding margin of the k-th. ``ranked`` is read twice, so it is computed once, and no index can order it: exact.
_EXACT = """
WITH ranked AS MATERIALIZED (
    SELECT record_id, embedding OPERATOR({ext}.<=>) %(query)s::{ext}.vector AS distance
    FROM {s}.memories WHERE {where}
), cut AS (
    SELECT distance FROM ranked ORDER BY distance LIMIT 1 OFFSET %(offset)s
)
SELECT record, vector FROM {s}.memories WHERE tenant = %(tenant)s AND record_id = ANY(ARRAY(
    SELECT record_id FROM ranked WHERE distance <= coalesce((SELECT distance FROM cut), 'Infinity') + %(margin)s))
"""
# Through the HNSW index when the planner chooses it; in relaxed order, which the exact scores put right after.
_APPROXIMATE = """
SELECT record, vector FROM {s}.memories WHERE {where}
ORDER BY embedding OPERATOR({ext}.<=>) %(query)s::{ext}.vector LIMIT %(k)s
"""


class PostgresVectorStore(VectorStore):
    """Memories in a table of ``schema`` (created unless it exists: ``create_schema=False`` when a migration job
    owns it), with vectors of ``dimensions``, and of ``embedding_model`` only when it is given.

    ``pool_or_dsn``: a ``psycopg_pool.ConnectionPool`` (shared with other adapters; the caller closes it), or a DSN
    for which the store opens a pool of ``max_connections`` (closed by :meth:`close`). ``hnsw``: create the HNSW
    index and search through it (approximate; see the module's description), with ``ef_search`` candidates per
    scan (None: the server's ``hnsw.ef_search``, 40 by default). ``max_attempts``: attempts of a write refused by
    contention; ``lock_timeout_s``: how long a write waits for a row lock before ``TransientError``.
    """

    def __init__(self, pool_or_dsn: ConnectionPool | str, *, schema: str, dimensions: int,
                 embedding_model: str | None = None, hnsw: bool = False, ef_search: int | None = None,
                 create_schema: bool = True, max_attempts: int = 5, lock_timeout_s: float = 10.0,
                 max_connections: int = 10) -> None:
        self.dimensions = rules.check_dimensions(dimensions)
        self.embedding_model = embedding_model
        self.hnsw = hnsw
        if ef_search is not None and not 1 <= ef_search <= 1000:
            raise ValueError(f"ef_search must be 1 to 1000 (pgvector's range), not {ef_search}")
        self._ef_search = ef_search
        self._tables = _Tables(pool_or_dsn, schema, max_attempts, lock_timeout_s, max_connections)
        self.schema, self.pool = self._tables.schema, self._tables.pool
        self._ext = sql.Identifier(ensure_vector_tables(self.pool, schema, dimensions, hnsw=hnsw,
                                                        create=create_schema))
        # the margin of pgvector's single-precision distance: the inputs' rounding and its sums over the dimensions
        self._margin = 4 * (dimensions + 2) * 2.0**-24

    def close(self) -> None:
        self._tables.close()

    def upsert(self, records: Sequence[MemoryRecord]) -> None:
        rules.check_batch(records, self.dimensions, self.embedding_model)
        if not records:
            return
        ordered = sorted(records, key=lambda r: (r.scope.tenant, r.id))  # one lock order for every writer
        keys = ([r.scope.tenant for r in ordered], [r.id for r in ordered])
        insert, update = self._tables.q(_INSERT_RECORD, ext=self._ext), self._tables.q(_UPDATE_RECORD, ext=self._ext)

        def body(conn: Connection[Any]) -> None:
            stored = {(r.scope.tenant, r.id): r for r in (_record(row) for row in
                                                          conn.execute(self._tables.q(_LOCK_RECORDS), keys))}
            new: list[tuple[Any, ...]] = []
            changed: list[tuple[Any, ...]] = []
            for record in ordered:
                old = stored.get((record.scope.tenant, record.id))
                columns = _record_columns(rules.kept_on_upsert(old, record))
                if old is None:
                    new.append((record.scope.tenant, record.id, *columns))
                else:
                    changed.append((*columns, record.scope.tenant, record.id))
            _insert_or_update(conn, insert, update, new, changed)

        self._tables.transact(f"storing {len(records)} memories", body)

    def get(self, tenant: str, record_id: str) -> MemoryRecord | None:
        if not _valid(tenant, record_id):
            return None  # no record can have this name: upsert refuses it
        rows = self._tables.rows(f"reading memory {record_id}", self._tables.q(_SELECT_RECORD), (tenant, record_id))
        return _record(rows[0]) if rows else None

    def search(self, scopes: Sequence[Scope], vector: Sequence[float], *, k: int = 10,
               filters: MemoryFilter | None = None, include_superseded: bool = False,
               at: datetime | None = None) -> list[ScoredRecord]:
        tenant = rules.check_search(scopes, vector, k, self.dimensions, include_superseded, at)
        where, params = _conditions(tenant, scopes, filters, include_superseded, at)
        params.update(query=_literal(vector), k=k, offset=k - 1, margin=self._margin)
        what = f"searching the memories of {len(scopes)} scopes of tenant {tenant}"
        if self.hnsw:
            query = self._tables.q(_APPROXIMATE, ext=self._ext, where=where)
            with calling(what), self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                if self._ef_search is not None:
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(self._ef_search),))
                rows = conn.execute(query, params).fetchall()
        else:
            rows = self._tables.rows(what, self._tables.q(_EXACT, ext=self._ext, where=where), params)
        found = (_record(row) for row in rows)
        return rules.best((ScoredRecord(record=r, score=rules.cosine(vector, r.vector)) for r in found), k)

    def about(self, scope: Scope, key: str, *, limit: int = ABOUT_LIMIT) -> list[MemoryRecord]:
        if not _valid(scope.tenant) or "\x00" in key:
            return []  # nothing can be stored under these names
        query = self._tables.q("SELECT record, vector FROM {s}.memories WHERE tenant = %s AND scope_key = %s "
                               "AND valid_to IS NULL AND metadata ->> 'key' = %s "
                               "ORDER BY created_at DESC, record_id DESC LIMIT %s")
        rows = self._tables.rows(f"reading the memories of {scope} about {key}", query,
                                 (scope.tenant, scope.key, key, limit))
        return [_record(row) for row in rows]

    def supersede(self, tenant: str, record_id: str, *, by: str, at: datetime) -> MemoryRecord:
        if not _valid(tenant, record_id):
            raise NotFound(f"memory {record_id!r} not found")

        def body(conn: Connection[Any]) -> MemoryRecord:
            row = conn.execute(self._tables.q(_SELECT_RECORD + " FOR UPDATE"), (tenant, record_id)).fetchone()
            stored = _record(row) if row else None
            new = rules.superseded(stored, record_id, by, at)
            if new is None:
                assert stored is not None  # superseded() raised NotFound otherwise
                return stored
            conn.execute(self._tables.q(_UPDATE_RECORD, ext=self._ext), (*_record_columns(new), tenant, record_id))
            return new

        return self._tables.transact(f"superseding memory {record_id}", body)

    def delete(self, scope: Scope, ids: Sequence[str]) -> int:
        wanted = [i for i in dict.fromkeys(ids) if _valid(i)]
        if not wanted or not _valid(scope.tenant):
            return 0
        query = self._tables.q("DELETE FROM {s}.memories WHERE tenant = %s AND scope_key = %s AND record_id = ANY(%s)")
        with calling(f"deleting memories in {scope}"), self.pool.connection() as conn:
            return conn.execute(query, (scope.tenant, scope.key, wanted)).rowcount

    def forget_user(self, tenant: str, user: str) -> int:
        if not _valid(tenant) or "\x00" in user:
            return 0  # nothing can be stored under these names
        query = self._tables.q("DELETE FROM {s}.memories WHERE tenant = %s AND (scope_user = %s OR source_user = %s)")
        with calling(f"erasing the memories of a user of tenant {tenant}"), self.pool.connection() as conn:
            return conn.execute(query, (tenant, user, user)).rowcount

    def list_records(self, scope: Scope, *, page_size: int = 50, cursor: str | None = None) -> MemoryPage:
        rules.check_page_size(page_size)
        after = rules.decode_cursor(cursor) if cursor else None
        if not _valid(scope.tenant):
            return MemoryPage(records=[])
        conditions = "tenant = %s AND scope_key = %s" + (" AND (created_at, record_id) < (%s, %s)" if after else "")
        query = self._tables.q("SELECT record, vector FROM {s}.memories WHERE " + conditions +
                               " ORDER BY created_at DESC, record_id DESC LIMIT %s")
        params = [scope.tenant, scope.key, *(after or ()), page_size + 1]
        records = [_record(row) for row in self._tables.rows(f"listing memories of {scope}", query, params)]
        page = records[:page_size]
        more = len(records) > page_size
        return MemoryPage(records=page, next_cursor=rules.encode_cursor(page[-1]) if more else None)

    def delete_expired(self, now: datetime | None = None, *, batch: int = 1000) -> dict[str, int]:
        """Delete the records whose ``expire_at`` has passed (Firestore's TTL policy): run it periodically."""
        return delete_expired(self.pool, self.schema, now or datetime.now(UTC), batch=batch, tables=VECTOR_TABLES)


def _conditions(tenant: str, scopes: Sequence[Scope], filters: MemoryFilter | None, include_superseded: bool,
                at: datetime | None) -> tuple[sql.SQL, dict[str, Any]]:
    """The ``WHERE`` of a search: the scopes, the validity asked for, and the filters, as ``rules.in_time`` and
    ``rules.matches`` decide them."""
    conditions = ["tenant = %(tenant)s", "scope_key = ANY(%(scopes)s)"]
    params: dict[str, Any] = {"tenant": tenant, "scopes": sorted({s.key for s in scopes})}
    if at is not None:
        conditions.append("valid_from <= %(at)s AND (valid_to IS NULL OR %(at)s < valid_to)")
        params["at"] = utc(at)
    elif not include_superseded:
        conditions.append("valid_to IS NULL")
    if filters is not None:
        for column, value in (("kind", filters.kind), ("status", filters.status),
                              ("embedding_model", filters.embedding_model)):
            if value is not None:
                conditions.append(f"{column} = %({column})s")
                params[column] = str(value)
        if filters.metadata:
            # jsonb compares numbers by value and keeps booleans apart from them, as rules.same_scalar does
            conditions.append("metadata @> %(metadata)s::jsonb")
            params["metadata"] = _json(filters.metadata)
    return sql.SQL(" AND ".join(conditions)), params


def _record_columns(record: MemoryRecord) -> tuple[Any, ...]:
    return (record.scope.key, record.scope.user, record.source.user, str(record.kind), str(record.status),
            record.embedding_model, utc(record.created_at), utc(record.valid_from), _utc(record.valid_to),
            _utc(record.expire_at), _json(record.metadata), record.vector, _literal(record.vector),
            record.model_dump_json(exclude={"vector"}))


def _record(row: tuple[Any, ...]) -> MemoryRecord:
    doc, vector = row
    return MemoryRecord.model_validate({**_loaded(doc), "vector": [float(x) for x in vector]})


def _literal(vector: Sequence[float]) -> str:
    """pgvector's text form; ``repr`` keeps every digit of a double, which pgvector rounds to single precision."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


# --- the graph store ---------------------------------------------------------------------------------------------

_ENTITY_COLUMNS = "scope_key, scope_user, source_user, expire_at, entity"
_UPSERT_ENTITY = ("INSERT INTO {s}.memory_entities (tenant, entity_id, " + _ENTITY_COLUMNS + ") "
                  "VALUES (%s, %s, %s, %s, %s, %s, %s::json) ON CONFLICT (tenant, entity_id) DO UPDATE SET ("
                  + _ENTITY_COLUMNS + ") = (EXCLUDED.scope_key, EXCLUDED.scope_user, EXCLUDED.source_user, "
                  "EXCLUDED.expire_at, EXCLUDED.entity)")
_RELATION_COLUMNS = "scope_key, scope_user, source_user, subject, object, valid_to, expire_at, relation"
_RELATION_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s::json"
_INSERT_RELATION = ("INSERT INTO {s}.memory_relations (tenant, relation_id, " + _RELATION_COLUMNS + ") "
                    "VALUES (%s, %s, " + _RELATION_VALUES + ") ON CONFLICT (tenant, relation_id) DO NOTHING")
_UPDATE_RELATION = ("UPDATE {s}.memory_relations SET (" + _RELATION_COLUMNS + ") = (" + _RELATION_VALUES + ") "
                    "WHERE tenant = %s AND relation_id = %s")
_SELECT_RELATION = "SELECT relation FROM {s}.memory_relations WHERE tenant = %s AND relation_id = %s"
_SELECT_ENTITIES = "SELECT entity FROM {s}.memory_entities WHERE tenant = %s AND entity_id = ANY(%s)"


class PostgresGraphStore(GraphStore):
    """Entities and relations in two tables of ``schema`` (created unless they exist). ``pool_or_dsn``,
    ``max_attempts``, ``lock_timeout_s`` and ``max_connections`` as for :class:`PostgresVectorStore`."""

    def __init__(self, pool_or_dsn: ConnectionPool | str, *, schema: str, create_schema: bool = True,
                 max_attempts: int = 5, lock_timeout_s: float = 10.0, max_connections: int = 10) -> None:
        self._tables = _Tables(pool_or_dsn, schema, max_attempts, lock_timeout_s, max_connections)
        self.schema, self.pool = self._tables.schema, self._tables.pool
        ensure_graph_tables(self.pool, schema, create=create_schema)

    def close(self) -> None:
        self._tables.close()

    def upsert_entity(self, entity: Entity) -> Entity:
        rules.check_entity(entity)
        row = (entity.scope.tenant, entity.id, entity.scope.key, entity.scope.user, entity.source.user,
               _utc(entity.expire_at), entity.model_dump_json())
        with calling(f"storing entity {entity.id}"), self.pool.connection() as conn:
            conn.execute(self._tables.q(_UPSERT_ENTITY), row)
        return entity

    def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        if not _valid(tenant, entity_id):
            return None
        rows = self._tables.rows(f"reading entity {entity_id}", self._tables.q(_SELECT_ENTITIES), (tenant, [entity_id]))
        return Entity.model_validate(_loaded(rows[0][0])) if rows else None

    def add_relation(self, relation: Relation) -> Relation:
        rules.check_relation(relation)
        tenant = relation.scope.tenant
        ends = [e for e in (relation.subject, relation.object) if _valid(e)]

        def body(conn: Connection[Any]) -> Relation:
            # KEY SHARE until the commit: an erasure deleting an end waits for this relation, then deletes it too
            found = {r[0] for r in conn.execute(self._tables.q(
                "SELECT entity_id FROM {s}.memory_entities WHERE tenant = %s AND entity_id = ANY(%s) "
                "ORDER BY entity_id FOR KEY SHARE"), (tenant, ends))}
            for end in (relation.subject, relation.object):
                if end not in found:
                    raise NotFound(f"relation {relation.id}: no entity {end!r} in tenant {tenant}")
            row = conn.execute(self._tables.q(_SELECT_RELATION + " FOR UPDATE"), (tenant, relation.id)).fetchone()
            stored = Relation.model_validate(_loaded(row[0])) if row else None
            new = rules.kept_on_add(stored, relation)
            columns = _relation_columns(new)
            _insert_or_update(conn, self._tables.q(_INSERT_RELATION), self._tables.q(_UPDATE_RELATION),
                              [] if stored else [(tenant, relation.id, *columns)],
                              [(*columns, tenant, relation.id)] if stored else [])
            return new

        return self._tables.transact(f"adding relation {relation.id}", body)

    def close_relation(self, tenant: str, relation_id: str, at: datetime) -> Relation:
        if not _valid(tenant, relation_id):
            raise NotFound(f"relation {relation_id!r} not found")

        def body(conn: Connection[Any]) -> Relation:
            row = conn.execute(self._tables.q(_SELECT_RELATION + " FOR UPDATE"), (tenant, relation_id)).fetchone()
            stored = Relation.model_validate(_loaded(row[0])) if row else None
            new = rules.closed(stored, relation_id, at)
            if new is None:
                assert stored is not None  # closed() raised NotFound otherwise
                return stored
            conn.execute(self._tables.q(_UPDATE_RELATION), (*_relation_columns(new), tenant, relation_id))
            return new

        return self._tables.transact(f"closing relation {relation_id}", body)

    def neighbours(self, scopes: Sequence[Scope], entity_id: str, *, depth: int = 1, at: datetime | None = None,
                   predicates: Sequence[str] | None = None) -> Neighbourhood:
        tenant = rules.one_tenant(scopes)
        rules.check_depth(depth)
        readable = set(scopes)
        keys = sorted({s.key for s in scopes})
        relations = self._tables.q("SELECT relation FROM {s}.memory_relations WHERE tenant = %s AND scope_key = ANY(%s) "
                                   "AND (subject = ANY(%s) OR object = ANY(%s))")
        entities = self._tables.q(_SELECT_ENTITIES + " AND scope_key = ANY(%s)")
        with calling(f"walking the memory graph of tenant {tenant}"), self.pool.connection() as conn, \
                conn.transaction():
            # one snapshot for every read of the walk: it sees the graph as it was at one instant
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def touching(ids: set[str]) -> list[Relation]:
                rows = conn.execute(relations, (tenant, keys, sorted(ids), sorted(ids))).fetchall()
                return [Relation.model_validate(_loaded(r[0])) for r in rows]

            def found(ids: set[str]) -> list[Entity]:
                rows = conn.execute(entities, (tenant, sorted(i for i in ids if _valid(i)), keys)).fetchall()
                return [Entity.model_validate(_loaded(r[0])) for r in rows]

            start = found({entity_id}) if _valid(entity_id) else []
            first = rules.require_readable(start[0] if start else None, entity_id, readable)
            return rules.walk(first, readable, depth, at, predicates, touching, found)

    def forget_user(self, tenant: str, user: str) -> int:
        if not _valid(tenant) or "\x00" in user:
            return 0

        def body(conn: Connection[Any]) -> int:
            gone = [r[0] for r in conn.execute(self._tables.q(
                "DELETE FROM {s}.memory_entities WHERE tenant = %s AND (scope_user = %s OR source_user = %s) "
                "RETURNING entity_id"), (tenant, user, user))]
            # a statement of its own: it sees the relations committed by writers the entities' deletion waited for
            relations = conn.execute(self._tables.q(
                "DELETE FROM {s}.memory_relations WHERE tenant = %s AND (scope_user = %s OR source_user = %s "
                "OR subject = ANY(%s) OR object = ANY(%s))"), (tenant, user, user, gone, gone)).rowcount
            return len(gone) + relations

        return self._tables.transact(f"erasing the memory graph of a user of tenant {tenant}", body)

    def delete_expired(self, now: datetime | None = None, *, batch: int = 1000) -> dict[str, int]:
        """Delete the entities and relations whose ``expire_at`` has passed: run it periodically."""
        return delete_expired(self.pool, self.schema, now or datetime.now(UTC), batch=batch, tables=GRAPH_TABLES)


def _relation_columns(relation: Relation) -> tuple[Any, ...]:
    return (relation.scope.key, relation.scope.user, relation.source.user, relation.subject, relation.object,
            _utc(relation.valid_to), _utc(relation.expire_at), relation.model_dump_json())


# --- values ------------------------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _loaded(doc: Any) -> Any:
    """psycopg parses json columns; a string is a document a driver left as text."""
    return json.loads(doc) if isinstance(doc, str | bytes) else doc


def _valid(*values: str) -> bool:
    """Names a stored row can have: the ids every store accepts, and no NUL, which Postgres text cannot hold."""
    return all(valid_document_id(v) and "\x00" not in v for v in values)
