"""The Postgres memory stores beyond the shared suites: exact scores despite pgvector's single precision, the HNSW
option (approximate, with iterative scans), writers in two processes, erasure while searches and writes run, the
schema made once by concurrent starts, and the deletion job that stands in for TTL."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore
from agex.adapters.postgres.memory import PostgresGraphStore, PostgresVectorStore
from agex.core.errors import ConfigurationError, NotFound
from agex.core.memory import MemoryKind, MemoryStatus, Scope
from agex.ports.memory import MemoryFilter

from ..conftest import unique
from .conftest import DIMS, T0, at, entity, record, relation, source, vec

_SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter, as another instance is: no inherited pool


@pytest.fixture
def vectors(postgres_pool: ConnectionPool) -> PostgresVectorStore:
    return PostgresVectorStore(postgres_pool, schema=unique("m_"), dimensions=DIMS)


def _scalar(pool: ConnectionPool, schema: str, query: str, *params: Any) -> Any:
    with pool.connection() as conn:
        row = conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchone()
    return row[0] if row else None


def test_scores_and_the_cut_are_exact_beyond_single_precision(vectors: PostgresVectorStore, tenant: str) -> None:
    """In single precision, as pgvector computes, ``a-farther`` is nearer the query than ``z-nearer`` (by 2.5e-8):
    the store still returns the nearer one, with its exact score."""
    scope = Scope(tenant=tenant)
    t = 0.22635290579881487
    nearer, farther = vec(1, t), vec(3, 3 * t * (1 + 1e-9))
    vectors.upsert([record(scope, "a-farther", farther), record(scope, "z-nearer", nearer)])
    [best] = vectors.search([scope], vec(1), k=1)
    assert best.record.id == "z-nearer"
    assert best.score == 1 / (1 + t * t) ** 0.5
    assert vectors.get(tenant, "a-farther") == record(scope, "a-farther", farther)  # the doubles as written


def test_a_schema_holds_one_vector_size(vectors: PostgresVectorStore) -> None:
    again = PostgresVectorStore(vectors.pool, schema=vectors.schema, dimensions=DIMS)
    assert again.dimensions == DIMS
    with pytest.raises(ConfigurationError, match="vectors of 8 dimensions"):
        PostgresVectorStore(vectors.pool, schema=vectors.schema, dimensions=DIMS * 2)
    with pytest.raises(ConfigurationError, match="no memory table"):
        PostgresVectorStore(vectors.pool, schema=unique("m_"), dimensions=DIMS, create_schema=False)
    assert _scalar(vectors.pool, vectors.schema, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                   "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'", f"{vectors.schema}.memories") \
        == "vector(8)"


def test_stores_created_at_once_in_one_schema_wait_for_each_other(postgres_pool: ConnectionPool) -> None:
    """Vector, graph and checkpoint stores starting together on a new schema: each creates its tables once."""
    schema = unique("m_")
    makers = [lambda: PostgresVectorStore(postgres_pool, schema=schema, dimensions=DIMS, hnsw=True),
              lambda: PostgresVectorStore(postgres_pool, schema=schema, dimensions=DIMS),
              lambda: PostgresGraphStore(postgres_pool, schema=schema),
              lambda: PostgresCheckpointStore(postgres_pool, schema=schema)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(makers))

    def make(maker: Any) -> None:
        try:
            start.wait()
            maker()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=make, args=(m,)) for m in makers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _scalar(postgres_pool, schema, "SELECT array_agg(part ORDER BY part) FROM {s}.memory_schema_version") \
        == ["graph", "memories"]


# --- the HNSW option ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hnsw_schema(postgres_pool: ConnectionPool) -> str:
    """Around the direction ``vec(1)``: 1500 notes of an agent's scope, three of them nearest; and 300 facts of a
    user's, all farther than every note, two of them clearly nearer than the rest. Through the index, the user's
    facts are found only by scanning past the agent's 1500 notes."""
    schema = unique("h_")
    store = PostgresVectorStore(postgres_pool, schema=schema, dimensions=DIMS, hnsw=True)
    notes, facts = Scope(tenant="t", agent="support"), Scope(tenant="t", user="alice")
    made = [record(notes, f"c{i:04d}", vec(1, 0.1 + i / 10_000, (i % 7) / 100), kind=MemoryKind.note)
            for i in range(1497)]
    made += [record(notes, f"c-near{i}", vec(1, i / 100), kind=MemoryKind.note) for i in (1, 2, 3)]
    made += [record(facts, f"u{i:03d}", vec(0, 1, i / 100)) for i in range(298)]
    made += [record(facts, "u-near", vec(0.5, 1)), record(facts, "u-nearer", vec(1, 1))]
    for i in range(0, len(made), 100):
        store.upsert(made[i:i + 100])
    with postgres_pool.connection() as conn:
        conn.execute(sql.SQL("ANALYZE {}.memories").format(sql.Identifier(schema)))  # as autovacuum would
    return schema


