"""Long-term memory as stored: records recalled by similarity, and a graph of entities and their relations.

Every memory belongs to a :class:`Scope` of one tenant: a user's memories with one agent, a user's across the
tenant's agents (``agent`` None), an agent's shared memories (``user`` None), or the tenant's (both None). A
search names the scopes it may read (:func:`visible_scopes` gives the usual four); nothing ever crosses tenants.

Facts change, so memories are never edited into something else: a fact that stops being true gets ``valid_to``
(and, when a newer fact replaces it, ``superseded_by`` and status ``superseded``), and a search can ask what was
current at any instant (``at=``). Each memory keeps where it was learned (:class:`MemorySource`), including
whether its source was trusted: a memory learned from a tool's output may carry a prompt injection, and recall
treats it accordingly.

The stores (``agex.ports.memory``) enforce the rules that need more than one record: dimensions, sizes,
supersession. The models here hold what one record alone must satisfy. docs/memory.md describes the whole.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_VERSION = 1
"""Bumped when the stored shape changes incompatibly; every record, entity and relation carries it."""

MAX_DIMENSIONS = 2048
"""Largest embedding a store takes: Firestore's limit for a vector index."""
MAX_METADATA_KEYS = 16
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
"""Metadata keys are identifiers: usable unquoted as Firestore field paths and as SQL JSON keys."""
MAX_METADATA_STRING = 256

Scalar = str | int | float | bool
"""A metadata value: what a filter compares for equality."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scope(_Doc):
    """Whose memories: ``agent`` and ``user`` None mean "every agent" and "no user" (shared)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1)
    agent: str | None = Field(default=None, min_length=1)
    user: str | None = Field(default=None, min_length=1)

    @property
    def key(self) -> str:
        """One string per scope within its tenant, for equality queries (``["agent","user"]`` as JSON)."""
        return _json_pair(self.agent, self.user)

    def __str__(self) -> str:
        return f"{self.tenant}/agent={self.agent or '*'}/user={self.user or '-'}"


def _json_pair(a: str | None, b: str | None) -> str:
    return json.dumps([a, b], ensure_ascii=False, separators=(",", ":"))


def visible_scopes(tenant: str, agent: str | None, user: str | None) -> list[Scope]:
    """The scopes a run of ``agent`` for ``user`` may read, narrowest first: the user's memories with this agent,
    the user's across agents, the agent's shared memories, the tenant's. Without a user, the last two only."""
    pairs: list[tuple[str | None, str | None]] = [(agent, user), (None, user), (agent, None), (None, None)]
    seen: list[Scope] = []
    for a, u in pairs:
        if (u is None or user is not None) and (a is None or agent is not None):
            scope = Scope(tenant=tenant, agent=a, user=u)
            if scope not in seen:
                seen.append(scope)
    return seen


class MemoryKind(StrEnum):
    fact = "fact"
    preference = "preference"
    entity = "entity"
    """A description of something the graph names (its record carries the entity's id in ``metadata``)."""
    note = "note"


class MemoryStatus(StrEnum):
    active = "active"
    superseded = "superseded"
    """Replaced by a newer record (``superseded_by``); ``valid_to`` says since when."""
    flagged = "flagged"
    """Held back for review (a guard or a person doubted it): current, but recall should leave it out."""


class MemorySource(_Doc):
    """Where a memory (or an entity, or a relation) was learned."""

    run_id: str | None = None
    thread_id: str | None = None
    events: list[int] = Field(default_factory=list)
    """Sequence numbers of the run's events it was learned from."""
    user: str | None = None
    """The user whose conversation it came from, whatever the scope it was stored in: erasing that user's data
    (``forget_user``) erases it too, also from shared scopes."""
    trusted: bool
    """False when learned from a tool's output (or anything else a third party wrote), which may carry an
    injected instruction; True for what the user or the agent's own configuration said."""


def _check_metadata(metadata: dict[str, Scalar]) -> dict[str, Scalar]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys, not {len(metadata)}")
    for k, v in metadata.items():
        if not METADATA_KEY.match(k):
            raise ValueError(f"metadata key {k!r}: letters, digits and '_', not starting with a digit, at most 64")
        if isinstance(v, str) and len(v) > MAX_METADATA_STRING:
            raise ValueError(f"metadata {k!r}: at most {MAX_METADATA_STRING} characters")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"metadata {k!r}: not a finite number")
    return metadata


