"""Fixtures of the memory conformance suites: every vector and graph store passes the same tests.

A backend is one entry of ``VECTOR_STORES`` or ``GRAPH_STORES``: a name (it shows in the test ids) and a function
that builds an empty store for one test, given the test's request (for the session fixtures it needs, such as the
Firestore emulator's client) and, for a vector store, the embedding model it is for (None: any). Each Firestore
store gets a unique collection prefix: its own empty database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agex.adapters.inmemory.memory import InMemoryGraphStore, InMemoryVectorStore
from agex.core.memory import Entity, MemoryRecord, MemorySource, Relation, Scope
from agex.ports.memory import GraphStore, VectorStore

from ..conftest import unique

DIMS = 8
"""Small hand-made vectors, so every similarity is known exactly."""
MODEL = "test-embedding"
T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def _firestore_vectors(request: pytest.FixtureRequest, embedding_model: str | None) -> VectorStore:
    from agex.adapters.gcp.firestore_memory import FirestoreVectorStore

    return FirestoreVectorStore(request.getfixturevalue("firestore_client"), dimensions=DIMS,
                                embedding_model=embedding_model, prefix=unique("m") + "_")


def _firestore_graph(request: pytest.FixtureRequest) -> GraphStore:
    from agex.adapters.gcp.firestore_memory import FirestoreGraphStore

    return FirestoreGraphStore(request.getfixturevalue("firestore_client"), prefix=unique("g") + "_")


def _postgres_vectors(request: pytest.FixtureRequest, embedding_model: str | None) -> VectorStore:
    from agex.adapters.postgres.memory import PostgresVectorStore

    return PostgresVectorStore(request.getfixturevalue("postgres_pool"), schema=unique("m_"), dimensions=DIMS,
                               embedding_model=embedding_model)


def _postgres_graph(request: pytest.FixtureRequest) -> GraphStore:
    from agex.adapters.postgres.memory import PostgresGraphStore

    return PostgresGraphStore(request.getfixturevalue("postgres_pool"), schema=unique("g_"))


VECTOR_STORES: dict[str, Callable[[pytest.FixtureRequest, str | None], VectorStore]] = {
    "memory": lambda request, embedding_model: InMemoryVectorStore(DIMS, embedding_model=embedding_model),
    "firestore": _firestore_vectors,
    "postgres": _postgres_vectors,
}
GRAPH_STORES: dict[str, Callable[[pytest.FixtureRequest], GraphStore]] = {
    "memory": lambda request: InMemoryGraphStore(),
    "firestore": _firestore_graph,
    "postgres": _postgres_graph,
}


@pytest.fixture(params=list(VECTOR_STORES))
def vector_store(request: pytest.FixtureRequest) -> VectorStore:
    """An empty vector store of ``DIMS`` dimensions, of any embedding model."""
    return VECTOR_STORES[request.param](request, None)


@pytest.fixture(params=list(VECTOR_STORES))
def model_vector_store(request: pytest.FixtureRequest) -> VectorStore:
    """An empty vector store of ``DIMS`` dimensions for the embedding model ``MODEL`` only."""
    return VECTOR_STORES[request.param](request, MODEL)


@pytest.fixture(params=list(GRAPH_STORES))
def graph_store(request: pytest.FixtureRequest) -> GraphStore:
    """An empty graph store."""
    return GRAPH_STORES[request.param](request)


@pytest.fixture
def tenant() -> str:
    return unique("tenant-")


def vec(*values: float) -> list[float]:
    """A ``DIMS``-dimension vector: the values given, then zeros."""
    return [float(v) for v in values] + [0.0] * (DIMS - len(values))


def source(user: str | None = None, *, trusted: bool = True) -> MemorySource:
    return MemorySource(run_id="run_1", thread_id="thr_1", events=[3, 4], user=user, trusted=trusted)


def record(scope: Scope, record_id: str, vector: list[float], **changes: Any) -> MemoryRecord:
    fields: dict[str, Any] = dict(
        id=record_id, scope=scope, text=f"memory {record_id}", vector=vector, source=source(scope.user),
        created_at=T0, valid_from=T0, embedding_model=MODEL, dimensions=len(vector),
    )
    fields.update(changes)
    return MemoryRecord(**fields)


def entity(scope: Scope, entity_id: str, **changes: Any) -> Entity:
    fields: dict[str, Any] = dict(id=entity_id, scope=scope, name=entity_id.title(), type="thing",
                                  source=source(scope.user), created_at=T0, updated_at=T0)
    fields.update(changes)
    return Entity(**fields)


def relation(scope: Scope, relation_id: str, subject: str, predicate: str, obj: str, **changes: Any) -> Relation:
    fields: dict[str, Any] = dict(id=relation_id, scope=scope, subject=subject, predicate=predicate, object=obj,
                                  source=source(scope.user), created_at=T0, valid_from=T0)
    fields.update(changes)
    return Relation(**fields)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
