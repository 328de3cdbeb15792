"""Which adapter serves each port: Google Cloud (``Backends.gcp``) or memory (``Backends.in_memory``).

The one place that chooses adapters; ``Runtime`` builds everything else on top of it. Each port is a
factory called once, on first use, so a function pays at start only for the clients it uses: the API never
builds a model client, and the step function imports ``google.genai`` on its first model call.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from agex.app.settings import Settings
from agex.core.agent import Agent
from agex.core.clock import Clock, Ids, RandomIds, SystemClock
from agex.core.decision_signing import new_key_pair
from agex.core.errors import ConfigurationError
from agex.core.messages import ModelRequest, ModelResponse
from agex.ports.breakers import Breakers
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.degradations import DegradationStore
from agex.ports.embeddings import Embedder
from agex.ports.event_bus import EventBus
from agex.ports.limiter import Limiter
from agex.ports.live_text import LiveTexts
from agex.ports.memory import GraphStore, VectorStore
from agex.ports.metrics_store import MetricsStore
from agex.ports.model import Model, TextSink
from agex.ports.schedules import ScheduleStore
from agex.ports.secret_store import SecretStore
from agex.ports.spend_ledger import SpendLedger
from agex.ports.task_queue import TaskQueue
from agex.ports.threads import ThreadStore

if TYPE_CHECKING:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore
    from agex.adapters.inmemory.secret_store import InMemorySecretStore
    from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore

T = TypeVar("T")
Models = Callable[[Agent], Model]


OWN_IDENTITY = "agex-functions@local"
"""The in-memory backend's identity of the functions themselves: grant it a secret they read as their own."""