def check_vector(vector: list[float]) -> list[float]:
    """A vector cosine similarity is defined for: finite values, not all zero."""
    if not 1 <= len(vector) <= MAX_DIMENSIONS:
        raise ValueError(f"a vector has 1 to {MAX_DIMENSIONS} dimensions, not {len(vector)}")
    if not all(math.isfinite(x) for x in vector):
        raise ValueError("a vector's values must be finite")
    if not any(vector):
        raise ValueError("a vector of zeros has no direction: cosine similarity is undefined for it")
    return vector


class MemoryRecord(_Doc):
    """One memory: a short text, its embedding, and what is known of its truth and origin."""

    format: int = FORMAT_VERSION
    id: str = Field(min_length=1)
    """Unique in its tenant; storing a record again under its id replaces it (idempotent retries)."""
    scope: Scope
    text: str = Field(min_length=1)
    vector: list[float]
    kind: MemoryKind = MemoryKind.fact
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    source: MemorySource
    status: MemoryStatus = MemoryStatus.active
    created_at: AwareDatetime
    valid_from: AwareDatetime
    """Since when it is true (often ``created_at``; earlier when the user said "since March")."""
    valid_to: AwareDatetime | None = None
    """Until when it was true (exclusive); None while it is current."""
    superseded_by: str | None = None
    """The record that replaced it (status ``superseded``)."""
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    """Small and flat, for filters: at most 16 identifier keys."""
    expire_at: AwareDatetime | None = None
    """Retention: the store deletes the record after this (Firestore TTL), None to keep it until erased."""
    embedding_model: str = Field(min_length=1)
    """The model that made ``vector``: vectors of different models are not comparable, even of one size."""
    dimensions: int = Field(ge=1, le=MAX_DIMENSIONS)

    @field_validator("vector")
    @classmethod
    def _vector(cls, vector: list[float]) -> list[float]:
        return check_vector(vector)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, Scalar]) -> dict[str, Scalar]:
        return _check_metadata(metadata)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.vector) != self.dimensions:
            raise ValueError(f"vector has {len(self.vector)} dimensions, the record says {self.dimensions}")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        superseded = self.status is MemoryStatus.superseded
        if superseded != (self.superseded_by is not None) or (superseded and self.valid_to is None):
            raise ValueError("a superseded record has superseded_by and valid_to; another has no superseded_by")
        return self

    @property
    def current(self) -> bool:
        """True until the record's validity ends (``valid_to``)."""
        return self.valid_to is None

    def valid_at(self, at: AwareDatetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


class Entity(_Doc):
    """Something memories are about: a person, an organisation, a product, a place."""

    format: int = FORMAT_VERSION
    id: str = Field(min_length=1)
    """Unique in its tenant; upserting it again under its id replaces it."""
    scope: Scope
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    """Free-form but stable: ``person``, ``organization``, ``product``, ``place``..."""
    aliases: list[str] = Field(default_factory=list)
    source: MemorySource
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    created_at: AwareDatetime
    updated_at: AwareDatetime
    expire_at: AwareDatetime | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, Scalar]) -> dict[str, Scalar]:
        return _check_metadata(metadata)


class Relation(_Doc):
    """``subject`` ``predicate`` ``object`` between two entities of the tenant, true from ``valid_from`` until
    ``valid_to`` (exclusive; None while current)."""

    format: int = FORMAT_VERSION
    id: str = Field(min_length=1)
    scope: Scope
    subject: str = Field(min_length=1)
    """An entity id."""
    predicate: str = Field(min_length=1)
    """Lower snake case by convention: ``works_at``, ``prefers``, ``manages``."""
    object: str = Field(min_length=1)
    """An entity id."""
    source: MemorySource
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    created_at: AwareDatetime
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None
    expire_at: AwareDatetime | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, Scalar]) -> dict[str, Scalar]:
        return _check_metadata(metadata)

    @model_validator(mode="after")
    def _interval(self) -> Self:
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    def valid_at(self, at: AwareDatetime | None) -> bool:
        """Current at ``at``; with None, current now (not closed)."""
        if at is None:
            return self.valid_to is None
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


# --- what an agent declares, and what it learns ------------------------------------------------------------------


