"""The rules every memory store applies (``agex.ports.memory``), defined once so the backends cannot drift apart:
what a store accepts, how records are ranked and filtered, what a supersession or a closed relation does to a
later write, the page cursor, and the graph walk of ``neighbours``."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime

from agex.core.errors import ConfigurationError, Conflict, DocumentTooLarge, NotFound, RequestError
from agex.core.memory import (
    MAX_DIMENSIONS,
    Entity,
    MemoryRecord,
    MemoryStatus,
    Relation,
    Scalar,
    Scope,
    check_vector,
)
from agex.ports.memory import MemoryFilter, Neighbourhood, ScoredRecord
from agex.ports.metrics_rules import utc
from agex.ports.rules import document_size, valid_document_id

MAX_RECORD_BYTES = 40_000
"""Largest record, entity or relation a store takes, by Firestore's size formula: a memory is a sentence or a
paragraph, and a 2048-dimension vector is 16 KiB of it."""
MAX_K = 1000
"""Most records one search returns: Firestore's limit of a nearest-neighbour query."""
MAX_BATCH = 100
"""Most records one upsert writes (one transaction)."""
MAX_SEARCH_SCOPES = 8
MAX_PAGE = 500


# --- what a store accepts ------------------------------------------------------------------------------------


def check_dimensions(dimensions: int) -> int:
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ConfigurationError(f"a vector store holds 1 to {MAX_DIMENSIONS} dimensions, not {dimensions}")
    return dimensions


def record_path(tenant: str, collection: str, item_id: str) -> str:
    return f"tenants/{tenant}/{collection}/{item_id}"


def check_ids(what: str, tenant: str, item_id: str) -> None:
    for name, value in (("tenant", tenant), (f"{what} id", item_id)):
        if not valid_document_id(value):
            raise ValueError(f"invalid {name} {value!r}: ids must be non-empty, without '/', not '.', '..' or "
                             f"'__...__', and at most 1500 bytes")


def check_size(what: str, path: str, item: MemoryRecord | Entity | Relation) -> None:
    size = document_size(path, item.model_dump(mode="python"))
    if size > MAX_RECORD_BYTES:
        raise DocumentTooLarge(f"{what} {path} would be {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit of a "
                               f"memory; nothing was written. Keep memories short: store the fact, not the document "
                               f"it came from.", path=path, size=size)


def check_record(record: MemoryRecord, dimensions: int, embedding_model: str | None = None) -> None:
    """What a store checks of a record before writing anything of a batch."""
    check_ids("record", record.scope.tenant, record.id)
    if record.dimensions != dimensions:
        raise ConfigurationError(
            f"record {record.id} has a {record.dimensions}-dimension vector ({record.embedding_model}), and this store "
            f"holds {dimensions}: embed with the model the store was made for, or use a store of that size")
    if embedding_model is not None and record.embedding_model != embedding_model:
        raise ConfigurationError(
            f"record {record.id} was embedded by {record.embedding_model}, and this store holds vectors of "
            f"{embedding_model}: vectors of two models are not comparable, even of one size")
    check_size("memory", record_path(record.scope.tenant, "memories", record.id), record)


def check_batch(records: Sequence[MemoryRecord], dimensions: int, embedding_model: str | None = None) -> None:
    if len(records) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} records per upsert, not {len(records)}")
    seen: set[tuple[str, str]] = set()
    for record in records:
        check_record(record, dimensions, embedding_model)
        key = (record.scope.tenant, record.id)
        if key in seen:
            raise ValueError(f"record {record.id} appears twice in one upsert")
        seen.add(key)


def check_entity(entity: Entity) -> None:
    check_ids("entity", entity.scope.tenant, entity.id)
    check_size("entity", record_path(entity.scope.tenant, "memory_entities", entity.id), entity)


def check_relation(relation: Relation) -> None:
    check_ids("relation", relation.scope.tenant, relation.id)
    check_size("relation", record_path(relation.scope.tenant, "memory_relations", relation.id), relation)


