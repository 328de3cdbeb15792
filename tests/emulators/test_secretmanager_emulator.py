"""End-to-end tests of the Secret Manager emulator through the unmodified client library."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from google.iam.v1 import policy_pb2

from agex.dev.emulators.gcloud import free_port
from agex.dev.emulators.secretmanager.client import make_channel, make_client
from tests.emulator_process import python_emulator

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "projects/agex-local"
ADMIN = "deployer@agex-local.iam.gserviceaccount.com"
AGENT_A = "agent-a@agex-local.iam.gserviceaccount.com"
AGENT_B = "agent-b@agex-local.iam.gserviceaccount.com"
ACCESSOR = "roles/secretmanager.secretAccessor"

SM = secretmanager_v1
State = SM.SecretVersion.State
AUTOMATIC = SM.Secret(replication=SM.Replication(automatic=SM.Replication.Automatic()))


@dataclass
class Emulator:
    addr: str


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    port = free_port()
    with python_emulator("agex.dev.emulators.secretmanager", "--host", "127.0.0.1", "--port", str(port),
                         "--admin", ADMIN) as ready:
        assert ready == f"READY grpc=127.0.0.1:{port}"
        yield Emulator(f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def admin(emulator: Emulator) -> SM.SecretManagerServiceClient:
    return make_client(emulator.addr, ADMIN)


def _new_secret(admin: SM.SecretManagerServiceClient, *payloads: bytes) -> str:
    secret = admin.create_secret(
        parent=PROJECT,
        secret_id=f"s-{uuid.uuid4().hex[:10]}",
        secret=AUTOMATIC,
    )
    for data in payloads:
        admin.add_secret_version(parent=secret.name, payload=SM.SecretPayload(data=data))
    return secret.name


def _grant(admin: SM.SecretManagerServiceClient, secret: str, role: str, email: str) -> None:
    policy = admin.get_iam_policy(request={"resource": secret})
    policy.bindings.add(role=role, members=[f"serviceAccount:{email}"])
    admin.set_iam_policy(request={"resource": secret, "policy": policy})


def test_create_add_access_by_number_and_latest(admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin)
    v1 = admin.add_secret_version(
        parent=name, payload=SM.SecretPayload(data=b"one", data_crc32c=google_crc32c.value(b"one"))
    )
    v2 = admin.add_secret_version(parent=name, payload=SM.SecretPayload(data=b"two"))
    assert (v1.name, v2.name) == (f"{name}/versions/1", f"{name}/versions/2")
    assert v1.state == State.ENABLED and v1.client_specified_payload_checksum
    assert not v2.client_specified_payload_checksum

    first = admin.access_secret_version(name=f"{name}/versions/1")
    assert first.payload.data == b"one" and first.payload.data_crc32c == google_crc32c.value(b"one")
    latest = admin.access_secret_version(name=f"{name}/versions/latest")
    assert latest.name == f"{name}/versions/2" and latest.payload.data == b"two"
    assert admin.get_secret(name=name).replication.automatic is not None

    with pytest.raises(api_exceptions.AlreadyExists):
        admin.create_secret(parent=PROJECT, secret_id=name.rsplit("/", 1)[1], secret=AUTOMATIC)
    with pytest.raises(api_exceptions.InvalidArgument):  # replication is required
        admin.create_secret(parent=PROJECT, secret_id="no-replication", secret=SM.Secret())


def test_disabled_and_destroyed_versions_are_refused(admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin, b"v1", b"v2")
    admin.disable_secret_version(name=f"{name}/versions/2")
    with pytest.raises(api_exceptions.FailedPrecondition, match=r"versions/2\] is in DISABLED state"):
        admin.access_secret_version(name=f"{name}/versions/2")
    # As in the service, "latest" is the newest version whatever its state: it
    # does not fall back to version 1.
    with pytest.raises(api_exceptions.FailedPrecondition, match="DISABLED"):
        admin.access_secret_version(name=f"{name}/versions/latest")
    assert admin.access_secret_version(name=f"{name}/versions/1").payload.data == b"v1"

    admin.enable_secret_version(name=f"{name}/versions/2")
    assert admin.access_secret_version(name=f"{name}/versions/latest").payload.data == b"v2"

    destroyed = admin.destroy_secret_version(name=f"{name}/versions/2")
    assert destroyed.state == State.DESTROYED and destroyed.destroy_time is not None
    with pytest.raises(api_exceptions.FailedPrecondition, match="DESTROYED"):
        admin.access_secret_version(name=f"{name}/versions/2")
    with pytest.raises(api_exceptions.FailedPrecondition):  # destruction is final
        admin.enable_secret_version(name=f"{name}/versions/2")
    with pytest.raises(api_exceptions.NotFound):
        admin.access_secret_version(name=f"{name}/versions/9")
    with pytest.raises(api_exceptions.NotFound):
        admin.access_secret_version(name=f"{PROJECT}/secrets/never-created/versions/latest")
    # Numbers are never reused after a destroy.
    assert admin.add_secret_version(parent=name, payload=SM.SecretPayload(data=b"v3")).name.endswith(
        "/versions/3"
    )


def test_payload_checks(admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin)
    with pytest.raises(api_exceptions.InvalidArgument, match="Checksum"):
        admin.add_secret_version(
            parent=name, payload=SM.SecretPayload(data=b"abc", data_crc32c=google_crc32c.value(b"abd"))
        )
    with pytest.raises(api_exceptions.InvalidArgument):
        admin.add_secret_version(parent=name, payload=SM.SecretPayload(data=b"x" * (64 * 1024 + 1)))
    assert admin.add_secret_version(
        parent=name, payload=SM.SecretPayload(data=b"x" * (64 * 1024))
    ).name.endswith("/1")
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the standard CRC32C check value


def test_list_paging(admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin, b"1", b"2", b"3", b"4", b"5")
    pages = list(admin.list_secret_versions(request={"parent": name, "page_size": 2}).pages)
    assert [len(p.versions) for p in pages] == [2, 2, 1]
    numbers = [int(v.name.rsplit("/", 1)[1]) for p in pages for v in p.versions]
    assert numbers == [5, 4, 3, 2, 1]  # newest first

    project = f"projects/paging-{uuid.uuid4().hex[:6]}"
    for i in range(5):
        admin.create_secret(parent=project, secret_id=f"s{i}", secret=AUTOMATIC)
    secret_pages = list(admin.list_secrets(request={"parent": project, "page_size": 3}).pages)
    assert [len(p.secrets) for p in secret_pages] == [3, 2]
    assert [s.name for p in secret_pages for s in p.secrets] == [f"{project}/secrets/s{i}" for i in range(5)]
    assert secret_pages[0].total_size == 5

    admin.delete_secret(name=f"{project}/secrets/s0")
    with pytest.raises(api_exceptions.NotFound):
        admin.get_secret(name=f"{project}/secrets/s0")


def test_accessor_grant_is_per_secret(emulator: Emulator, admin: SM.SecretManagerServiceClient) -> None:
    x = _new_secret(admin, b"for-a")
    y = _new_secret(admin, b"for-b")
    _grant(admin, x, ACCESSOR, AGENT_A)
    _grant(admin, y, ACCESSOR, AGENT_B)
    agent_a = make_client(emulator.addr, AGENT_A)

    assert agent_a.access_secret_version(name=f"{x}/versions/latest").payload.data == b"for-a"
    with pytest.raises(api_exceptions.PermissionDenied) as denied:
        agent_a.access_secret_version(name=f"{y}/versions/latest")
    assert denied.value.message == (
        f"Permission 'secretmanager.versions.access' denied for resource '{y}/versions/latest' "
        "(or it may not exist)."
    )
    # Accessor grants no metadata reads, and a missing secret looks the same as a forbidden one.
    with pytest.raises(api_exceptions.PermissionDenied):
        agent_a.get_secret(name=x)
    with pytest.raises(api_exceptions.PermissionDenied):
        agent_a.access_secret_version(name=f"{PROJECT}/secrets/absent/versions/1")

    # The identity may also arrive as an unsigned JWT with an email claim.
    claims = base64.urlsafe_b64encode(json.dumps({"email": AGENT_B}).encode()).decode().rstrip("=")
    agent_b = make_client(emulator.addr, f"eyJhbGciOiJub25lIn0.{claims}.")
    assert agent_b.access_secret_version(name=f"{y}/versions/1").payload.data == b"for-b"
    with pytest.raises(api_exceptions.PermissionDenied):
        agent_b.access_secret_version(name=f"{x}/versions/1")


def test_no_token_is_unauthenticated(emulator: Emulator, admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin, b"v")
    anonymous = SM.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=make_channel(emulator.addr, None))
    )
    with pytest.raises(api_exceptions.Unauthenticated):
        anonymous.access_secret_version(name=f"{name}/versions/1")


def test_set_iam_policy_with_stale_etag_is_aborted(admin: SM.SecretManagerServiceClient) -> None:
    name = _new_secret(admin)
    stale = admin.get_iam_policy(request={"resource": name})
    _grant(admin, name, ACCESSOR, AGENT_A)
    stale.bindings.add(role=ACCESSOR, members=[f"serviceAccount:{AGENT_B}"])
    with pytest.raises(api_exceptions.Aborted):
        admin.set_iam_policy(request={"resource": name, "policy": stale})
    # Without an etag the write is unconditional, as in IAM.
    unconditional = policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role=ACCESSOR, members=[f"user:{AGENT_B}"])]
    )
    stored = admin.set_iam_policy(request={"resource": name, "policy": unconditional})
    assert [list(b.members) for b in stored.bindings] == [[f"user:{AGENT_B}"]] and stored.etag
    with pytest.raises(api_exceptions.InvalidArgument):
        bad = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/nope", members=["user:x@y.z"])])
        admin.set_iam_policy(request={"resource": name, "policy": bad})


def test_test_iam_permissions_returns_held_subset(
    emulator: Emulator, admin: SM.SecretManagerServiceClient
) -> None:
    name = _new_secret(admin, b"v")
    _grant(admin, name, "roles/secretmanager.secretVersionManager", AGENT_A)
    asked = [
        "secretmanager.versions.access",
        "secretmanager.versions.add",
        "secretmanager.versions.list",
        "secretmanager.secrets.delete",
    ]
    agent_a = make_client(emulator.addr, AGENT_A)
    held = agent_a.test_iam_permissions(request={"resource": name, "permissions": asked})
    assert list(held.permissions) == ["secretmanager.versions.add", "secretmanager.versions.list"]
    assert (
        list(admin.test_iam_permissions(request={"resource": name, "permissions": asked}).permissions)
        == asked
    )
    nobody = make_client(emulator.addr, AGENT_B)
    assert (
        list(nobody.test_iam_permissions(request={"resource": name, "permissions": asked}).permissions) == []
    )
    # Version manager may add and disable, but not read payloads.
    agent_a.add_secret_version(parent=name, payload=SM.SecretPayload(data=b"w"))
    agent_a.disable_secret_version(name=f"{name}/versions/1")
    with pytest.raises(api_exceptions.PermissionDenied):
        agent_a.access_secret_version(name=f"{name}/versions/2")


def test_non_admin_cannot_create_or_list_secrets(emulator: Emulator) -> None:
    agent = make_client(emulator.addr, AGENT_A)
    with pytest.raises(api_exceptions.PermissionDenied, match="secretmanager.secrets.create"):
        agent.create_secret(parent=PROJECT, secret_id="sneaky", secret=AUTOMATIC)
    with pytest.raises(api_exceptions.PermissionDenied):
        list(agent.list_secrets(parent=PROJECT))
