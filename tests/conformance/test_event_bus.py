"""Conformance of EventBus implementations: the in-memory bus and Pub/Sub (on the emulator)."""

from __future__ import annotations

from typing import Any

import pytest

from agex.core.errors import ConfigurationError

from .conftest import PROJECT, BusUnderTest, unique


def test_publish_returns_an_id_and_the_message_reads_back(event_bus: BusUnderTest) -> None:
    message = {"type": "run.finished", "run_id": "run-1", "status": "succeeded", "usage": {"tokens": 12},
               "tags": ["a", "b"], "result": "Ünïcödé ✓", "error": None, "cost": 0.25, "ok": True}
    attributes = {"tenant": "acme", "event": "run.finished"}
    msg_id = event_bus.bus.publish(event_bus.topic, message, attributes)
    assert isinstance(msg_id, str) and msg_id
    [got] = event_bus.read(1)
    assert got.id == msg_id
    assert got.message == message
    assert got.attributes == attributes


def test_publish_without_attributes(event_bus: BusUnderTest) -> None:
    msg_id = event_bus.bus.publish(event_bus.topic, {"n": 1})
    [got] = event_bus.read(1)
    assert (got.id, got.message, got.attributes) == (msg_id, {"n": 1}, {})


def test_each_publish_gets_its_own_id(event_bus: BusUnderTest) -> None:
    ids = [event_bus.bus.publish(event_bus.topic, {"n": i}, {"i": str(i)}) for i in range(5)]
    assert len(set(ids)) == 5
    got = {m.id: m for m in event_bus.read(5)}
    assert set(got) == set(ids)
    for i, msg_id in enumerate(ids):
        assert got[msg_id].message == {"n": i} and got[msg_id].attributes == {"i": str(i)}


# --- Pub/Sub adapter only -----------------------------------------------------------------------------


def test_pubsub_missing_topic_is_a_configuration_error(pubsub_clients: Any) -> None:
    from agex.adapters.gcp.pubsub_bus import PubSubEventBus

    publisher, _ = pubsub_clients
    topic = unique("missing-")
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        PubSubEventBus(PROJECT, publisher, timeout=10).publish(topic, {"x": 1})
    assert f"projects/{PROJECT}/topics/{topic}" in str(info.value) and "gcloud pubsub topics create" in str(info.value)


def test_pubsub_bus_creates_its_publisher_lazily(pubsub_emulator: str, pubsub_clients: Any) -> None:
    from agex.adapters.gcp.pubsub_bus import PubSubEventBus, ensure_topics

    publisher, _ = pubsub_clients
    topic = unique("lazy-")
    assert ensure_topics(PROJECT, [topic, topic], publisher) == [f"projects/{PROJECT}/topics/{topic}"] * 2
    bus = PubSubEventBus(PROJECT)
    assert bus._publisher is None
    try:
        assert bus.publish(topic, {"x": 1})
    finally:
        bus.close()