def check_search(scopes: Sequence[Scope], vector: Sequence[float], k: int, dimensions: int,
                 include_superseded: bool, at: datetime | None) -> str:
    """The tenant a search reads, once its arguments are checked."""
    tenant = one_tenant(scopes)
    if len(vector) != dimensions:
        raise ConfigurationError(f"the query vector has {len(vector)} dimensions and this store holds {dimensions}: "
                                 f"embed the query with the model the memories were embedded with")
    check_vector(list(vector))
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be 1 to {MAX_K}, not {k}")
    if include_superseded and at is not None:
        raise ValueError("pass at= (what was valid then) or include_superseded=True (everything), not both")
    return tenant


def one_tenant(scopes: Sequence[Scope]) -> str:
    if not 1 <= len(scopes) <= MAX_SEARCH_SCOPES:
        raise ValueError(f"name 1 to {MAX_SEARCH_SCOPES} scopes, not {len(scopes)}")
    tenants = {s.tenant for s in scopes}
    if len(tenants) != 1:
        raise ValueError(f"the scopes name {len(tenants)} tenants: memory is read one tenant at a time")
    return scopes[0].tenant


def check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be 1 to {MAX_PAGE}, not {page_size}")


# --- ranking and filtering -----------------------------------------------------------------------------------


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b)))


def in_time(record: MemoryRecord, include_superseded: bool, at: datetime | None) -> bool:
    """Whether a search with these arguments may return the record, by its validity alone."""
    if include_superseded:
        return True
    return record.current if at is None else record.valid_at(utc(at))


def same_scalar(a: Scalar, b: Scalar) -> bool:
    """Equality as Firestore compares: numbers by value, a boolean only with a boolean, a string with a string."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def matches(record: MemoryRecord, filters: MemoryFilter | None) -> bool:
    if filters is None:
        return True
    if filters.kind is not None and record.kind != filters.kind:
        return False
    if filters.status is not None and record.status != filters.status:
        return False
    if filters.embedding_model is not None and record.embedding_model != filters.embedding_model:
        return False
    return all(k in record.metadata and same_scalar(record.metadata[k], v) for k, v in filters.metadata.items())


def best(scored: Iterable[ScoredRecord], k: int) -> list[ScoredRecord]:
    """The ``k`` best, by score then id (ties are broken the same way by every backend)."""
    return sorted(scored, key=lambda s: (-s.score, s.record.id))[:k]


# --- validity: supersession and closing ----------------------------------------------------------------------


def kept_on_upsert(stored: MemoryRecord | None, new: MemoryRecord) -> MemoryRecord:
    """What an upsert of ``new`` stores over ``stored``: ``new``, keeping a supersession already recorded, so that
    a redelivered write of a record superseded since does not bring it back."""
    if stored is None or stored.status is not MemoryStatus.superseded:
        return new
    return new.model_copy(update={"status": stored.status, "superseded_by": stored.superseded_by,
                                  "valid_to": stored.valid_to})


def superseded(stored: MemoryRecord | None, record_id: str, by: str, at: datetime) -> MemoryRecord | None:
    """The record after ``supersede(by, at)``; None when it is already so (nothing to write)."""
    if stored is None:
        raise NotFound(f"memory {record_id!r} not found")
    if stored.status is MemoryStatus.superseded:
        if stored.superseded_by == by:
            return None
        raise Conflict(f"memory {record_id} was superseded by {stored.superseded_by}, not {by}")
    if stored.valid_to is not None:
        raise Conflict(f"memory {record_id} stopped being valid at {stored.valid_to.isoformat()}: nothing to supersede")
    if by == record_id:
        raise ValueError(f"memory {record_id} cannot supersede itself")
    at = utc(at)
    if at < stored.valid_from:
        raise ValueError(f"memory {record_id} is valid from {stored.valid_from.isoformat()}, after {at.isoformat()}")
    return stored.model_copy(update={"status": MemoryStatus.superseded, "superseded_by": by, "valid_to": at})


def kept_on_add(stored: Relation | None, new: Relation) -> Relation:
    """A relation added again keeps the close already recorded."""
    if stored is None or stored.valid_to is None or new.valid_to is not None:
        return new
    return new.model_copy(update={"valid_to": stored.valid_to})


def closed(stored: Relation | None, relation_id: str, at: datetime) -> Relation | None:
    """The relation after ``close_relation(at)``; None when it is closed already (the first close stands)."""
    if stored is None:
        raise NotFound(f"relation {relation_id!r} not found")
    if stored.valid_to is not None:
        return None
    at = utc(at)
    if at < stored.valid_from:
        raise ValueError(f"relation {relation_id} is valid from {stored.valid_from.isoformat()}, after {at.isoformat()}")
    return stored.model_copy(update={"valid_to": at})


# --- erasure -------------------------------------------------------------------------------------------------


def users_of(*items: MemoryRecord | Entity | Relation) -> list[str]:
    """The users whose data an item is: its scope's user and the user it was learned from."""
    users: list[str] = []
    for item in items:
        for user in (item.scope.user, item.source.user):
            if user is not None and user not in users:
                users.append(user)
    return users


