"""Memory ports: the vector store (memories recalled by similarity) and the graph store (entities and the relations
between them), over the models of ``agex.core.memory``. The rules every backend applies the same way (sizes,
dimensions, ranking, validity, supersession, the graph walk) are in ``agex.ports.memory_rules``; the conformance
suite ``tests/conformance/memory`` holds every backend to them.

What every backend guarantees:

- Isolation: a call names one tenant (every scope of a search belongs to it, else ``ValueError``) and reads and
  writes nothing of another; within the tenant a search reads only the scopes it names, exactly (a user's scope
  is not "inside" the tenant's: name both to read both).
- Idempotence: records, entities and relations are stored by id; storing the same one again changes nothing, so a
  redelivered step may write again. A retried write never undoes a supersession or a closed relation.
- Similarity is cosine, as a score in [-1, 1], best first, equal scores by id; ``k`` at most 1000. (Which of
  records with equal scores make the cut at the k-th place is the backend's choice.)
- Dimensions: a store holds vectors of one size (``dimensions``), and of one embedding model when it is given one
  (``embedding_model``); a record or a query of another size, or a record of another model, raises
  ``ConfigurationError`` (the embedder and the store disagree). A record, entity or relation over
  ``MAX_RECORD_BYTES`` raises ``DocumentTooLarge``; nothing is written.
- Erasure: ``forget_user`` deletes everything stored about a user: every record, entity and relation in a scope of
  that user (with any agent) or learned from that user's conversations (``source.user``) in a shared scope, and
  every relation touching an entity it deleted.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from agex.core.memory import Entity, MemoryKind, MemoryRecord, MemoryStatus, Relation, Scalar, Scope


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryFilter(_Shape):
    """Equality filters of a search; every one given must hold."""

    kind: MemoryKind | None = None
    status: MemoryStatus | None = None
    """``active`` leaves out flagged records (recall should); None keeps both, and superseded ones when the search
    includes them."""
    embedding_model: str | None = None
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    """Each key equal to its value: numbers compare by value (1 == 1.0), a boolean only equals a boolean."""

    @property
    def empty(self) -> bool:
        return self.kind is None and self.status is None and self.embedding_model is None and not self.metadata


class ScoredRecord(_Shape):
    record: MemoryRecord
    score: float
    """Cosine similarity to the query, in [-1, 1]: 1 is the same direction."""


class MemoryPage(_Shape):
    records: list[MemoryRecord]
    next_cursor: str | None = None
    """Pass it back for the next page; None on the last one."""


class Neighbourhood(_Shape):
    """Entities within reach of one, and the relations that reach them, as the walk found them."""

    entities: list[Entity]
    """The starting entity first, then the others by id."""
    relations: list[Relation]
    """By id."""


ABOUT_LIMIT = 100
"""At most this many current records about one thing: one, usually; a few while conflicts wait for review."""


class VectorStore(abc.ABC):
    """Memories of one embedding size, searched by cosine similarity within the scopes a caller may read."""

    dimensions: int
    """The one size of vector the store holds."""
    embedding_model: str | None = None
    """The one embedding model (``Embedder.name``) whose vectors the store holds; None to take records of any model
    of the right size (a search then filters on ``MemoryFilter.embedding_model``)."""

    @abc.abstractmethod
    def upsert(self, records: Sequence[MemoryRecord]) -> None:
        """Store each record by id, replacing the one stored (at most ``MAX_BATCH`` at once, all or none), except that
        a stored supersession is kept: a retried write of an old version never makes a superseded record current."""

    @abc.abstractmethod
    def get(self, tenant: str, record_id: str) -> MemoryRecord | None: ...

    @abc.abstractmethod
    def search(self, scopes: Sequence[Scope], vector: Sequence[float], *, k: int = 10,
               filters: MemoryFilter | None = None, include_superseded: bool = False,
               at: datetime | None = None) -> list[ScoredRecord]:
        """The ``k`` records of ``scopes`` nearest to ``vector``, best first, among those that pass ``filters`` and
        were valid: current ones (``valid_to`` None) by default; with ``at``, those valid at that instant
        (``valid_from <= at < valid_to``), superseded since or not; with ``include_superseded``, every one.
        ``at`` and ``include_superseded`` together are a ``ValueError``."""

    @abc.abstractmethod
    def about(self, scope: Scope, key: str, *, limit: int = ABOUT_LIMIT) -> list[MemoryRecord]:
        """The current records of exactly ``scope`` whose ``metadata["key"]`` is ``key`` (what a fact is about:
        ``agex.core.memory.Fact.key``), flagged ones included, newest first (``created_at``, then id), at most
        ``limit``: what a new fact about that thing may repeat or contradict. An equality lookup, not a search: it
        reads those records only, however large the scope."""

    @abc.abstractmethod
    def supersede(self, tenant: str, record_id: str, *, by: str, at: datetime) -> MemoryRecord:
        """End the record's validity at ``at`` and mark it replaced by ``by``; the record as stored now. Again with
        the same ``by``: nothing changes. ``NotFound`` if there is no such record; ``Conflict`` if it was
        superseded by another one or its validity already ended; ``ValueError`` if ``at`` is before it began."""

    @abc.abstractmethod
    def delete(self, scope: Scope, ids: Sequence[str]) -> int:
        """Delete those of ``ids`` stored in ``scope`` (an id in another scope is left alone); how many were."""

    @abc.abstractmethod
    def forget_user(self, tenant: str, user: str) -> int:
        """Delete every record of ``user``'s scopes, with every agent, and every record learned from their
        conversations in a shared scope; how many were deleted."""

    def delete_expired(self, now: datetime, *, batch: int = 1000) -> dict[str, int]:
        """Delete what passed its ``expire_at``, for a store without TTL policies (Postgres); the rows deleted per
        table. Firestore's TTL policies do it themselves (the default: nothing to do)."""
        return {}

    @abc.abstractmethod
    def list_records(self, scope: Scope, *, page_size: int = 50, cursor: str | None = None) -> MemoryPage:
        """Every record of exactly ``scope``, superseded and flagged ones included, newest first (by
        ``created_at``, then id): what is remembered, to show its user. ``page_size`` at most ``MAX_PAGE``."""


