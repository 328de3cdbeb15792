"""In-memory vector and graph stores: exact search by cosine similarity over every record of the scopes named
(pure Python: the tests' and local development's sizes need no index), one lock standing in for Firestore's
transactions. They apply the rules of ``agex.ports.memory_rules`` as the Firestore stores do, so code that passes
its unit tests here behaves the same in the cloud. Nothing expires: ``expire_at`` is kept, not acted on."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from agex.core.errors import NotFound
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

__all__ = ["InMemoryGraphStore", "InMemoryVectorStore"]


class InMemoryVectorStore(VectorStore):
    def __init__(self, dimensions: int, *, embedding_model: str | None = None) -> None:
        self.dimensions = rules.check_dimensions(dimensions)
        self.embedding_model = embedding_model
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], MemoryRecord] = {}

    def upsert(self, records: Sequence[MemoryRecord]) -> None:
        rules.check_batch(records, self.dimensions, self.embedding_model)
        with self._lock:
            for record in records:
                key = (record.scope.tenant, record.id)
                self._records[key] = rules.kept_on_upsert(self._records.get(key), record).model_copy(deep=True)

    def get(self, tenant: str, record_id: str) -> MemoryRecord | None:
        with self._lock:
            found = self._records.get((tenant, record_id))
            return found.model_copy(deep=True) if found else None

    def search(self, scopes: Sequence[Scope], vector: Sequence[float], *, k: int = 10,
               filters: MemoryFilter | None = None, include_superseded: bool = False,
               at: datetime | None = None) -> list[ScoredRecord]:
        tenant = rules.check_search(scopes, vector, k, self.dimensions, include_superseded, at)
        readable = set(scopes)
        with self._lock:
            candidates = [r.model_copy(deep=True) for (t, _), r in self._records.items()
                          if t == tenant and r.scope in readable and rules.in_time(r, include_superseded, at)
                          and rules.matches(r, filters)]
        return rules.best((ScoredRecord(record=r, score=rules.cosine(vector, r.vector)) for r in candidates), k)

    def about(self, scope: Scope, key: str, *, limit: int = ABOUT_LIMIT) -> list[MemoryRecord]:
        with self._lock:
            found = [r.model_copy(deep=True) for (t, _), r in self._records.items()
                     if t == scope.tenant and r.scope == scope and r.current and r.metadata.get("key") == key]
        return rules.newest_first(found)[:limit]

    def supersede(self, tenant: str, record_id: str, *, by: str, at: datetime) -> MemoryRecord:
        with self._lock:
            stored = self._records.get((tenant, record_id))
            new = rules.superseded(stored, record_id, by, at)
            if new is not None:
                self._records[(tenant, record_id)] = new
            result = new or stored
            assert result is not None  # superseded() raised NotFound otherwise
            return result.model_copy(deep=True)

    def delete(self, scope: Scope, ids: Sequence[str]) -> int:
        with self._lock:
            gone = [i for i in set(ids) if (r := self._records.get((scope.tenant, i))) is not None and r.scope == scope]
            for record_id in gone:
                del self._records[(scope.tenant, record_id)]
            return len(gone)

    def forget_user(self, tenant: str, user: str) -> int:
        with self._lock:
            gone = [key for key, r in self._records.items() if key[0] == tenant and user in rules.users_of(r)]
            for key in gone:
                del self._records[key]
            return len(gone)

    def list_records(self, scope: Scope, *, page_size: int = 50, cursor: str | None = None) -> MemoryPage:
        rules.check_page_size(page_size)
        after = rules.decode_cursor(cursor) if cursor else None
        with self._lock:
            mine = [r.model_copy(deep=True) for r in self._records.values() if r.scope == scope]
        ordered = [r for r in rules.newest_first(mine) if rules.after_cursor(r, after)]
        page = ordered[:page_size]
        more = len(ordered) > page_size
        return MemoryPage(records=page, next_cursor=rules.encode_cursor(page[-1]) if more else None)


class InMemoryGraphStore(GraphStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entities: dict[tuple[str, str], Entity] = {}
        self._relations: dict[tuple[str, str], Relation] = {}

    def upsert_entity(self, entity: Entity) -> Entity:
        rules.check_entity(entity)
        with self._lock:
            self._entities[(entity.scope.tenant, entity.id)] = entity.model_copy(deep=True)
        return entity

    def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        with self._lock:
            found = self._entities.get((tenant, entity_id))
            return found.model_copy(deep=True) if found else None

    def add_relation(self, relation: Relation) -> Relation:
        rules.check_relation(relation)
        tenant = relation.scope.tenant
        with self._lock:
            for end in (relation.subject, relation.object):
                if (tenant, end) not in self._entities:
                    raise NotFound(f"relation {relation.id}: no entity {end!r} in tenant {tenant}")
            stored = rules.kept_on_add(self._relations.get((tenant, relation.id)), relation)
            self._relations[(tenant, relation.id)] = stored.model_copy(deep=True)
            return stored.model_copy(deep=True)

    def close_relation(self, tenant: str, relation_id: str, at: datetime) -> Relation:
        with self._lock:
            stored = self._relations.get((tenant, relation_id))
            new = rules.closed(stored, relation_id, at)
            if new is not None:
                self._relations[(tenant, relation_id)] = new
            result = new or stored
            assert result is not None  # closed() raised NotFound otherwise
            return result.model_copy(deep=True)

    def neighbours(self, scopes: Sequence[Scope], entity_id: str, *, depth: int = 1, at: datetime | None = None,
                   predicates: Sequence[str] | None = None) -> Neighbourhood:
        tenant = rules.one_tenant(scopes)
        rules.check_depth(depth)
        readable = set(scopes)
        with self._lock:
            start = rules.require_readable(self._entities.get((tenant, entity_id)), entity_id, readable)

            def touching(ids: set[str]) -> list[Relation]:
                return [r for (t, _), r in self._relations.items() if t == tenant and (r.subject in ids or r.object in ids)]

            def entities(ids: set[str]) -> list[Entity]:
                return [e for i in ids if (e := self._entities.get((tenant, i))) is not None]

            found = rules.walk(start, readable, depth, at, predicates, touching, entities)
        return found.model_copy(deep=True)

    def forget_user(self, tenant: str, user: str) -> int:
        with self._lock:
            entities = [key for key, e in self._entities.items() if key[0] == tenant and user in rules.users_of(e)]
            gone_ids = {key[1] for key in entities}
            relations = [key for key, r in self._relations.items() if key[0] == tenant and (
                user in rules.users_of(r) or r.subject in gone_ids or r.object in gone_ids)]
            for key in entities:
                del self._entities[key]
            for key in relations:
                del self._relations[key]
            return len(entities) + len(relations)
