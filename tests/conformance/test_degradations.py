"""Conformance of DegradationStore implementations: in memory and Firestore (on the emulator).

``degradations()`` hands out stores that share one state: the same object in memory, and new instances with
their own clients on the same collection prefix for Firestore, like separate instances of the functions.
Times are explicit ``now`` values: nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agex.adapters.inmemory.degradations import InMemoryDegradations
from agex.core.spend import Degrade
from agex.ports.degradations import Degradation, DegradationStore, Transition

from .conftest import PROJECT, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
CHEAPER = Degrade(model="gemini-2.5-flash-lite", skip_optional_tools=True)

Factory = Callable[..., DegradationStore]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def degradation(seconds: float = 0, agent: str = "support", source: str = "slo",
                degrade: Degrade = CHEAPER) -> Degradation:
    return Degradation(agent=agent, source=source, reason="error burn rate 4", since=at(seconds),
                       burn_rates={"error": 4.0, "latency": 0.5}, runs=20, degrade=degrade)


@pytest.fixture(params=["memory", "firestore"])
def degradations(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        shared = InMemoryDegradations()
        return lambda **_: shared
    from google.cloud import firestore

    from agex.adapters.gcp.firestore_degradations import FirestoreDegradations

    request.getfixturevalue("firestore_emulator")
    prefix = unique("d") + "_"

    def make(cache_s: float = 0.0) -> DegradationStore:
        client = firestore.Client(project=PROJECT)  # a client per store: one per instance
        request.addfinalizer(client.close)
        return FirestoreDegradations(client, prefix=prefix, cache_s=cache_s)

    return make


def test_not_degraded_by_default(degradations: Factory) -> None:
    s = degradations()
    assert s.active("support", T0) is None
    assert s.recover("support", "slo", T0) is None
    assert s.unannounced(at(3600)) == []


def test_enter_is_a_transition_once(degradations: Factory) -> None:
    s = degradations()
    assert s.enter(degradation(0)) is True
    assert s.enter(degradation(60)) is False  # degraded already: the first since stays
    assert s.active("support", at(61)) == degradation(0)
    assert s.active("billing", at(61)) is None


def test_recover_ends_it_once_and_a_later_enter_is_a_new_degradation(degradations: Factory) -> None:
    s = degradations()
    s.enter(degradation(0))
    ended = s.recover("support", "slo", at(600), reason="burn rates below 1", burn_rates={"error": 0.2}, runs=30)
    assert ended == degradation(0)
    assert s.recover("support", "slo", at(601)) is None
    assert s.active("support", at(602)) is None
    assert s.enter(degradation(900)) is True
    assert s.active("support", at(901)) == degradation(900)


def test_a_changed_declaration_replaces_the_degrade_without_a_transition(degradations: Factory) -> None:
    s = degradations()
    s.enter(degradation(0))
    shorter = Degrade(context_window_steps=4)
    assert s.enter(degradation(60, degrade=shorter)) is False
    found = s.active("support", at(61))
    assert found is not None and found.degrade == shorter and found.since == at(0)
    (pending,) = s.unannounced(at(3600))  # still the one transition, with its id
    assert pending.event == "entered" and pending.id == Transition(degradation=degradation(0)).id


def test_sources_combine_in_the_order_of_their_names(degradations: Factory) -> None:
    s = degradations()
    s.enter(degradation(10, source="slo", degrade=Degrade(model="gemini-2.5-flash-lite", context_window_steps=8)))
    s.enter(degradation(0, source="budget:daily", degrade=Degrade(model="openai:qwen3", context_window_steps=12,
                                                                   skip_optional_tools=True)))
    both = s.active("support", at(20))
    assert both is not None
    assert both.source == "budget:daily+slo" and both.since == at(0)
    assert both.degrade == Degrade(model="openai:qwen3", context_window_steps=8, skip_optional_tools=True)
    s.recover("support", "budget:daily", at(30))
    assert s.active("support", at(31)) == degradation(10, source="slo", degrade=Degrade(
        model="gemini-2.5-flash-lite", context_window_steps=8))


def test_transitions_stay_unannounced_until_marked(degradations: Factory) -> None:
    s = degradations()
    s.enter(degradation(0))
    s.enter(degradation(5, agent="billing"))
    assert s.unannounced(at(0)) == []  # made at 0: not before 0
    entered = s.unannounced(at(10))
    assert [(t.degradation.agent, t.event) for t in entered] == [("support", "entered"), ("billing", "entered")]
    s.announced(entered[0])
    assert [t.degradation.agent for t in s.unannounced(at(10))] == ["billing"]
    s.recover("support", "slo", at(20), reason="healthy", burn_rates={"error": 0.1}, runs=12)
    s.announced(entered[0])  # superseded by the recovery: changes nothing
    pending = {t.degradation.agent: t for t in s.unannounced(at(30))}
    recovery = pending["support"]
    assert recovery.event == "recovered" and recovery.at == at(20) and recovery.recovery is not None
    assert recovery.recovery.burn_rates == {"error": 0.1} and recovery.recovery.runs == 12
    assert recovery.degradation == degradation(0)
    assert recovery.id != entered[0].id
    s.announced(recovery)
    assert [t.degradation.agent for t in s.unannounced(at(30))] == ["billing"]


def test_racing_enters_make_exactly_one_transition(degradations: Factory) -> None:
    n = 6
    stores = [degradations() for _ in range(n)]
    results: list[bool] = [False] * n
    start = threading.Barrier(n)

    def enter(i: int) -> None:
        start.wait()
        results[i] = stores[i].enter(degradation(i * 0.01))

    threads = [threading.Thread(target=enter, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = results.index(True)
    assert stores[0].active("support", at(1)) == degradation(winner * 0.01)
    assert len(stores[1].unannounced(at(1))) == 1


def test_racing_recoveries_end_it_exactly_once(degradations: Factory) -> None:
    n = 6
    stores = [degradations() for _ in range(n)]
    stores[0].enter(degradation(0))
    results: list[Degradation | None] = [None] * n
    start = threading.Barrier(n)

    def recover(i: int) -> None:
        start.wait()
        results[i] = stores[i].recover("support", "slo", at(100 + i))

    threads = [threading.Thread(target=recover, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r is not None] == [degradation(0)]
    assert stores[0].active("support", at(200)) is None


def test_invalid_names_are_refused(degradations: Factory) -> None:
    s = degradations()
    with pytest.raises(ValueError):
        s.recover("Support/x", "slo", T0)
    with pytest.raises(ValueError):
        s.enter(degradation(0, source="budget+slo"))  # a combination, not a source


def test_firestore_reads_are_cached_for_cache_s(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_degradations import FirestoreDegradations

    prefix = unique("d") + "_"
    reader = FirestoreDegradations(firestore_client, prefix=prefix, cache_s=2.0)
    writer = FirestoreDegradations(firestore_client, prefix=prefix, cache_s=0)
    assert reader.active("support", at(0)) is None
    writer.enter(degradation(0.5))
    assert reader.active("support", at(1.9)) is None  # the read at 0, reused
    assert reader.active("support", at(2)) == degradation(0.5)
    writer.recover("support", "slo", at(3))
    assert reader.active("support", at(3.5)) == degradation(0.5)
    assert reader.active("support", at(4)) is None
    # a store sees its own transitions at once
    assert reader.enter(degradation(5)) is True
    assert reader.active("support", at(5.1)) == degradation(5)
