"""Secret store port: tool credentials, read with the identity of the agent whose tool needs them
(Secret Manager in the cloud), and the short-lived cache every deployment puts in front of it."""

from __future__ import annotations

import abc
import threading
from datetime import datetime, timedelta

from agex.core.clock import Clock, SystemClock


class SecretStore(abc.ABC):
    @abc.abstractmethod
    def access(self, identity: str, secret: str) -> str:
        """The value of the ``latest`` version of ``secret`` (a secret id in the deployment's project),
        read as ``identity`` (an agent's service account email).

        Raise ``SecretAccessDenied`` when ``identity`` holds no grant to read it (Secret Manager answers
        the same for a secret that does not exist and one it may not see), ``SecretUnavailable`` when
        the latest version is disabled or destroyed, ``SecretNotFound`` when the store can tell the
        secret is missing, ``TransientError`` when the store cannot be reached. Each error names the
        secret and the identity, never a value."""


class CachedSecrets(SecretStore):
    """Caches each (identity, secret) value for ``ttl_s`` seconds.

    A rotation therefore reaches tools at most ``ttl_s`` later, and a revoked grant stops being honoured
    at most ``ttl_s`` later; errors are never cached, so a fixed grant or a new version is seen on the
    next call."""

    def __init__(self, store: SecretStore, ttl_s: float = 60.0, clock: Clock | None = None) -> None:
        self._store = store
        self._ttl = timedelta(seconds=ttl_s)
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], tuple[str, datetime]] = {}

    def access(self, identity: str, secret: str) -> str:
        key = (identity, secret)
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and self._clock.now() < hit[1]:
                return hit[0]
        # Read outside the lock: a slow Secret Manager call must not hold up other tools' reads.
        value = self._store.access(identity, secret)
        with self._lock:
            self._values[key] = (value, self._clock.now() + self._ttl)
        return value

    def forget(self, identity: str | None = None, secret: str | None = None) -> None:
        """Drop cached values (all, or those of an identity and/or a secret): for a tool that knows its
        credential was just rotated or revoked."""
        with self._lock:
            for key in [k for k in self._values
                        if (identity is None or k[0] == identity) and (secret is None or k[1] == secret)]:
                del self._values[key]
