"""Secret Manager adapter of the secret store port: each read is made *as the agent's identity*, so the
secret-level IAM grants (roles/secretmanager.secretAccessor per agent service account) decide what a
tool may see, not the broader rights of the step function.

``clients(identity)`` returns a Secret Manager client acting as ``identity``:
- ``emulator_clients(host)`` locally: the emulator takes the identity from the bearer token;
- ``impersonated_clients()`` in the cloud: short-lived tokens minted by impersonating the agent's service
  account from the runtime's own credentials.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import google_crc32c
import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import secretmanager_v1
from google.iam.v1 import policy_pb2

from agex.core.errors import (
    ConfigurationError,
    SecretAccessDenied,
    SecretError,
    SecretNotFound,
    SecretUnavailable,
    TransientError,
)
from agex.ports.rules import check_secret_id
from agex.ports.secret_store import SecretStore

Client = secretmanager_v1.SecretManagerServiceClient
ACCESSOR = "roles/secretmanager.secretAccessor"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
              gexc.ResourceExhausted, gexc.Aborted, gexc.Unknown)
# Impersonation fails inside gRPC's credentials plugin, so it surfaces as a status whose message carries
# google-auth's text; matched to tell a missing token-creator grant from an outage.
_IMPERSONATION_FAILED = "Unable to acquire impersonated credentials"
_STATE = re.compile(r"is in (\w+) state")


class SecretManagerStore(SecretStore):
    def __init__(self, project: str, clients: Callable[[str], Client], *, timeout_s: float = 20.0) -> None:
        self.project = project.removeprefix("projects/")
        self._make_client = clients
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        # Outages are retried briefly here and then left to Cloud Tasks (TransientError), so a step never
        # spends its whole deadline waiting on Secret Manager.
        self._retry = gretry.Retry(initial=0.1, maximum=2.0, multiplier=2.0, timeout=timeout_s,
                                   predicate=gretry.if_exception_type(gexc.ServiceUnavailable,
                                                                      gexc.ResourceExhausted))

    def client(self, identity: str) -> Client:
        # One client (channel, token cache) per identity: creating one per read would mint a token and
        # open a connection every time a tool runs.
        with self._lock:
            c = self._clients.get(identity)
            if c is None:
                c = self._clients[identity] = self._make_client(identity)
            return c

    def secret_path(self, secret: str) -> str:
        return f"projects/{self.project}/secrets/{secret}"

    def access(self, identity: str, secret: str) -> str:
        check_secret_id(secret, identity)
        name = f"{self.secret_path(secret)}/versions/latest"
        try:
            response = self.client(identity).access_secret_version(
                name=name, retry=self._retry, timeout=self._timeout_s)
        except gexc.GoogleAPICallError as e:
            raise self._translate(e, identity, secret) from e
        except gexc.RetryError as e:
            raise TransientError(f"Secret Manager did not answer reading secret {secret} as {identity} "
                                 f"within {self._timeout_s:g}s") from e
        payload = response.payload
        if "data_crc32c" in payload and google_crc32c.value(payload.data) != payload.data_crc32c:
            # Corrupted in transit (the service stores the checksum of what it was given): a retry reads
            # a fresh copy.
            raise TransientError(f"the payload of secret {secret} read as {identity} failed its CRC32C check")
        try:
            return bytes(payload.data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise SecretError(f"the latest version of secret {secret} is not UTF-8 text: tools receive "
                              "secrets as strings (store binary values base64-encoded)",
                              secret=secret, identity=identity) from e

    def _translate(self, e: gexc.GoogleAPICallError, identity: str, secret: str) -> Exception:
        path = self.secret_path(secret)
        if _IMPERSONATION_FAILED in str(e) and not _looks_transient(str(e)):
            return SecretAccessDenied(
                f"cannot act as agent identity {identity} to read secret {secret}: the runtime's service "
                f"account needs {TOKEN_CREATOR} on {identity} ({e.message})",
                secret=secret, identity=identity)
        if isinstance(e, gexc.Unauthenticated):
            return SecretAccessDenied(
                f"Secret Manager did not accept the credentials of agent identity {identity} reading secret "
                f"{secret}: check that the identity exists and the runtime may act as it ({TOKEN_CREATOR})",
                secret=secret, identity=identity)
        if isinstance(e, gexc.PermissionDenied):
            return SecretAccessDenied(
                f"agent identity {identity} may not read secret {secret}: grant it {ACCESSOR} on {path} "
                "(or the secret does not exist)", secret=secret, identity=identity)
        if isinstance(e, gexc.NotFound):
            return SecretNotFound(f"secret {path} does not exist or has no versions: create it and add a "
                                  "version", secret=secret, identity=identity)
        if isinstance(e, gexc.FailedPrecondition):
            m = _STATE.search(e.message or "")
            state = m.group(1) if m else "not ENABLED"
            return SecretUnavailable(
                f"the latest version of secret {path} is {state}: add a new version"
                + (" or enable it" if state == "DISABLED" else ""), secret=secret, identity=identity)
        if isinstance(e, gexc.InvalidArgument):
            return SecretNotFound(f"Secret Manager refused the name {path}: {e.message}",
                                  secret=secret, identity=identity)
        if isinstance(e, _TRANSIENT):
            return TransientError(f"Secret Manager failed reading secret {secret} as {identity}: {e.message}")
        return SecretError(f"Secret Manager refused reading secret {secret} as {identity}: {e.message}",
                           secret=secret, identity=identity)


def _looks_transient(message: str) -> bool:
    # A token-creator problem answers 403 from the IAM credentials API; anything else (5xx, network) is
    # an outage of that API and worth retrying.
    return not any(s in message for s in ("PERMISSION_DENIED", "403", "iam.serviceAccounts.getAccessToken"))


# --- client factories ---------------------------------------------------------------------------------


def emulator_clients(host: str) -> Callable[[str], Client]:
    """Clients of the local Secret Manager emulator at ``host`` (``127.0.0.1:8086``), one per identity."""
    return lambda identity: emulator_client(host, identity)


def emulator_client(host: str, identity: str) -> Client:
    """The unmodified client over an insecure channel to the emulator, every call carrying
    ``authorization: Bearer <identity>``: there is no token service locally, so the emulator takes the
    bearer token for the identity (the stand-in for the access token it would present in the cloud)."""
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    return Client(transport=SecretManagerServiceGrpcTransport(channel=emulator_channel(host, identity)))


def emulator_channel(host: str, identity: str | None) -> grpc.Channel:
    """An insecure channel to ``host``; with ``identity`` None no token is sent."""
    channel = grpc.insecure_channel(host)
    return channel if identity is None else grpc.intercept_channel(channel, _BearerIdentity(identity))


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method, self.timeout, self.metadata, self.credentials = base.method, base.timeout, metadata, base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _BearerIdentity(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    def __init__(self, identity: str) -> None:
        self._header = ("authorization", f"Bearer {identity}")

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"]
        return continuation(_CallDetails(details, [*metadata, self._header]), request)


def own_clients() -> Callable[[str], Client]:
    """A client with the runtime's own credentials (``google.auth.default()``), for the secrets of the
    runtime itself (the API's decision signing key); ``identity`` only names it in errors."""
    client: list[Client] = []

    def make(identity: str) -> Client:
        if not client:
            client.append(Client())
        return client[0]

    return make


def impersonated_clients() -> Callable[[str], Client]:
    """Clients acting as each agent identity by service account impersonation.

    The source credentials are the runtime's own (``google.auth.default()``: the step function's service
    account). That account needs ``roles/iam.serviceAccountTokenCreator`` on **each agent identity** (and
    the IAM Credentials API enabled), and each agent identity needs
    ``roles/secretmanager.secretAccessor`` on exactly the secrets its tools declare. Tokens last an hour
    and are refreshed by google-auth as needed."""
    lock = threading.Lock()
    source: list[Any] = []

    def make(identity: str) -> Client:
        import google.auth
        from google.auth import impersonated_credentials

        with lock:
            if not source:
                credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
                source.append(credentials)
        target = impersonated_credentials.Credentials(
            source_credentials=source[0], target_principal=identity, target_scopes=[CLOUD_PLATFORM],
            lifetime=3600)
        return Client(credentials=target)

    return make


# --- provisioning (agex dev, tests) ---------------------------------------------------------------------


def ensure_secret(admin_client: Client, project: str, secret: str, value: str | None = None,
                  accessors: Iterable[str] = ()) -> str:
    """Make ``secret`` exist (automatic replication), add a version holding ``value`` if given, and set its
    IAM policy so that exactly ``accessors`` (service account emails) hold
    roles/secretmanager.secretAccessor; other roles' bindings are kept. Returns the secret's resource name.

    Declarative on purpose, like the Terraform it stands in for locally: calling it again with fewer
    accessors revokes the others. In the cloud, Terraform does this; the runtime never needs these rights.
    """
    parent = f"projects/{project.removeprefix('projects/')}"
    name = f"{parent}/secrets/{secret}"
    members = sorted({a if ":" in a else f"serviceAccount:{a}" for a in accessors})
    try:
        with contextlib.suppress(gexc.AlreadyExists):
            admin_client.create_secret(parent=parent, secret_id=secret, secret=secretmanager_v1.Secret(
                replication=secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())))
        if value is not None:
            data = value.encode("utf-8")
            admin_client.add_secret_version(
                parent=name, payload=secretmanager_v1.SecretPayload(data=data, data_crc32c=google_crc32c.value(data)))
        _set_accessors(admin_client, name, members)
    except gexc.PermissionDenied as e:
        raise ConfigurationError(f"the admin identity may not provision secret {name}: {e.message}") from e
    except (gexc.GoogleAPICallError, gexc.RetryError) as e:
        raise TransientError(f"provisioning secret {name} failed: {e}") from e
    return name


def _set_accessors(client: Client, name: str, members: list[str]) -> None:
    for _ in range(5):  # read-modify-write under the policy's etag; retried on concurrent changes
        policy = client.get_iam_policy(request={"resource": name})
        kept = [b for b in policy.bindings if b.role != ACCESSOR or b.HasField("condition")]
        if members:
            kept.append(policy_pb2.Binding(role=ACCESSOR, members=members))
        new = policy_pb2.Policy(version=policy.version, etag=policy.etag, bindings=kept)
        try:
            client.set_iam_policy(request={"resource": name, "policy": new})
            return
        except gexc.Aborted:
            continue
    raise TransientError(f"the IAM policy of {name} kept changing under us; try again")
