"""Pub/Sub adapter of the event bus port.

Messages are published as compact UTF-8 JSON to ``projects/{project}/topics/{topic}`` with the given
attributes. Topics are infrastructure (Terraform creates them in the cloud); :func:`ensure_topics` and
:func:`ensure_subscription` create them for local development against the emulator
(``PUBSUB_EMULATOR_HOST``).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from agex.core.errors import ConfigurationError, TransientError
from agex.ports.event_bus import EventBus

__all__ = ["PubSubEventBus", "encode_message", "ensure_subscription", "ensure_topics"]

_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.Cancelled,
    gexc.RetryError,
)


def encode_message(message: dict[str, Any]) -> bytes:
    """The wire form of a message: compact UTF-8 JSON."""
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"event bus message must be JSON-compatible: {e}") from e


class PubSubEventBus(EventBus):
    """Publishes to Pub/Sub topics of ``project``.

    ``publisher``: a ``pubsub_v1.PublisherClient``; created on first publish if omitted (it honours
    ``PUBSUB_EMULATOR_HOST``). ``timeout``: seconds to wait for the server to acknowledge a publish.
    """

    def __init__(
        self,
        project: str,
        publisher: pubsub_v1.PublisherClient | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        if not project:
            raise ConfigurationError("PubSubEventBus needs a Google Cloud project id")
        self.project = project
        self.timeout = timeout
        self._publisher = publisher
        self._lock = threading.Lock()

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        path = self.topic_path(topic)
        data = encode_message(message)
        attrs = dict(attributes or {})
        for k, v in attrs.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"Pub/Sub attributes must map str to str; got {k!r}: {v!r}")
        try:
            future = self.publisher.publish(path, data, **attrs)
            return str(future.result(timeout=self.timeout))
        except gexc.NotFound as e:
            raise ConfigurationError(
                f"Pub/Sub topic {path} does not exist; create it (Terraform in the cloud, or "
                f"`gcloud pubsub topics create {topic} --project={self.project}`, or "
                f"agex.adapters.gcp.pubsub_bus.ensure_topics for the emulator)"
            ) from e
        except (gexc.PermissionDenied, gexc.Unauthenticated) as e:
            raise ConfigurationError(
                f"publishing to {path} was refused ({type(e).__name__}): grant the service account "
                f"roles/pubsub.publisher on the topic"
            ) from e
        except gexc.InvalidArgument as e:
            raise ValueError(f"Pub/Sub rejected the message to {path}: {e}") from e
        except _TRANSIENT as e:
            raise TransientError(f"publishing to {path} failed ({type(e).__name__}: {e})") from e
        except concurrent.futures.TimeoutError as e:
            raise TransientError(f"publishing to {path}: no acknowledgement within {self.timeout:g} s") from e

    def close(self) -> None:
        """Flush pending messages and stop the publisher (if one was created)."""
        if self._publisher is not None:
            self._publisher.stop()


def ensure_topics(
    project: str, topics: Iterable[str], publisher: pubsub_v1.PublisherClient | None = None
) -> list[str]:
    """Create each of ``topics`` in ``project`` unless it exists; return their full paths."""
    client = publisher or pubsub_v1.PublisherClient()
    paths = []
    for topic in topics:
        path = f"projects/{project}/topics/{topic}"
        try:
            client.create_topic(request={"name": path})
        except gexc.AlreadyExists:
            pass
        except _TRANSIENT as e:
            raise TransientError(f"creating topic {path} failed: {e}") from e
        paths.append(path)
    return paths


def ensure_subscription(
    project: str,
    topic: str,
    subscription: str,
    subscriber: pubsub_v1.SubscriberClient | None = None,
    *,
    ack_deadline_seconds: int = 10,
    push_endpoint: str = "",
    dead_letter_topic: str = "",
    max_delivery_attempts: int = 5,
    min_backoff_s: float = 10.0,
    max_backoff_s: float = 600.0,
) -> str:
    """Create a subscription to ``topic`` unless it exists; return its full path. A pull subscription, or
    with ``push_endpoint`` a push one; with ``dead_letter_topic``, messages refused
    ``max_delivery_attempts`` times (5-100) move there, retried meanwhile with exponential backoff between
    ``min_backoff_s`` and ``max_backoff_s``. Local development only; Terraform owns these in the cloud."""
    client = subscriber or pubsub_v1.SubscriberClient()
    path = f"projects/{project}/subscriptions/{subscription}"
    request: dict[str, Any] = {"name": path, "topic": f"projects/{project}/topics/{topic}",
                               "ack_deadline_seconds": ack_deadline_seconds}
    if push_endpoint:
        request["push_config"] = {"push_endpoint": push_endpoint}
    if dead_letter_topic:
        request["dead_letter_policy"] = {"dead_letter_topic": f"projects/{project}/topics/{dead_letter_topic}",
                                         "max_delivery_attempts": max_delivery_attempts}
        request["retry_policy"] = {"minimum_backoff": _duration(min_backoff_s),
                                   "maximum_backoff": _duration(max_backoff_s)}
    try:
        client.create_subscription(request=request)
    except gexc.AlreadyExists:
        pass
    except _TRANSIENT as e:
        raise TransientError(f"creating subscription {path} failed: {e}") from e
    return path


def _duration(seconds: float) -> dict[str, int]:
    return {"seconds": int(seconds), "nanos": int(round(seconds % 1 * 1e9))}