@dataclass(frozen=True)
class Backends:
    store: Callable[[], CheckpointStore]
    queue: Callable[[], TaskQueue]
    bus: Callable[[], EventBus]
    models: Callable[[], Models]
    """The model each agent talks to."""
    secrets: Callable[[], SecretStore]
    limiter: Callable[[], Limiter]
    signing_key: Callable[[], str]
    """The API's Ed25519 decision signing key (PEM)."""
    metrics: Callable[[], MetricsStore]
    """Runs' metrics records, agent versions, drift alerts and evaluation results."""
    breakers: Callable[[], Breakers]
    """Models' circuit breakers, shared by every instance."""
    degradations: Callable[[], DegradationStore]
    """Which agents run degraded (SLO burn rates), shared by every instance."""
    own_secret: Callable[[str], str]
    """A secret the functions read with their own identity (webhook signing keys), not an agent's."""
    schedules: Callable[[], ScheduleStore]
    """Which schedules the API paused."""
    live: Callable[[], LiveTexts]
    """The text a model is writing, for the followers of its run."""
    threads: Callable[[], ThreadStore]
    """Conversations: which run of each is under way, and what the next turn is given of the ones before."""
    spend: Callable[[], SpendLedger]
    """The ledger the checkpoint store writes model spend to, summed for budgets."""
    embedder: Callable[[], Embedder]
    """Texts to vectors, for long-term memory (docs/memory.md, "Embeddings")."""
    vectors: Callable[[], VectorStore]
    """Long-term memories, searched by similarity (vectors of the embedder's size and model)."""
    graph: Callable[[], GraphStore]
    """Entities and their relations, beside the memories (erased with them)."""
    clock: Clock = field(default_factory=SystemClock)
    ids: Ids = field(default_factory=RandomIds)
    decision_sources: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Decision sources the backend itself vouches for, beside ``AGEX_DECISION_SOURCES``: the in-memory
    backend's own key pair."""

    @classmethod
    def gcp(cls, settings: Settings) -> Backends:
        """Firestore, Cloud Tasks, Pub/Sub, Secret Manager and Gemini, or their emulators where the settings
        point at them."""
        s = settings

        @_once
        def firestore() -> CheckpointStore:
            from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

            return FirestoreCheckpointStore(project=s.project)

        @_once
        def postgres() -> PostgresCheckpointStore:
            """The run state on Postgres (``AGEX_STORE``), whose connection pool the spend ledger shares."""
            from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore

            if not s.store.startswith(("postgresql://", "postgres://")):
                raise ConfigurationError("AGEX_STORE must be empty (Firestore) or a postgresql:// DSN")
            return PostgresCheckpointStore(s.store, schema=s.store_schema)

        def store() -> CheckpointStore:
            return postgres() if s.store else firestore()

        def queue() -> TaskQueue:
            from agex.adapters.gcp.cloud_tasks import CloudTasksQueue

            return CloudTasksQueue(project=s.project, location=s.location, queue=s.queue, url=s.step_url,
                                   service_account=s.step_service_account, audience=s.audience,
                                   emulator_host=s.tasks_emulator_host, per_agent=s.per_agent_queues)

        def bus() -> EventBus:
            from agex.adapters.gcp.pubsub_bus import PubSubEventBus

            return PubSubEventBus(s.project)

        def own_secret(name: str) -> str:
            # read with the function's own identity, like the API's signing key
            from agex.adapters.gcp.secret_manager import SecretManagerStore, emulator_clients, own_clients

            clients = emulator_clients(s.secrets_emulator_host) if s.secrets_emulator_host else own_clients()
            return SecretManagerStore(s.project, clients).access(s.step_service_account, name)

        def openai() -> Model:
            from agex.adapters.openai_compat import OpenAICompatibleModel

            key = own_secret(s.openai_api_key_secret) if s.openai_api_key_secret else s.openai_api_key
            return OpenAICompatibleModel(base_url=s.openai_base_url, api_key=key, timeout_seconds=s.model_timeout_seconds)

        def gemini() -> Model:
            from agex.adapters.gcp.gemini import GeminiModel

            key = own_secret(s.gemini_api_key_secret) if s.gemini_api_key_secret else s.gemini_api_key
            return GeminiModel(api_key=key, base_url=s.gemini_base_url, vertex=s.vertex, project=s.project,
                               location=s.location, timeout_seconds=s.model_timeout_seconds,
                               cache=s.context_cache, cache_ttl_seconds=s.context_cache_ttl_seconds)

        def models() -> Models:
            providers = Providers(default=s.model_provider, build={"gemini": gemini, "openai": openai})
            return lambda agent: providers

        def secrets() -> SecretStore:
            # read as each agent's identity: the emulator's bearer identities locally, impersonation in the cloud
            from agex.adapters.gcp.secret_manager import (
                SecretManagerStore,
                emulator_clients,
                impersonated_clients,
            )
            from agex.ports.secret_store import CachedSecrets

            clients = emulator_clients(s.secrets_emulator_host) if s.secrets_emulator_host else impersonated_clients()
            return CachedSecrets(SecretManagerStore(s.project, clients), ttl_s=s.secret_cache_seconds)

        def limiter() -> Limiter:
            if s.limiter != "firestore":
                from agex.adapters.redis.limiter import RedisLimiter

                return RedisLimiter.from_url(s.limiter)
            from agex.adapters.gcp.firestore_limiter import FirestoreLimiter
            from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

            store = firestore()  # one Firestore client per process: the checkpoint store's
            assert isinstance(store, FirestoreCheckpointStore)
            return FirestoreLimiter(store.client)

        def signing_key() -> str:
            # the API's own secret, read with its own credentials (the emulator's identity locally)
            from agex.adapters.gcp.secret_manager import SecretManagerStore, emulator_clients, own_clients

            clients = emulator_clients(s.secrets_emulator_host) if s.secrets_emulator_host else own_clients()
            return SecretManagerStore(s.project, clients).access(s.api_service_account, s.decision_signing_key_secret)

        def shared() -> FirestoreCheckpointStore:
            """The checkpoint store, whose one Firestore client (and collection prefix) every other Firestore
            adapter of the process uses."""
            from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

            store = firestore()
            assert isinstance(store, FirestoreCheckpointStore)
            return store

        def metrics() -> MetricsStore:
            from agex.adapters.gcp.firestore_metrics import FirestoreMetricsStore

            return FirestoreMetricsStore(shared().client)

        def breakers() -> Breakers:
            from agex.adapters.gcp.firestore_breakers import FirestoreBreakers

            return FirestoreBreakers(shared().client)

        def degradations() -> DegradationStore:
            from agex.adapters.gcp.firestore_degradations import FirestoreDegradations

            return FirestoreDegradations(shared().client, prefix=shared().prefix)

        def schedules() -> ScheduleStore:
            from agex.adapters.gcp.firestore_schedules import FirestoreSchedules

            return FirestoreSchedules(shared().client, prefix=shared().prefix)

        def threads() -> ThreadStore:
            from agex.adapters.gcp.firestore_threads import FirestoreThreads

            store = shared()
            return FirestoreThreads(store.client, prefix=store.prefix, concurrency=store.concurrency)

        def live() -> LiveTexts:
            from agex.adapters.gcp.firestore_live_text import FirestoreLiveTexts

            return FirestoreLiveTexts(shared().client, prefix=shared().prefix)

        @_once
        def embedder() -> Embedder:
            if s.embeddings == "local":
                from agex.adapters.local_embeddings import LocalEmbedder

                return LocalEmbedder()
            if not s.embeddings.startswith("gemini:"):
                raise ConfigurationError(f"AGEX_EMBEDDINGS is local or gemini:MODEL, not {s.embeddings!r}")
            from agex.adapters.gcp.gemini_embeddings import GeminiEmbedder

            key = own_secret(s.gemini_api_key_secret) if s.gemini_api_key_secret else s.gemini_api_key
            return GeminiEmbedder(s.embeddings.removeprefix("gemini:"), dimensions=s.embedding_dimensions, api_key=key,
                                  base_url=s.gemini_base_url, vertex=s.vertex, project=s.project, location=s.location,
                                  timeout_seconds=s.model_timeout_seconds)

        def memory_dsn() -> str:
            """Where memory lives: AGEX_MEMORY_STORE, else beside the run state (Postgres when AGEX_STORE is)."""
            where = s.memory_store or s.store
            if where in ("", "firestore"):
                return ""
            if not where.startswith(("postgresql://", "postgres://")):
                raise ConfigurationError("AGEX_MEMORY_STORE must be empty, firestore, or a postgresql:// DSN")
            return where

        @_once
        def vectors() -> VectorStore:
            e = embedder()
            if dsn := memory_dsn():
                from agex.adapters.postgres.memory import PostgresVectorStore

                pool = postgres().pool if dsn == s.store else dsn
                return PostgresVectorStore(pool, schema=s.store_schema, dimensions=e.dimensions, embedding_model=e.name)
            from agex.adapters.gcp.firestore_memory import FirestoreVectorStore

            return FirestoreVectorStore(shared().client, dimensions=e.dimensions, embedding_model=e.name,
                                        prefix=shared().prefix)

        @_once
        def graph() -> GraphStore:
            if dsn := memory_dsn():
                from agex.adapters.postgres.memory import PostgresGraphStore

                return PostgresGraphStore(postgres().pool if dsn == s.store else dsn, schema=s.store_schema)
            from agex.adapters.gcp.firestore_memory import FirestoreGraphStore

            return FirestoreGraphStore(shared().client, prefix=shared().prefix)

        def spend() -> SpendLedger:
            if s.store:  # the ledger reads the rows the checkpoint store's commits write
                from agex.adapters.postgres.spend_ledger import PostgresSpendLedger

                return PostgresSpendLedger(postgres().pool, schema=postgres().schema)
            from agex.adapters.gcp.firestore_spend import FirestoreSpendLedger

            return FirestoreSpendLedger(shared().client, prefix=shared().prefix)

        return cls(store=store, queue=queue, bus=bus, models=models, secrets=secrets, limiter=limiter,
                   signing_key=signing_key, metrics=_once(metrics), breakers=_once(breakers), spend=_once(spend), schedules=_once(schedules), own_secret=own_secret,
                   degradations=_once(degradations), threads=_once(threads), live=_once(live), embedder=embedder,
                   vectors=vectors, graph=graph)

    @classmethod
    def in_memory(cls, models: Models, *, clock: Clock | None = None, ids: Ids | None = None,
                  secrets: InMemorySecretStore | None = None) -> Backends:
        """Every port in this process's memory: for tests (with a manual clock) and the embedded mode of
        ``agex dev``. Decisions are signed with a key pair made here."""
        from agex.adapters.inmemory.breakers import InMemoryBreakers
        from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
        from agex.adapters.inmemory.degradations import InMemoryDegradations
        from agex.adapters.inmemory.event_bus import InMemoryEventBus
        from agex.adapters.inmemory.limiter import InMemoryLimiter
        from agex.adapters.inmemory.live_text import InMemoryLiveTexts
        from agex.adapters.inmemory.memory import InMemoryGraphStore, InMemoryVectorStore
        from agex.adapters.inmemory.metrics_store import InMemoryMetricsStore
        from agex.adapters.inmemory.schedules import InMemorySchedules
        from agex.adapters.inmemory.secret_store import InMemorySecretStore
        from agex.adapters.inmemory.spend_ledger import InMemorySpendLedger
        from agex.adapters.inmemory.task_queue import InMemoryTaskQueue
        from agex.adapters.inmemory.threads import InMemoryThreads

        @_once
        def embedder() -> Embedder:
            # the real model, offline (loaded on the first memory an agent recalls or learns, once per process)
            from agex.adapters.local_embeddings import LocalEmbedder

            return LocalEmbedder()

        @_once
        def vectors() -> VectorStore:
            return InMemoryVectorStore(embedder().dimensions, embedding_model=embedder().name)

        store, queue, bus = InMemoryCheckpointStore(), InMemoryTaskQueue(), InMemoryEventBus()
        secret_store, limiter = secrets or InMemorySecretStore(), InMemoryLimiter()
        private, public = new_key_pair()
        metrics, breakers, degradations = InMemoryMetricsStore(), InMemoryBreakers(), InMemoryDegradations()
        return cls(store=lambda: store, queue=lambda: queue, bus=lambda: bus, models=lambda: models,
                   secrets=lambda: secret_store, limiter=lambda: limiter, signing_key=lambda: private,
                   metrics=lambda: metrics, breakers=lambda: breakers, spend=_once(lambda: InMemorySpendLedger(store)),
                   degradations=lambda: degradations, schedules=_once(InMemorySchedules),
                   threads=_once(InMemoryThreads), live=_once(InMemoryLiveTexts), embedder=embedder,
                   vectors=vectors, graph=_once(InMemoryGraphStore),
                   own_secret=lambda name: secret_store.access(OWN_IDENTITY, name),
                   clock=clock or SystemClock(), ids=ids or RandomIds(), decision_sources={"api": [public]})


class Providers(Model):
    """The model port over every provider a deployment talks to: a model named ``openai:NAME`` or
    ``gemini:NAME`` goes to that provider as ``NAME``, any other to the default one. So an agent's fallbacks
    may cross providers (``Agent.fallbacks``). Each provider's client is built on its first call."""

    def __init__(self, default: str, build: Mapping[str, Callable[[], Model]]) -> None:
        self.default, self._build = default, build
        self._built: dict[str, Model] = {}
        self._lock = threading.Lock()

    def _route(self, request: ModelRequest) -> tuple[Model, ModelRequest]:
        provider, _, name = request.model.partition(":")
        if not name or provider not in self._build:
            provider, name = self.default, request.model
        with self._lock:
            if provider not in self._built:
                self._built[provider] = self._build[provider]()
            model = self._built[provider]
        return model, request.model_copy(update={"model": name})

    def request(self, request: ModelRequest) -> ModelResponse:
        model, routed = self._route(request)
        return model.request(routed)

    def stream(self, request: ModelRequest, on_text: TextSink) -> ModelResponse:
        model, routed = self._route(request)
        return model.stream(routed, on_text)


def _once(build: Callable[[], T]) -> Callable[[], T]:
    return functools.cache(build)
