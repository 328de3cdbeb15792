"""The secret store port: the in-memory store and the Secret Manager adapter on our emulator pass the same
tests, read as agent identities with per-secret grants provisioned by an admin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from agex.adapters.gcp.secret_manager import (
    SecretManagerStore,
    emulator_clients,
    ensure_secret,
    impersonated_clients,
)
from agex.adapters.inmemory.secret_store import InMemorySecretStore
from agex.core.errors import SecretAccessDenied, SecretNotFound, SecretUnavailable, TransientError
from agex.dev.emulators.gcloud import free_port
from agex.ports.secret_store import SecretStore
from tests.emulator_process import python_emulator

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "agex-local"
ADMIN = "admin@agex-local.iam.gserviceaccount.com"
AGENT_A = "agent-a@agex-local.iam.gserviceaccount.com"
AGENT_B = "agent-b@agex-local.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def secretmanager_emulator() -> Iterator[str]:
    port = free_port()
    with python_emulator("agex.dev.emulators.secretmanager", "--host", "127.0.0.1", "--port", str(port), "--admin", ADMIN):
        yield f"127.0.0.1:{port}"


class Secrets:
    """A store under test plus the admin side: what Terraform or an operator does to its secrets."""

    store: SecretStore

    def provision(self, secret: str, value: str | None, accessors: list[str]) -> None:
        raise NotImplementedError

    def add_version(self, secret: str, value: str) -> int:
        raise NotImplementedError

    def disable(self, secret: str, version: int) -> None:
        raise NotImplementedError

    def enable(self, secret: str, version: int) -> None:
        raise NotImplementedError

    def destroy(self, secret: str, version: int) -> None:
        raise NotImplementedError


class MemorySecrets(Secrets):
    def __init__(self) -> None:
        self.mem = InMemorySecretStore(admins=[ADMIN])
        self.store = self.mem

    def provision(self, secret: str, value: str | None, accessors: list[str]) -> None:
        if value is not None:
            self.mem.add_version(secret, value)
        for a in accessors:
            self.mem.grant(secret, a)

    def add_version(self, secret: str, value: str) -> int:
        return self.mem.add_version(secret, value)

    def disable(self, secret: str, version: int) -> None:
        self.mem.disable(secret, version)

    def enable(self, secret: str, version: int) -> None:
        self.mem.enable(secret, version)

    def destroy(self, secret: str, version: int) -> None:
        self.mem.destroy(secret, version)


class EmulatorSecrets(Secrets):
    def __init__(self, host: str) -> None:
        self.clients = emulator_clients(host)
        self.admin: Any = self.clients(ADMIN)
        self.store = SecretManagerStore(PROJECT, self.clients)

    def provision(self, secret: str, value: str | None, accessors: list[str]) -> None:
        ensure_secret(self.admin, PROJECT, secret, value, accessors)

    def add_version(self, secret: str, value: str) -> int:
        v = self.admin.add_secret_version(parent=f"projects/{PROJECT}/secrets/{secret}",
                                          payload={"data": value.encode()})
        return int(v.name.rsplit("/", 1)[1])

    def _name(self, secret: str, version: int) -> str:
        return f"projects/{PROJECT}/secrets/{secret}/versions/{version}"

    def disable(self, secret: str, version: int) -> None:
        self.admin.disable_secret_version(name=self._name(secret, version))

    def enable(self, secret: str, version: int) -> None:
        self.admin.enable_secret_version(name=self._name(secret, version))

    def destroy(self, secret: str, version: int) -> None:
        self.admin.destroy_secret_version(name=self._name(secret, version))


@pytest.fixture(params=["memory", "secretmanager"])
def secrets(request: pytest.FixtureRequest) -> Secrets:
    if request.param == "memory":
        return MemorySecrets()
    return EmulatorSecrets(request.getfixturevalue("secretmanager_emulator"))


def new_name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_agent_reads_its_secret(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, "tok-for-a-1", [AGENT_A])
    assert secrets.store.access(AGENT_A, name) == "tok-for-a-1"
    # A grant names an email, whatever its case.
    assert secrets.store.access(AGENT_A.upper(), name) == "tok-for-a-1"


def test_agent_cannot_read_another_agents_secret(secrets: Secrets) -> None:
    mine, theirs = new_name(), new_name()
    secrets.provision(mine, "tok-a", [AGENT_A])
    secrets.provision(theirs, "tok-b", [AGENT_B])
    with pytest.raises(SecretAccessDenied) as denied:
        secrets.store.access(AGENT_A, theirs)
    e = denied.value
    assert (e.secret, e.identity) == (theirs, AGENT_A)
    assert theirs in e.message and AGENT_A in e.message
    assert "roles/secretmanager.secretAccessor" in e.message and "tok-b" not in e.message
    assert secrets.store.access(AGENT_B, theirs) == "tok-b"


def test_missing_secret_is_denied_to_agents_and_not_found_for_admins(secrets: Secrets) -> None:
    # Secret Manager never tells an identity without a grant whether a secret exists.
    missing = new_name()
    with pytest.raises(SecretAccessDenied) as denied:
        secrets.store.access(AGENT_A, missing)
    assert (denied.value.secret, denied.value.identity) == (missing, AGENT_A)
    with pytest.raises(SecretNotFound):
        secrets.store.access(ADMIN, missing)


def test_granted_secret_without_versions_is_not_found(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, None, [AGENT_A])
    with pytest.raises(SecretNotFound) as missing:
        secrets.store.access(AGENT_A, name)
    assert name in missing.value.message


@pytest.mark.parametrize("name", ["other-project/secrets/x", "key\n", "", "x" * 256])
def test_invalid_secret_id_is_not_found(secrets: Secrets, name: str) -> None:
    with pytest.raises(SecretNotFound):
        secrets.store.access(AGENT_A, name)


def test_disabled_latest_is_unavailable_without_fallback(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, "v1-value", [AGENT_A])
    v2 = secrets.add_version(name, "v2-value")
    secrets.disable(name, v2)
    with pytest.raises(SecretUnavailable, match="DISABLED") as unavailable:
        secrets.store.access(AGENT_A, name)
    assert (unavailable.value.secret, unavailable.value.identity) == (name, AGENT_A)
    secrets.enable(name, v2)
    assert secrets.store.access(AGENT_A, name) == "v2-value"


def test_destroyed_latest_is_unavailable(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, "v1-value", [AGENT_A])
    v2 = secrets.add_version(name, "v2-value")
    secrets.destroy(name, v2)
    with pytest.raises(SecretUnavailable, match="DESTROYED"):
        secrets.store.access(AGENT_A, name)
    # A new version makes the secret usable again (numbers are never reused).
    assert secrets.add_version(name, "v3-value") == v2 + 1
    assert secrets.store.access(AGENT_A, name) == "v3-value"


def test_rotation_is_seen_on_next_access(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, "old-token", [AGENT_A])
    assert secrets.store.access(AGENT_A, name) == "old-token"
    secrets.provision(name, "new-token", [AGENT_A])
    assert secrets.store.access(AGENT_A, name) == "new-token"


def test_unicode_values_round_trip(secrets: Secrets) -> None:
    name = new_name()
    secrets.provision(name, "pässwörd-✓\n", [AGENT_A])
    assert secrets.store.access(AGENT_A, name) == "pässwörd-✓\n"


# --- Secret Manager specifics ---------------------------------------------------------------------------


def test_ensure_secret_sets_exactly_the_accessors(secretmanager_emulator: str) -> None:
    s = EmulatorSecrets(secretmanager_emulator)
    name = new_name()
    resource = ensure_secret(s.admin, PROJECT, name, "shared-value", [AGENT_A, AGENT_B])
    assert resource == f"projects/{PROJECT}/secrets/{name}"
    assert s.store.access(AGENT_B, name) == "shared-value"
    ensure_secret(s.admin, PROJECT, name, accessors=[AGENT_A])  # declarative: B loses its grant
    with pytest.raises(SecretAccessDenied):
        s.store.access(AGENT_B, name)
    assert s.store.access(AGENT_A, name) == "shared-value"  # no value: no new version
    policy = s.admin.get_iam_policy(request={"resource": resource})
    assert [(b.role, list(b.members)) for b in policy.bindings] == [
        ("roles/secretmanager.secretAccessor", [f"serviceAccount:{AGENT_A}"])]


def test_one_client_per_identity(secretmanager_emulator: str) -> None:
    made: list[str] = []
    clients = emulator_clients(secretmanager_emulator)

    def counting(identity: str) -> Any:
        made.append(identity)
        return clients(identity)

    store = SecretManagerStore(f"projects/{PROJECT}", counting)
    name = new_name()
    ensure_secret(clients(ADMIN), PROJECT, name, "value-1", [AGENT_A])
    for _ in range(3):
        assert store.access(AGENT_A, name) == "value-1"
    with pytest.raises(SecretAccessDenied):
        store.access(AGENT_B, name)
    assert made == [AGENT_A, AGENT_B]


def test_unreachable_service_is_transient() -> None:
    store = SecretManagerStore(PROJECT, emulator_clients(f"127.0.0.1:{free_port()}"), timeout_s=1.0)
    with pytest.raises(TransientError):
        store.access(AGENT_A, "anything")


class _FakeClient:
    def __init__(self, data: bytes, checksum: int) -> None:
        self.data, self.checksum = data, checksum

    def access_secret_version(self, **_: Any) -> Any:
        from google.cloud import secretmanager_v1

        payload = secretmanager_v1.SecretPayload(data=self.data, data_crc32c=self.checksum)
        return secretmanager_v1.AccessSecretVersionResponse(name="x", payload=payload)


def test_payload_checksum_is_verified() -> None:
    good = SecretManagerStore(PROJECT, lambda _: _FakeClient(b"value", google_crc32c.value(b"value")))  # type: ignore[arg-type,return-value]
    assert good.access(AGENT_A, "s") == "value"
    bad = SecretManagerStore(PROJECT, lambda _: _FakeClient(b"value", google_crc32c.value(b"valuf")))  # type: ignore[arg-type,return-value]
    with pytest.raises(TransientError, match="CRC32C"):
        bad.access(AGENT_A, "s")
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the standard check value


class _Raising:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def access_secret_version(self, **_: Any) -> Any:
        raise self.error


def test_missing_token_creator_grant_is_access_denied_not_an_outage() -> None:
    from google.api_core import exceptions as gexc

    # What gRPC reports when google-auth cannot mint the impersonated token (403 from IAM Credentials).
    refused = gexc.InternalServerError(
        "Getting metadata from plugin failed with error: ('Unable to acquire impersonated credentials', "
        "'{\"error\": {\"code\": 403, \"status\": \"PERMISSION_DENIED\", \"message\": "
        "\"Permission iam.serviceAccounts.getAccessToken denied\"}}')")
    store = SecretManagerStore(PROJECT, lambda _: _Raising(refused))  # type: ignore[arg-type,return-value]
    with pytest.raises(SecretAccessDenied, match="roles/iam.serviceAccountTokenCreator") as denied:
        store.access(AGENT_A, "s")
    assert denied.value.identity == AGENT_A

    outage = gexc.InternalServerError(
        "Getting metadata from plugin failed with error: ('Unable to acquire impersonated credentials', "
        "'{\"error\": {\"code\": 503, \"status\": \"UNAVAILABLE\"}}')")
    store = SecretManagerStore(PROJECT, lambda _: _Raising(outage))  # type: ignore[arg-type,return-value]
    with pytest.raises(TransientError):
        store.access(AGENT_A, "s")


def test_impersonated_clients_act_as_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth import credentials as gcredentials
    from google.auth import impersonated_credentials

    calls: list[Any] = []

    def fake_default(scopes: Any = None, **_: Any) -> Any:
        calls.append(scopes)
        return gcredentials.AnonymousCredentials(), "p"

    monkeypatch.setattr(google.auth, "default", fake_default)
    make = impersonated_clients()
    client = make(AGENT_A)
    make(AGENT_B)
    creds = client._transport._credentials
    assert isinstance(creds, impersonated_credentials.Credentials)
    assert creds.service_account_email == AGENT_A
    assert calls == [["https://www.googleapis.com/auth/cloud-platform"]]  # source credentials read once