class Conflicts(StrEnum):
    """What becomes of a fact learned when one stored says otherwise about the same thing (the same ``key``)."""

    newest = "newest"
    """The new fact wins; the old one is kept as superseded (its validity ends when the new one begins)."""
    confidence = "confidence"
    """The more confident fact wins (the new one on a tie); the other is kept as superseded."""
    keep_both = "keep_both"
    """Both are kept current and flagged: recall leaves them out until someone settles it (or ``forget``)."""
    ask = "ask"
    """Both are kept, the new one flagged, and an approval of kind ``memory`` asks a person which is true:
    approved, the new fact supersedes the old; rejected, the new one is dropped (superseded by the old)."""


class MemoryPolicy(_Doc):
    """How an agent remembers (docs/memory.md, "Learning and recall")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recall: bool = True
    """Before the run's first model call, the memories nearest its input are put in its context."""
    recall_k: int = Field(default=5, ge=1, le=50)
    recall_tokens: int = Field(default=400, ge=50, le=8000)
    """At most this many tokens (about 4 characters each) of recalled memories in the context."""
    min_score: float = Field(default=0.1, ge=-1.0, le=1.0)
    """Memories less similar to the input than this (cosine) are not recalled. A user's memories are few, and a
    preference bears on requests that share few words with it, so the bar is low: the local model's cosine of
    unrelated sentences is about 0 to 0.1 (Gemini embeddings score higher across the board: raise it for them)."""
    learn: bool = True
    """After each run that ends, a background task asks the agent's model what is worth remembering."""
    conflicts: Conflicts = Conflicts.newest
    approvers: tuple[str, ...] = ()
    """Who settles a conflict with ``conflicts="ask"`` (principals or ``*@domain`` patterns)."""
    ask_expires_after_s: int = Field(default=7 * 24 * 3600, ge=60)
    """How long such an approval waits; unanswered, the stored fact stands and the new one is dropped."""
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    """Facts the model is less sure of are not stored."""
    retention_days: int = Field(default=365, ge=1, le=3650)
    """Memories are deleted this long after they were learned (sooner if erased)."""
    shared: bool = False
    """Also learn facts about the agent's domain (not about the user) into the agent's shared scope; off, only
    what concerns the user is kept, in the user's scope with this agent."""

    @model_validator(mode="after")
    def _ask_needs_approvers(self) -> Self:
        if self.conflicts is Conflicts.ask and not self.approvers:
            raise ValueError('conflicts="ask" needs approvers: someone must be able to settle a conflict')
        return self


FACT_KEY = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,95}\Z")
"""What a fact is about, as a stable key (``contact_channel``, ``address:shipping``): two facts with one key in one
scope say different things about the same thing when their values differ."""


class Fact(_Doc):
    """One thing worth remembering, as the extraction (or the ``remember`` tool) gives it."""

    key: str
    """What it is about: facts are compared by it for conflicts."""
    value: str = Field(min_length=1, max_length=500)
    """What it says of that, shortly: two facts of one key conflict when their values differ."""
    text: str = Field(min_length=1, max_length=1000)
    """The memory as a sentence, what recall shows the model."""
    kind: MemoryKind = MemoryKind.fact
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    about: str = "user"
    """``user`` (the user's scope) or ``domain`` (the agent's shared scope, with ``MemoryPolicy.shared``)."""
    sources: list[int] = Field(default_factory=list)
    """Sequence numbers of the run's events it was learned from."""

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        key = key.strip().lower().replace(" ", "_")
        if not FACT_KEY.match(key):
            raise ValueError(f"fact key {key!r}: lower case letters, digits and _ . : -, at most 96")
        return key

    @field_validator("about")
    @classmethod
    def _about(cls, about: str) -> str:
        if about not in ("user", "domain"):
            raise ValueError(f"about is 'user' or 'domain', not {about!r}")
        return about


class Link(_Doc):
    """A relation worth remembering, as the extraction gives it: ``subject`` ``predicate`` ``object`` between named
    things (``user`` names the run's user). Stored in the graph store as two entities and a relation."""

    subject: str = Field(min_length=1, max_length=200)
    subject_type: str = Field(default="person", min_length=1, max_length=64)
    predicate: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    """Lower snake case: ``works_at``, ``owns``, ``prefers``."""
    object: str = Field(min_length=1, max_length=200)
    object_type: str = Field(default="thing", min_length=1, max_length=64)
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    sources: list[int] = Field(default_factory=list)
