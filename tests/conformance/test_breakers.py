"""Conformance of Breakers implementations: in memory and Firestore (on the emulator).

``breakers()`` hands out stores that share one state: the same object in memory, and new instances with
their own clients on the same collection prefix for Firestore, like separate instances of the step
function. Times are explicit ``now`` values: nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agex.adapters.inmemory.breakers import InMemoryBreakers
from agex.ports.breakers import BreakerPolicy, Breakers

from .conftest import PROJECT, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
POLICY = BreakerPolicy(failures=3, window_s=30.0, cooldown_s=60.0)
MODEL = "gemini-2.5-flash"

Factory = Callable[..., Breakers]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["memory", "firestore"])
def breakers(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        shared = InMemoryBreakers()
        return lambda **_: shared
    from google.cloud import firestore

    from agex.adapters.gcp.firestore_breakers import FirestoreBreakers

    request.getfixturevalue("firestore_emulator")
    prefix = unique("b") + "_"

    def make(cache_s: float = 2.0) -> Breakers:
        client = firestore.Client(project=PROJECT)  # a client per store: one per instance
        request.addfinalizer(client.close)
        return FirestoreBreakers(client, prefix=prefix, cache_s=cache_s)

    return make


def test_closed_by_default(breakers: Factory) -> None:
    assert breakers().open_until(MODEL, T0) is None


def test_opens_after_enough_failures_within_the_window(breakers: Factory) -> None:
    b = breakers()
    assert b.failed(MODEL, at(0), POLICY) is None
    assert b.failed(MODEL, at(10), POLICY) is None
    assert b.open_until(MODEL, at(15)) is None
    assert b.failed(MODEL, at(30), POLICY) == at(90)
    assert b.open_until(MODEL, at(31)) == at(90)
    assert b.open_until("another-model", at(31)) is None


def test_failures_spread_wider_than_the_window_do_not_open(breakers: Factory) -> None:
    b = breakers()
    for s in (0, 20, 40, 60, 80, 100):  # never 3 within 30 s
        assert b.failed(MODEL, at(s), POLICY) is None
    assert b.open_until(MODEL, at(100)) is None


def test_stays_open_for_the_cooldown_then_closes(breakers: Factory) -> None:
    b = breakers()
    for s in (0, 1, 2):
        opened = b.failed(MODEL, at(s), POLICY)
    assert opened == at(62)
    assert b.open_until(MODEL, at(61.9)) == at(62)
    assert b.open_until(MODEL, at(62)) is None
    # a clean slate after the cool-down: one failure does not reopen it
    assert b.failed(MODEL, at(63), POLICY) is None
    assert b.open_until(MODEL, at(64)) is None


def test_failed_while_open_returns_the_open_until(breakers: Factory) -> None:
    b = breakers()
    for s in (0, 1, 2):
        b.failed(MODEL, at(s), POLICY)
    assert b.failed(MODEL, at(30), POLICY) == at(62)  # not extended
    assert b.open_until(MODEL, at(61)) == at(62)


def test_model_names_with_slashes(breakers: Factory) -> None:
    b = breakers()
    model = "publishers/google/models/gemini-2.5-pro"
    for s in (0, 1, 2):
        b.failed(model, at(s), POLICY)
    assert b.open_until(model, at(3)) == at(62)
    assert b.open_until("gemini-2.5-pro", at(3)) is None


def test_an_instance_sees_the_circuit_another_opened(breakers: Factory) -> None:
    a, b = breakers(cache_s=0), breakers(cache_s=0)
    assert b.open_until(MODEL, at(0)) is None
    for s in (0, 1):
        a.failed(MODEL, at(s), POLICY)
    assert b.failed(MODEL, at(2), POLICY) == at(62)  # failures of both instances count together
    assert a.open_until(MODEL, at(3)) == at(62)
    assert a.failed(MODEL, at(4), POLICY) == at(62)


def test_concurrent_failures_open_the_circuit_exactly_once(breakers: Factory) -> None:
    n = 8
    stores = [breakers(cache_s=0) for _ in range(n)]
    results: list[datetime | None] = [None] * n
    start = threading.Barrier(n)

    def fail(i: int) -> None:
        start.wait()
        results[i] = stores[i].failed(MODEL, at(i * 0.01), POLICY)

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = {r for r in results if r is not None}
    assert len(opened) == 1
    assert results.count(None) == POLICY.failures - 1  # the failures before it opened
    assert stores[0].open_until(MODEL, at(1)) == opened.pop()


def test_invalid_model_names_are_refused(breakers: Factory) -> None:
    with pytest.raises(ValueError):
        breakers().failed("__reserved__", T0, POLICY)


def test_firestore_reads_are_cached_for_cache_s(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_breakers import FirestoreBreakers

    prefix = unique("b") + "_"
    reader = FirestoreBreakers(firestore_client, prefix=prefix, cache_s=2.0)
    writer = FirestoreBreakers(firestore_client, prefix=prefix, cache_s=0)
    assert reader.open_until(MODEL, at(0)) is None
    for s in (0, 0.5, 1):
        writer.failed(MODEL, at(s), POLICY)
    assert reader.open_until(MODEL, at(1.5)) is None  # the read at 0, reused
    assert reader.open_until(MODEL, at(2)) == at(61)