class GraphStore(abc.ABC):
    """Entities and the relations between them, each relation true over an interval."""

    @abc.abstractmethod
    def upsert_entity(self, entity: Entity) -> Entity:
        """Store the entity by id, replacing the one stored."""

    @abc.abstractmethod
    def get_entity(self, tenant: str, entity_id: str) -> Entity | None: ...

    @abc.abstractmethod
    def add_relation(self, relation: Relation) -> Relation:
        """Store the relation by id; the relation as stored. Its subject and object must be entities of its tenant
        (``NotFound`` otherwise). Again by the same id: replaced, except that a closed relation stays closed."""

    @abc.abstractmethod
    def close_relation(self, tenant: str, relation_id: str, at: datetime) -> Relation:
        """End the relation's validity at ``at``; the relation as stored now. Closing a closed relation changes
        nothing (the first close stands). ``NotFound``; ``ValueError`` if ``at`` is before it began."""

    @abc.abstractmethod
    def neighbours(self, scopes: Sequence[Scope], entity_id: str, *, depth: int = 1, at: datetime | None = None,
                   predicates: Sequence[str] | None = None) -> Neighbourhood:
        """The entities up to ``depth`` (1 or 2) relations away from the entity, in either direction, through
        relations current at ``at`` (None: not closed) whose predicate is one of ``predicates`` (None: any). Only
        relations and entities of ``scopes`` are seen; a relation to an entity outside them is left out.
        ``NotFound`` if the entity is not in ``scopes``."""

    def delete_expired(self, now: datetime, *, batch: int = 1000) -> dict[str, int]:
        """As ``VectorStore.delete_expired``."""
        return {}

    @abc.abstractmethod
    def forget_user(self, tenant: str, user: str) -> int:
        """Delete every entity and relation of ``user``'s scopes or learned from their conversations, and every
        relation touching an entity deleted; how many documents were deleted."""