# --- paging --------------------------------------------------------------------------------------------------


def newest_first(records: Iterable[MemoryRecord]) -> list[MemoryRecord]:
    return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)


def encode_cursor(record: MemoryRecord) -> str:
    raw = json.dumps([utc(record.created_at).isoformat(), record.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of the last record of the page before."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, record_id = json.loads(raw)
        return utc(datetime.fromisoformat(created_at)), str(record_id)
    except (ValueError, TypeError) as e:
        raise RequestError(f"invalid cursor {cursor[:40]!r}: pass back next_cursor as it was given") from e


def after_cursor(record: MemoryRecord, cursor: tuple[datetime, str] | None) -> bool:
    return cursor is None or (utc(record.created_at), record.id) < cursor


# --- the graph walk ------------------------------------------------------------------------------------------


def check_depth(depth: int) -> None:
    if depth not in (1, 2):
        raise ValueError(f"depth must be 1 or 2, not {depth}")


def walk(start: Entity, scopes: Collection[Scope], depth: int, at: datetime | None, predicates: Sequence[str] | None,
         touching: Callable[[set[str]], Iterable[Relation]],
         entities: Callable[[set[str]], Iterable[Entity]]) -> Neighbourhood:
    """Breadth first from ``start``: ``touching(ids)`` gives the relations with a subject or object among ``ids``,
    ``entities(ids)`` the entities of those ids that exist (both within the tenant). A relation is followed when it
    is in ``scopes``, current at ``at``, of one of ``predicates``, and its other end is an entity of ``scopes``."""
    when = None if at is None else utc(at)
    found: dict[str, Entity] = {start.id: start}
    relations: dict[str, Relation] = {}
    frontier = {start.id}
    for _ in range(depth):
        candidates = [r for r in touching(frontier) if r.id not in relations and r.scope in scopes
                      and r.valid_at(when) and (predicates is None or r.predicate in predicates)]
        wanted = {end for r in candidates for end in (r.subject, r.object)} - found.keys()
        fresh = {e.id: e for e in entities(wanted) if e.scope in scopes} if wanted else {}
        found.update(fresh)
        for r in candidates:
            if r.subject in found and r.object in found:
                relations[r.id] = r
        frontier = set(fresh)
        if not frontier:
            break
    others = sorted((e for e in found.values() if e.id != start.id), key=lambda e: e.id)
    return Neighbourhood(entities=[start, *others], relations=sorted(relations.values(), key=lambda r: r.id))


def require_readable(entity: Entity | None, entity_id: str, scopes: Collection[Scope]) -> Entity:
    if entity is None or entity.scope not in scopes:
        raise NotFound(f"entity {entity_id!r} not found in the scopes given")
    return entity
