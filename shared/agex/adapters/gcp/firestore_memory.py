"""Firestore adapters of the memory ports: records searched with Firestore's native vector search, and the graph as
documents. Beside the tenant's runs, with the prefix scheme of the other Firestore adapters:

    {prefix}tenants/{tenant}/{prefix}memories/{record_id}          a MemoryRecord; the vector in ``embedding``
    {prefix}tenants/{tenant}/{prefix}memory_entities/{entity_id}
    {prefix}tenants/{tenant}/{prefix}memory_relations/{relation_id}

Beside each model's fields a document carries what queries need: ``agent``, ``user`` and ``scope_key`` (the scope
as one string, ``Scope.key``), ``current`` (``valid_to`` is null) on records, and ``users`` (who the document is
about: its scope's user and the user it was learned from) for erasure. Datetimes are Timestamps, so the TTL policy
on ``expire_at`` applies; ``embedding`` is a Firestore ``Vector``.

Search: one ``find_nearest`` (cosine) per scope named, with the equality pre-filters ``scope_key ==`` and, for a
search of current records, ``current == true``; the per-scope results are merged (Firestore's flat index is exact,
so the best k of the union are the best k of each scope's best k). Other conditions (kind, status, embedding model,
metadata, and validity at ``at=``) are applied after, on an over-fetch: ``max(4k, 50)`` nearest, then, if fewer than
k passed and more were there, the most Firestore returns (1000). A condition more selective than that can miss
records further than the 1000 nearest of a scope (docs/memory.md). Filters are not pushed down because each
combination of pre-filters needs its own composite vector index: two indexes serve every search this way.

On the Cloud SDK emulator (checked by the conformance suite): ``find_nearest`` with COSINE, ``limit`` and
``distance_result_field`` works, with equality pre-filters on one or more fields (null included), ``in``, range
filters and ``OR`` as well; it needs no index, and it refuses a ``limit`` over 1000 (``InvalidArgument``) as
Firestore does. Documents whose vector has another size are silently left out of a search there (as in Firestore,
where such a vector is not in the index): the store refuses them at the write instead.

Indexes (Terraform; the exact blocks are in docs/memory.md): vector indexes on ``memories`` (scope_key, current,
embedding) and (scope_key, embedding) with the store's dimension; (scope_key ASC, created_at DESC, id DESC) for
``list_records``; (scope_key, current, metadata.key) for ``about``; TTL on ``expire_at`` of the three collections;
``text``, ``source``, ``metadata`` and ``embedding`` exempt from single-field indexing. Everything else is single-field equality, served by the automatic indexes.

Writes that read first (upsert, supersede, add and close a relation) run in read-write transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agex.adapters.gcp.firestore_calls import calling, native
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
from agex.ports.rules import check_collection_prefix, valid_document_id

if TYPE_CHECKING:
    from google.cloud import firestore

T = TypeVar("T")

__all__ = ["FirestoreGraphStore", "FirestoreVectorStore"]

_DISTANCE = "vector_distance"
_IN_LIMIT = 30
"""Values of one ``in`` filter, at most."""
_WRITES = 400
"""Deletes per batch (Firestore allows 500 writes per commit)."""
_MIN_OVERFETCH = 50
_HELPER_FIELDS = ("tenant", "agent", "user", "scope_key", "users", "current", _DISTANCE)


class _Tenants:
    """Collections of one kind under each tenant."""

    def __init__(self, client: firestore.Client, prefix: str, name: str) -> None:
        check_collection_prefix(prefix)
        self._client = client
        self._tenants = f"{prefix}tenants"
        self._name = f"{prefix}{name}"

    def collection(self, tenant: str) -> firestore.CollectionReference:
        if not valid_document_id(tenant):
            raise ValueError(f"invalid tenant {tenant!r}")
        collection: firestore.CollectionReference = (
            self._client.collection(self._tenants).document(tenant).collection(self._name))
        return collection

    def ref(self, tenant: str, item_id: str) -> firestore.DocumentReference:
        return self.collection(tenant).document(item_id)


class FirestoreVectorStore(VectorStore):
    """``dimensions``: the size of every vector stored (the vector indexes are declared with it);
    ``embedding_model``: the one model whose vectors it takes (None: any). ``overfetch``: how many times k to ask
    Firestore for when conditions are applied after the search."""

    def __init__(self, client: firestore.Client, *, dimensions: int, embedding_model: str | None = None,
                 prefix: str = "", overfetch: int = 4) -> None:
        self.dimensions = rules.check_dimensions(dimensions)
        self.embedding_model = embedding_model
        self._client = client
        self._memories = _Tenants(client, prefix, "memories")
        self._overfetch = max(1, overfetch)

    def upsert(self, records: Sequence[MemoryRecord]) -> None:
        rules.check_batch(records, self.dimensions, self.embedding_model)
        if not records:
            return
        refs = [self._memories.ref(r.scope.tenant, r.id) for r in records]

        def body(transaction: firestore.Transaction) -> None:
            stored = {snap.reference.path: snap for snap in transaction.get_all(refs)}
            for ref, record in zip(refs, records, strict=True):
                snap = stored.get(ref.path)
                old = _decode_record(snap.to_dict()) if snap is not None and snap.exists else None
                transaction.set(ref, _encode_record(rules.kept_on_upsert(old, record)))

        _transaction(self._client, f"storing {len(records)} memories", body)

    def get(self, tenant: str, record_id: str) -> MemoryRecord | None:
        if not (valid_document_id(tenant) and valid_document_id(record_id)):
            return None  # no record can have this name: upsert refuses it
        with calling(f"reading memory {record_id}"):
            snap = self._memories.ref(tenant, record_id).get()
        return _decode_record(snap.to_dict()) if snap.exists else None

    def search(self, scopes: Sequence[Scope], vector: Sequence[float], *, k: int = 10,
               filters: MemoryFilter | None = None, include_superseded: bool = False,
               at: datetime | None = None) -> list[ScoredRecord]:
        tenant = rules.check_search(scopes, vector, k, self.dimensions, include_superseded, at)
        found: list[ScoredRecord] = []
        for scope in dict.fromkeys(scopes):
            found += self._nearest(tenant, scope, list(vector), k, filters, include_superseded, at)
        return rules.best(found, k)

    def _nearest(self, tenant: str, scope: Scope, vector: list[float], k: int, filters: MemoryFilter | None,
                 include_superseded: bool, at: datetime | None) -> list[ScoredRecord]:
        from google.cloud.firestore_v1.base_query import FieldFilter
        from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
        from google.cloud.firestore_v1.vector import Vector

        query: Any = self._memories.collection(tenant).where(filter=FieldFilter("scope_key", "==", scope.key))
        if not include_superseded and at is None:
            query = query.where(filter=FieldFilter("current", "==", True))
        after = (filters is not None and not filters.empty) or at is not None
        limit = min(rules.MAX_K, max(k * self._overfetch, _MIN_OVERFETCH)) if after else k
        while True:
            nearest = query.find_nearest(vector_field="embedding", query_vector=Vector(vector), limit=limit,
                                         distance_measure=DistanceMeasure.COSINE, distance_result_field=_DISTANCE)
            with calling(f"searching memories of {scope}"):
                docs = [snap.to_dict() or {} for snap in nearest.stream()]
            kept = [ScoredRecord(record=r, score=1.0 - float(d[_DISTANCE]))
                    for d in docs if rules.in_time(r := _decode_record(d), include_superseded, at)
                    and rules.matches(r, filters)]
            if len(kept) >= k or len(docs) < limit or limit >= rules.MAX_K:
                return kept
            limit = rules.MAX_K  # too few passed the conditions applied here, and Firestore had more

    def about(self, scope: Scope, key: str, *, limit: int = ABOUT_LIMIT) -> list[MemoryRecord]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        # equalities only, served by the composite index (scope_key, current, metadata.key): ``metadata`` is exempt
        # from single-field indexing
        query = (self._memories.collection(scope.tenant).where(filter=FieldFilter("scope_key", "==", scope.key))
                 .where(filter=FieldFilter("current", "==", True)).where(filter=FieldFilter("metadata.key", "==", key))
                 .limit(limit))
        with calling(f"reading the memories of {scope} about {key}"):
            found = [_decode_record(snap.to_dict()) for snap in query.stream()]
        return rules.newest_first(found)

    def supersede(self, tenant: str, record_id: str, *, by: str, at: datetime) -> MemoryRecord:
        if not (valid_document_id(tenant) and valid_document_id(record_id)):
            raise NotFound(f"memory {record_id!r} not found")
        ref = self._memories.ref(tenant, record_id)

        def body(transaction: firestore.Transaction) -> MemoryRecord:
            snap = next(iter(transaction.get(ref)))
            stored = _decode_record(snap.to_dict()) if snap.exists else None
            new = rules.superseded(stored, record_id, by, at)
            if new is None:
                assert stored is not None
                return stored
            transaction.set(ref, _encode_record(new))
            return new

        return _transaction(self._client, f"superseding memory {record_id}", body)

    def delete(self, scope: Scope, ids: Sequence[str]) -> int:
        refs = [self._memories.ref(scope.tenant, i) for i in dict.fromkeys(ids) if valid_document_id(i)]
        if not refs:
            return 0
        with calling(f"reading memories to delete in {scope}"):
            mine = [snap.reference for snap in self._client.get_all(refs, field_paths=["scope_key"])
                    if snap.exists and snap.get("scope_key") == scope.key]
        _delete(self._client, mine, f"deleting memories in {scope}")
        return len(mine)

    def forget_user(self, tenant: str, user: str) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._memories.collection(tenant).where(filter=FieldFilter("users", "array_contains", user))
        return _delete_all(self._client, query, f"erasing the memories of a user of tenant {tenant}")

    def list_records(self, scope: Scope, *, page_size: int = 50, cursor: str | None = None) -> MemoryPage:
        from google.cloud.firestore_v1.base_query import FieldFilter

        rules.check_page_size(page_size)
        query: Any = (self._memories.collection(scope.tenant)
                      .where(filter=FieldFilter("scope_key", "==", scope.key))
                      .order_by("created_at", direction="DESCENDING").order_by("id", direction="DESCENDING"))
        if cursor:
            created_at, record_id = rules.decode_cursor(cursor)
            query = query.start_after({"created_at": created_at, "id": record_id})
        with calling(f"listing memories of {scope}"):
            records = [_decode_record(snap.to_dict()) for snap in query.limit(page_size + 1).stream()]
        page = records[:page_size]
        more = len(records) > page_size
        return MemoryPage(records=page, next_cursor=rules.encode_cursor(page[-1]) if more else None)


class FirestoreGraphStore(GraphStore):
    def __init__(self, client: firestore.Client, *, prefix: str = "") -> None:
        self._client = client
        self._entities = _Tenants(client, prefix, "memory_entities")
        self._relations = _Tenants(client, prefix, "memory_relations")

    def upsert_entity(self, entity: Entity) -> Entity:
        rules.check_entity(entity)
        with calling(f"storing entity {entity.id}"):
            self._entities.ref(entity.scope.tenant, entity.id).set(_encode(entity, rules.users_of(entity)))
        return entity

    def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        if not (valid_document_id(tenant) and valid_document_id(entity_id)):
            return None
        with calling(f"reading entity {entity_id}"):
            snap = self._entities.ref(tenant, entity_id).get()
        return _decode(Entity, snap.to_dict()) if snap.exists else None

    def add_relation(self, relation: Relation) -> Relation:
        rules.check_relation(relation)
        tenant = relation.scope.tenant
        ref = self._relations.ref(tenant, relation.id)
        ends = [self._entities.ref(tenant, e) if valid_document_id(e) else None
                for e in (relation.subject, relation.object)]

        def body(transaction: firestore.Transaction) -> Relation:
            found: list[Entity] = []
            for end_ref, end in zip(ends, (relation.subject, relation.object), strict=True):
                snap = next(iter(transaction.get(end_ref))) if end_ref is not None else None
                if snap is None or not snap.exists:
                    raise NotFound(f"relation {relation.id}: no entity {end!r} in tenant {tenant}")
                found.append(_decode(Entity, snap.to_dict()))
            snap = next(iter(transaction.get(ref)))
            new = rules.kept_on_add(_decode(Relation, snap.to_dict()) if snap.exists else None, relation)
            transaction.set(ref, _encode(new, rules.users_of(new, *found)))
            return new

        return _transaction(self._client, f"adding relation {relation.id}", body)

    def close_relation(self, tenant: str, relation_id: str, at: datetime) -> Relation:
        if not (valid_document_id(tenant) and valid_document_id(relation_id)):
            raise NotFound(f"relation {relation_id!r} not found")
        ref = self._relations.ref(tenant, relation_id)

        def body(transaction: firestore.Transaction) -> Relation:
            snap = next(iter(transaction.get(ref)))
            data = snap.to_dict() if snap.exists else None
            stored = _decode(Relation, data) if data is not None else None
            new = rules.closed(stored, relation_id, at)
            if new is None:
                assert stored is not None
                return stored
            transaction.update(ref, {"valid_to": new.valid_to})  # its users stay as add_relation found them
            return new

        return _transaction(self._client, f"closing relation {relation_id}", body)

    def neighbours(self, scopes: Sequence[Scope], entity_id: str, *, depth: int = 1, at: datetime | None = None,
                   predicates: Sequence[str] | None = None) -> Neighbourhood:
        tenant = rules.one_tenant(scopes)
        rules.check_depth(depth)
        readable = set(scopes)
        start = rules.require_readable(self.get_entity(tenant, entity_id), entity_id, readable)
        return rules.walk(start, readable, depth, at, predicates,
                          lambda ids: self._touching(tenant, ids), lambda ids: self._get_entities(tenant, ids))

    def _touching(self, tenant: str, ids: Iterable[str]) -> list[Relation]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        found: dict[str, Relation] = {}
        for chunk in _chunks(sorted(ids), _IN_LIMIT):
            for end in ("subject", "object"):
                query = self._relations.collection(tenant).where(filter=FieldFilter(end, "in", chunk))
                with calling(f"reading relations of tenant {tenant}"):
                    for snap in query.stream():
                        found[snap.id] = _decode(Relation, snap.to_dict())
        return list(found.values())

    def _get_entities(self, tenant: str, ids: Iterable[str]) -> list[Entity]:
        refs = [self._entities.ref(tenant, i) for i in ids if valid_document_id(i)]
        with calling(f"reading entities of tenant {tenant}"):
            return [_decode(Entity, snap.to_dict()) for snap in self._client.get_all(refs) if snap.exists] if refs else []

    def forget_user(self, tenant: str, user: str) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter

        what = f"erasing the memory graph of a user of tenant {tenant}"
        about = FieldFilter("users", "array_contains", user)
        with calling(what):
            entities = [snap.reference for snap in self._entities.collection(tenant).where(filter=about)
                        .select(["id"]).stream()]
        gone = [ref.id for ref in entities]
        relations: dict[str, Any] = {}
        with calling(what):
            for snap in self._relations.collection(tenant).where(filter=about).select(["id"]).stream():
                relations[snap.id] = snap.reference
            for chunk in _chunks(gone, _IN_LIMIT):
                for end in ("subject", "object"):
                    query = self._relations.collection(tenant).where(filter=FieldFilter(end, "in", chunk))
                    for snap in query.select(["id"]).stream():
                        relations[snap.id] = snap.reference
        _delete(self._client, [*relations.values(), *entities], what)
        return len(entities) + len(relations)


# --- encoding ------------------------------------------------------------------------------------------------


def _scope_fields(scope: Scope) -> dict[str, Any]:
    return {"tenant": scope.tenant, "agent": scope.agent, "user": scope.user, "scope_key": scope.key}


def _encode_record(record: MemoryRecord) -> dict[str, Any]:
    from google.cloud.firestore_v1.vector import Vector

    doc = _encode(record, rules.users_of(record), exclude={"vector"})
    doc.update(kind=record.kind.value, status=record.status.value, current=record.current,
               embedding=Vector(record.vector))
    return doc


def _encode(item: MemoryRecord | Entity | Relation, users: list[str], exclude: set[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = item.model_dump(mode="python", exclude={"scope", *(exclude or ())})
    doc.update(_scope_fields(item.scope), users=users)
    return doc


def _decode_record(doc: dict[str, Any] | None) -> MemoryRecord:
    doc = dict(doc or {})
    vector = doc.pop("embedding", None)
    return _decode(MemoryRecord, {**doc, "vector": [float(x) for x in vector or ()]})


M = TypeVar("M", MemoryRecord, Entity, Relation)


def _decode(model: type[M], doc: dict[str, Any] | None) -> M:
    data: dict[str, Any] = native(dict(doc or {}))
    scope = Scope(tenant=data["tenant"], agent=data.get("agent"), user=data.get("user"))
    for name in _HELPER_FIELDS:
        data.pop(name, None)
    return model.model_validate({**data, "scope": scope})


# --- calls ---------------------------------------------------------------------------------------------------


def _transaction(client: firestore.Client, what: str, body: Callable[[firestore.Transaction], T]) -> T:
    """``body`` in a read-write transaction (the client retries it on contention), errors as agex errors."""
    from google.api_core import exceptions as gexc
    from google.cloud import firestore

    try:
        with calling(what):
            result: T = firestore.transactional(body)(client.transaction())
            return result
    except ValueError as e:
        if isinstance(e.__cause__, gexc.Aborted):  # the client's "failed to commit in N attempts"
            raise TransientError(f"{what}: too much contention, gave up") from e
        raise


def _delete(client: firestore.Client, refs: Sequence[Any], what: str) -> None:
    for chunk in _chunks(list(refs), _WRITES):
        batch = client.batch()
        for ref in chunk:
            batch.delete(ref)
        with calling(what):
            batch.commit()


def _delete_all(client: firestore.Client, query: Any, what: str) -> int:
    """Delete what ``query`` finds, a batch at a time until it finds nothing; how many were deleted."""
    deleted = 0
    while True:
        with calling(what):
            refs = [snap.reference for snap in query.select(["id"]).limit(_WRITES).stream()]
        if not refs:
            return deleted
        _delete(client, refs, what)
        deleted += len(refs)


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])
