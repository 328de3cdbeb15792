"""In-memory secret store with Secret Manager's semantics, for tests and ``agex dev`` without agex.dev.emulators.

What it keeps from the service, because code above the port relies on it:
- reads need a per-secret grant (secretAccessor); an identity without one is denied whether or not the
  secret exists, so a tool cannot probe for names it may not see;
- ``latest`` is the newest version whatever its state: a disabled or destroyed newest version makes the
  read fail instead of falling back to an older one;
- version numbers count from 1 and are never reused; destruction is final.

``admins`` play project-level Secret Manager admins: they may read everything, so they learn that a secret
is missing (``SecretNotFound``) where an agent identity is only denied.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from agex.core.errors import SecretAccessDenied, SecretNotFound, SecretUnavailable
from agex.ports.rules import SECRET_ID_RULE, check_secret_id, valid_secret_id
from agex.ports.secret_store import SecretStore

ACCESSOR = "roles/secretmanager.secretAccessor"


class VersionState(Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    DESTROYED = "DESTROYED"


@dataclass
class _Version:
    value: str | None  # None once destroyed: the payload is gone for good
    state: VersionState = VersionState.ENABLED


@dataclass
class _Secret:
    versions: dict[int, _Version] = field(default_factory=dict)
    next_version: int = 1
    accessors: set[str] = field(default_factory=set)


class InMemorySecretStore(SecretStore):
    def __init__(self, admins: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}
        self._admins = {a.lower() for a in admins}

    # --- the port ------------------------------------------------------------------------------------

    def access(self, identity: str, secret: str) -> str:
        check_secret_id(secret, identity)  # as the service: a name that works here works in the cloud
        with self._lock:
            s = self._secrets.get(secret)
            if not self._may_read(identity, s):
                raise SecretAccessDenied(
                    f"agent identity {identity} may not read secret {secret}: grant it {ACCESSOR} on "
                    f"secret {secret}",
                    secret=secret, identity=identity)
            if s is None or not s.versions:
                raise SecretNotFound(f"secret {secret} does not exist or has no versions: add one",
                                     secret=secret, identity=identity)
            number = max(s.versions)
            v = s.versions[number]
            if v.state is not VersionState.ENABLED or v.value is None:
                raise SecretUnavailable(
                    f"the latest version ({number}) of secret {secret} is {v.state.value}: add a new "
                    "version" + (" or enable it" if v.state is VersionState.DISABLED else ""),
                    secret=secret, identity=identity)
            return v.value

    def _may_read(self, identity: str, s: _Secret | None) -> bool:
        if identity.lower() in self._admins:
            return True
        return s is not None and identity.lower() in s.accessors

    # --- administration (what Terraform or an operator does) -----------------------------------------

    def add_version(self, secret: str, value: str) -> int:
        """Add a version holding ``value`` (creating the secret if needed); returns its number."""
        self._check_id(secret)
        with self._lock:
            s = self._secrets.setdefault(secret, _Secret())
            number = s.next_version
            s.next_version += 1
            s.versions[number] = _Version(value)
            return number

    def grant(self, secret: str, identity: str) -> None:
        """Let ``identity`` read ``secret`` (roles/secretmanager.secretAccessor on the secret). Creates an
        empty secret if needed: in the service the secret must exist first, and reading it without a
        version answers NOT_FOUND, as here."""
        self._check_id(secret)
        with self._lock:
            self._secrets.setdefault(secret, _Secret()).accessors.add(identity.lower())

    def revoke(self, secret: str, identity: str) -> None:
        with self._lock:
            s = self._secrets.get(secret)
            if s is not None:
                s.accessors.discard(identity.lower())

    def disable(self, secret: str, version: int) -> None:
        self._set_state(secret, version, VersionState.DISABLED)

    def enable(self, secret: str, version: int) -> None:
        self._set_state(secret, version, VersionState.ENABLED)

    def destroy(self, secret: str, version: int) -> None:
        self._set_state(secret, version, VersionState.DESTROYED)

    def _set_state(self, secret: str, version: int, state: VersionState) -> None:
        with self._lock:
            s = self._secrets.get(secret)
            v = s.versions.get(version) if s is not None else None
            if v is None:
                raise SecretNotFound(f"secret {secret} has no version {version}", secret=secret, identity="")
            if v.state is VersionState.DESTROYED:
                if state is VersionState.DESTROYED:
                    return
                raise SecretUnavailable(
                    f"version {version} of secret {secret} is DESTROYED: destruction is final",
                    secret=secret, identity="")
            v.state = state
            if state is VersionState.DESTROYED:
                v.value = None

    @staticmethod
    def _check_id(secret: str) -> None:
        if not valid_secret_id(secret):
            raise ValueError(f"{secret!r} is not a valid secret id ({SECRET_ID_RULE})")
