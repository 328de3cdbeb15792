"""Fixtures of the conformance suites: every port implementation passes the same tests.

The Google adapters run against the Cloud SDK emulators, started once per session on loopback ports
by ``agex.dev.emulators.gcloud`` (only if a test needs them) and stopped at the end. If ``FIRESTORE_EMULATOR_HOST``
or ``PUBSUB_EMULATOR_HOST`` is already set, that emulator is used instead of starting one. Tests are
isolated by unique collection prefixes, tenants and topics, not by wiping the emulator.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.dev.emulators import gcloud
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.event_bus import EventBus

PROJECT = "agex-test"


def _emulator(env_var: str, start: Callable[[], gcloud.EmulatorProcess]) -> Iterator[str]:
    existing = os.environ.get(env_var)
    if existing:
        yield existing
        return
    try:
        proc = start()
    except gcloud.EmulatorNotInstalled as e:
        # never a skip: a conformance suite that silently passes without its emulator proves nothing
        pytest.fail(f"emulator not installed ({e}); see the README's prerequisites", pytrace=False)
    os.environ[env_var] = proc.host_port
    try:
        yield proc.host_port
    finally:
        os.environ.pop(env_var, None)
        proc.stop()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """``host:port`` of a Firestore emulator; ``FIRESTORE_EMULATOR_HOST`` points at it."""
    yield from _emulator("FIRESTORE_EMULATOR_HOST", gcloud.start_firestore)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """``host:port`` of a Pub/Sub emulator; ``PUBSUB_EMULATOR_HOST`` points at it."""
    yield from _emulator("PUBSUB_EMULATOR_HOST", lambda: gcloud.start_pubsub(PROJECT))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a ``redis-server`` started for the session (no persistence, a
    temporary directory), stopped at its end. Tests isolate themselves by key prefixes."""
    from agex.dev.emulators import redis_server

    try:
        server = redis_server.start_redis()
    except gcloud.EmulatorNotInstalled as e:
        pytest.fail(str(e), pytrace=False)  # never a skip, as for the emulators
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def firestore_client(firestore_emulator: str) -> Any:
    from google.cloud import firestore

    client = firestore.Client(project=PROJECT)
    yield client
    client.close()


def at_once(n_threads: int, write: Callable[[int, int], None], per_thread: int = 1, attempts: int = 5) -> None:
    """``write(worker, i)`` for ``i`` in ``range(per_thread)`` from ``n_threads`` threads started together. A store
    may give up under contention (``TransientError``, as the ports allow); each write is then tried again, as
    Cloud Tasks would, so what a test checks after is that no update was lost or doubled. Raises what any writer
    raised in the end."""
    from agex.core.errors import TransientError

    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(w: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                for attempt in range(attempts):
                    try:
                        write(w, i)
                        break
                    except TransientError:
                        if attempt == attempts - 1:
                            raise
                        time.sleep(0.2 * (w + 1))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not errors, errors


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "firestore", "firestore-txn"])
def store(request: pytest.FixtureRequest) -> CheckpointStore:
    """``firestore`` updates with optimistic concurrency (the default), ``firestore-txn`` in read-write
    transactions. Each Firestore store gets a unique collection prefix: its own empty database."""
    if request.param == "memory":
        return InMemoryCheckpointStore()
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    client = request.getfixturevalue("firestore_client")
    mode = "transaction" if request.param == "firestore-txn" else "optimistic"
    return FirestoreCheckpointStore(client, prefix=unique("t") + "_", concurrency=mode)


@dataclass
class Received:
    id: str
    message: dict[str, Any]
    attributes: dict[str, str]


@dataclass
class BusUnderTest:
    """An event bus, a topic it may publish to, and a way to read back what reached the topic."""

    bus: EventBus
    topic: str
    read: Callable[[int], list[Received]]
    """``read(n)``: the first ``n`` messages published to ``topic`` (waits for them if needed)."""


@pytest.fixture(scope="session")
def pubsub_clients(pubsub_emulator: str) -> Any:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    publisher.stop()
    subscriber.close()