@pytest.fixture(scope="module")
def short_scans(postgres_dsn: str) -> Iterator[ConnectionPool]:
    """Connections whose iterative index scans give up after 100 tuples."""
    pool = ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True,
                          kwargs={"options": "-c hnsw.max_scan_tuples=100"})
    yield pool
    pool.close()


NOTES, FACTS = Scope(tenant="t", agent="support"), Scope(tenant="t", user="alice")
ONLY_FACTS = MemoryFilter(kind=MemoryKind.fact)


def test_the_hnsw_option_creates_the_index_and_scans_it_iteratively(postgres_pool: ConnectionPool,
                                                                     hnsw_schema: str) -> None:
    definition = _scalar(postgres_pool, hnsw_schema, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
                         "AND indexname = 'memories_hnsw'", hnsw_schema)
    assert "USING hnsw (embedding vector_cosine_ops)" in definition
    store = PostgresVectorStore(postgres_pool, schema=hnsw_schema, dimensions=DIMS, hnsw=True, ef_search=20)
    assert [r.record.id for r in store.search([NOTES], vec(1), k=3)] == ["c-near1", "c-near2", "c-near3"]
    # the user's two nearest facts lie past 1500 nearer notes, which a scan of ef_search candidates would never
    # reach without iterative scans
    found = store.search([NOTES, FACTS], vec(1), k=2, filters=ONLY_FACTS)
    assert [r.record.id for r in found] == ["u-nearer", "u-near"]
    assert found[0].score == pytest.approx(2**-0.5, abs=1e-15)  # scored exactly


def test_hnsw_is_approximate_and_exact_stores_ignore_the_index(short_scans: ConnectionPool, hnsw_schema: str) -> None:
    approximate = PostgresVectorStore(short_scans, schema=hnsw_schema, dimensions=DIMS, hnsw=True)
    assert len(approximate.search([NOTES, FACTS], vec(1), k=2, filters=ONLY_FACTS)) < 2  # gave up after 100 tuples
    exact = PostgresVectorStore(short_scans, schema=hnsw_schema, dimensions=DIMS)
    assert [r.record.id for r in exact.search([NOTES, FACTS], vec(1), k=2, filters=ONLY_FACTS)] == [
        "u-nearer", "u-near"]


# --- concurrency -------------------------------------------------------------------------------------------------


def _upsert_rounds(dsn: str, schema: str, tenant: str, worker: int, rounds: int, start: Any) -> None:
    store = PostgresVectorStore(dsn, schema=schema, dimensions=DIMS, create_schema=False, max_connections=1)
    store.pool.wait()
    scope = Scope(tenant=tenant, user="alice")
    start.wait()
    for i in range(rounds):
        batch = [record(scope, f"m{j:03d}", vec(1, j), text=f"worker {worker} round {i}") for j in range(60)]
        store.upsert(batch[::-1] if worker else batch)
    store.close()


def test_two_processes_upserting_the_same_ids_keep_every_supersession(postgres_dsn: str,
                                                                      vectors: PostgresVectorStore) -> None:
    tenant = unique("tenant-")
    scope = Scope(tenant=tenant, user="alice")
    vectors.upsert([record(scope, f"m{j:03d}", vec(1, j)) for j in range(30)])  # half stored, half new
    for j in range(10):
        vectors.supersede(tenant, f"m{j:03d}", by="newer", at=at(1))
    start = _SPAWN.Barrier(2)
    workers = [_SPAWN.Process(target=_upsert_rounds, args=(postgres_dsn, vectors.schema, tenant, w, 8, start))
               for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]
    stored = vectors.list_records(scope, page_size=100).records
    assert len(stored) == 60
    assert len({r.text for r in stored}) == 1  # a batch is written whole: the last one committed holds every id
    assert stored[0].text.endswith("round 7")
    assert sorted(r.id for r in stored if r.status is MemoryStatus.superseded) == [f"m{j:03d}" for j in range(10)]
    assert len(vectors.search([scope], vec(1), k=100)) == 50