@pytest.fixture(params=["memory", "pubsub"])
def event_bus(request: pytest.FixtureRequest) -> BusUnderTest:
    topic = unique("topic-")
    if request.param == "memory":
        mem = InMemoryEventBus()

        def read_memory(n: int) -> list[Received]:
            return [Received(m.id, m.message, m.attributes) for m in mem.on(topic)[:n]]

        return BusUnderTest(mem, topic, read_memory)

    from agex.adapters.gcp.pubsub_bus import PubSubEventBus, ensure_subscription, ensure_topics

    publisher, subscriber = request.getfixturevalue("pubsub_clients")
    ensure_topics(PROJECT, [topic], publisher)
    sub = ensure_subscription(PROJECT, topic, topic + "-sub", subscriber)
    received: list[Received] = []

    def read_pubsub(n: int) -> list[Received]:
        for _ in range(50):  # each pull waits server-side for messages; bounded for a failing test
            if len(received) >= n:
                break
            resp = subscriber.pull(request={"subscription": sub, "max_messages": n - len(received)}, timeout=10)
            if resp.received_messages:
                subscriber.acknowledge(
                    request={"subscription": sub, "ack_ids": [m.ack_id for m in resp.received_messages]}
                )
            for m in resp.received_messages:
                msg = m.message
                received.append(Received(msg.message_id, json.loads(msg.data), dict(msg.attributes)))
        return received[:n]

    return BusUnderTest(PubSubEventBus(PROJECT, publisher), topic, read_pubsub)


# --- Postgres ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a throwaway Postgres 18 with pgvector (``agex.dev.emulators.postgres_server``) started for the
    session on a loopback port and stopped at its end; ``AGEX_TEST_POSTGRES_DSN`` names a running server
    instead. Tests isolate themselves by schema."""
    existing = os.environ.get("AGEX_TEST_POSTGRES_DSN")
    if existing:
        yield existing
        return
    from agex.dev.emulators import postgres_server

    try:
        server = postgres_server.start_postgres()
    except gcloud.EmulatorNotInstalled as e:
        pytest.fail(str(e), pytrace=False)  # never a skip, as for the emulators
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_pool(postgres_dsn: str) -> Iterator[Any]:
    """One pool for the session's Postgres stores, each in a schema of its own."""
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(postgres_dsn, min_size=1, max_size=12, open=True)
    yield pool
    pool.close()


CHECKPOINT_STORES = ["memory", "firestore", "firestore-txn", "postgres"]
"""What the checkpoint store suites run on: the ``store`` fixture's and Postgres."""


def checkpoint_store(request: pytest.FixtureRequest) -> CheckpointStore:
    """A fresh store of the kind ``request.param`` names (one of :data:`CHECKPOINT_STORES`): Firestore on a
    unique collection prefix, Postgres in a unique schema, each its own empty database."""
    if request.param == "postgres":
        from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore

        return PostgresCheckpointStore(request.getfixturevalue("postgres_pool"), schema=unique("t_"))
    if request.param == "memory":
        return InMemoryCheckpointStore()
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    client = request.getfixturevalue("firestore_client")
    mode = "transaction" if request.param == "firestore-txn" else "optimistic"
    return FirestoreCheckpointStore(client, prefix=unique("t") + "_", concurrency=mode)


def fail_commits(store: Any, times: int) -> None:
    """Make the next ``times`` commits of ``update_run`` in a Postgres store's schema fail as contention makes
    them fail (a serialization failure), after ``mutate`` ran and every write was sent: a deferred constraint
    trigger on the head raises at COMMIT. Its counter is a sequence, which a rollback does not undo."""
    s = store.schema
    with store.pool.connection() as conn:
        conn.execute(f"""
            CREATE SEQUENCE "{s}".commits_failed;
            CREATE FUNCTION "{s}".fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('"{s}".commits_failed') <= {int(times)} THEN
                    RAISE EXCEPTION 'commit refused by the test' USING ERRCODE = 'serialization_failure';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER fail_commit AFTER UPDATE ON "{s}".runs DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION "{s}".fail_commit();
        """)