def test_a_search_sees_a_users_memories_all_or_none_while_they_are_erased(vectors: PostgresVectorStore,
                                                                          tenant: str) -> None:
    alice, shared = Scope(tenant=tenant, user="alice"), Scope(tenant=tenant, agent="support")
    vectors.upsert([record(alice, f"a{i:03d}", vec(1, i)) for i in range(100)])
    vectors.upsert([record(shared, f"learned{i:02d}", vec(1, i), source=source("alice")) for i in range(50)]
                   + [record(shared, f"kept{i:02d}", vec(1, i)) for i in range(20)])
    seen: list[int] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set() or not seen:
            found = vectors.search([alice, shared], vec(1), k=1000)
            seen.append(sum(1 for r in found if not r.record.id.startswith("kept")))

    searcher = threading.Thread(target=search)
    searcher.start()
    while not seen:
        done.wait(0.01)
    try:
        assert vectors.forget_user(tenant, "alice") == 150
    finally:
        done.set()
        searcher.join()
    assert set(seen) <= {0, 150} and seen[0] == 150
    assert [r.record.id for r in vectors.search([alice, shared], vec(1), k=1000)] == [f"kept{i:02d}" for i in range(20)]


def test_relations_added_during_an_erasure_never_outlive_their_entities(postgres_pool: ConnectionPool,
                                                                        tenant: str) -> None:
    graph = PostgresGraphStore(postgres_pool, schema=unique("g_"))
    shared, alice = Scope(tenant=tenant, agent="support"), Scope(tenant=tenant, user="alice")
    graph.upsert_entity(entity(shared, "acme"))
    graph.upsert_entity(entity(alice, "alice"))
    outcomes: list[str] = []

    def add() -> None:
        for i in range(200):
            try:
                graph.add_relation(relation(shared, f"r{i:03d}", "acme", "employs", "alice"))
                outcomes.append("added")
            except NotFound:
                outcomes.append("refused")

    adder = threading.Thread(target=add)
    adder.start()
    while not outcomes:
        adder.join(0.005)
    erased = graph.forget_user(tenant, "alice")
    adder.join()
    added = outcomes.count("added")
    assert outcomes == ["added"] * added + ["refused"] * (200 - added)  # none is added once the entity is gone
    assert erased == 1 + added  # alice, and every relation added before
    assert _scalar(postgres_pool, graph.schema, "SELECT count(*) FROM {s}.memory_relations r WHERE NOT EXISTS ("
                   "SELECT 1 FROM {s}.memory_entities e WHERE e.tenant = r.tenant AND e.entity_id = r.object)") == 0
    assert graph.neighbours([shared], "acme").relations == []


# --- retention ---------------------------------------------------------------------------------------------------


def test_expired_memories_entities_and_relations_are_deleted_by_the_job(vectors: PostgresVectorStore,
                                                                       tenant: str) -> None:
    graph = PostgresGraphStore(vectors.pool, schema=vectors.schema)  # both stores may share a schema
    scope = Scope(tenant=tenant)
    soon, later = at(60), at(60 * 24 * 30)
    vectors.upsert([record(scope, "old", vec(1), expire_at=soon), record(scope, "young", vec(1), expire_at=later),
                    record(scope, "kept", vec(1))])
    for name, expire in (("a", soon), ("b", later), ("c", None)):
        graph.upsert_entity(entity(scope, name, expire_at=expire))
    graph.add_relation(relation(scope, "ab", "a", "knows", "b", expire_at=soon))
    graph.add_relation(relation(scope, "bc", "b", "knows", "c"))
    now = T0 + timedelta(days=1)
    assert vectors.delete_expired(now, batch=1) == {"memories": 1}
    assert graph.delete_expired(now) == {"memory_entities": 1, "memory_relations": 1}
    assert [r.id for r in vectors.list_records(scope).records] == ["young", "kept"]
    assert graph.get_entity(tenant, "a") is None and graph.get_entity(tenant, "b") is not None
    assert [r.id for r in graph.neighbours([scope], "b").relations] == ["bc"]
    assert vectors.delete_expired(now) == {"memories": 0}

