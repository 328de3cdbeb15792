"""gRPC service ``google.cloud.secretmanager.v1.SecretManagerService``.

Every call is authenticated (bearer token → email) and authorized before it
touches the store, in that order, as the service does: a caller without the
permission gets PERMISSION_DENIED whether or not the secret exists. RPCs not
listed here (UpdateSecret, rotation, locations) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import google_crc32c
import grpc

from agex.dev.emulators.grpc_service import bind_server, generic_handler

from . import iam, names, protos
from .errors import ApiError, permission_denied
from .identity import caller_email
from .state import Store

log = logging.getLogger(__name__)

SERVICE_NAME = "google.cloud.secretmanager.v1.SecretManagerService"


class SecretManagerService:
    def __init__(self, store: Store, admins: Iterable[str]) -> None:
        self._store = store
        self._admins = frozenset(a.lower() for a in admins)

    # -- authorization -------------------------------------------------------------

    def _held(self, caller: str, secret_name: str | None) -> set[str]:
        if caller.lower() in self._admins:
            return set(iam.ALL_PERMISSIONS)
        # Project-level permissions (create/list secrets) are only held by
        # admins; ordinary identities only have grants on individual secrets.
        policy = self._store.policy(secret_name) if secret_name else None
        return iam.permissions_of(policy, caller) if policy is not None else set()

    def _require(self, caller: str, permission: str, secret_name: str | None, resource: str) -> None:
        if permission not in self._held(caller, secret_name):
            raise permission_denied(permission, resource)

    # -- secrets -------------------------------------------------------------------

    def create_secret(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.SECRETS_CREATE, None, req.parent)
        return self._store.create_secret(req.parent, req.secret_id, req.secret)

    def get_secret(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.SECRETS_GET, names.parse_secret(req.name), req.name)
        return self._store.get_secret(req.name)

    def list_secrets(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.SECRETS_LIST, None, req.parent)
        page = self._store.list_secrets(req.parent, req.page_size, req.page_token, req.filter)
        return protos.ListSecretsResponse(
            secrets=page.items, next_page_token=page.next_token, total_size=page.total
        )

    def delete_secret(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.SECRETS_DELETE, names.parse_secret(req.name), req.name)
        self._store.delete_secret(req.name, req.etag)
        return protos.Empty()

    # -- versions ------------------------------------------------------------------

    def add_secret_version(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.VERSIONS_ADD, names.parse_secret(req.parent), req.parent)
        return self._store.add_version(req.parent, req.payload)

    def get_secret_version(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.VERSIONS_GET, names.parse_version(req.name).secret, req.name)
        return self._store.get_version(req.name)

    def list_secret_versions(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.VERSIONS_LIST, names.parse_secret(req.parent), req.parent)
        page = self._store.list_versions(req.parent, req.page_size, req.page_token, req.filter)
        return protos.ListSecretVersionsResponse(
            versions=page.items, next_page_token=page.next_token, total_size=page.total
        )

    def access_secret_version(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.ACCESS, names.parse_version(req.name).secret, req.name)
        name, data = self._store.access_version(req.name)
        # The response names the resolved version ("latest" → its number) and
        # always carries the checksum so clients can verify the payload.
        return protos.AccessSecretVersionResponse(
            name=name, payload=protos.SecretPayload(data=data, data_crc32c=google_crc32c.value(data))
        )

    def _set_state(self, permission: str, state: int) -> Callable[[Any, str], Any]:
        def call(req: Any, caller: str) -> Any:
            self._require(caller, permission, names.parse_version(req.name).secret, req.name)
            return self._store.set_version_state(req.name, state, req.etag)

        return call

    # -- IAM -----------------------------------------------------------------------

    def get_iam_policy(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.GET_IAM_POLICY, names.parse_secret(req.resource), req.resource)
        return self._store.get_iam_policy(req.resource)

    def set_iam_policy(self, req: Any, caller: str) -> Any:
        self._require(caller, iam.SET_IAM_POLICY, names.parse_secret(req.resource), req.resource)
        if req.HasField("update_mask") and set(req.update_mask.paths) - {"bindings", "etag"}:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "update_mask may only name bindings and etag.")
        return self._store.set_iam_policy(req.resource, req.policy)

    def test_iam_permissions(self, req: Any, caller: str) -> Any:
        # Needs no permission itself: it only reports what the caller holds.
        secret = names.parse_secret(req.resource)
        held = self._held(caller, secret)
        if caller.lower() in self._admins:
            self._store.get_secret(secret)  # NOT_FOUND for admins, who may know
        return protos.TestIamPermissionsResponse(permissions=[p for p in req.permissions if p in held])

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[[Any, str], Any], Any]] = {
            "CreateSecret": (self.create_secret, protos.CreateSecretRequest),
            "GetSecret": (self.get_secret, protos.GetSecretRequest),
            "ListSecrets": (self.list_secrets, protos.ListSecretsRequest),
            "DeleteSecret": (self.delete_secret, protos.DeleteSecretRequest),
            "AddSecretVersion": (self.add_secret_version, protos.AddSecretVersionRequest),
            "GetSecretVersion": (self.get_secret_version, protos.GetSecretVersionRequest),
            "ListSecretVersions": (self.list_secret_versions, protos.ListSecretVersionsRequest),
            "AccessSecretVersion": (self.access_secret_version, protos.AccessSecretVersionRequest),
            "EnableSecretVersion": (
                self._set_state(iam.VERSIONS_ENABLE, protos.STATE_ENABLED),
                protos.EnableSecretVersionRequest,
            ),
            "DisableSecretVersion": (
                self._set_state(iam.VERSIONS_DISABLE, protos.STATE_DISABLED),
                protos.DisableSecretVersionRequest,
            ),
            "DestroySecretVersion": (
                self._set_state(iam.VERSIONS_DESTROY, protos.STATE_DESTROYED),
                protos.DestroySecretVersionRequest,
            ),
            "GetIamPolicy": (self.get_iam_policy, protos.GetIamPolicyRequest),
            "SetIamPolicy": (self.set_iam_policy, protos.SetIamPolicyRequest),
            "TestIamPermissions": (self.test_iam_permissions, protos.TestIamPermissionsRequest),
        }
        # every call is made with the caller's identity, from the bearer token of its metadata
        return generic_handler(SERVICE_NAME, methods, log, invoke=lambda fn, request, context: fn(
            request, caller_email(context.invocation_metadata())))


def build_grpc_server(
    service: SecretManagerService, host: str, port: int, workers: int = 8
) -> tuple[grpc.Server, int]:
    """Create and bind (not start) the server; returns it with the bound port."""
    return bind_server(service.handler(), host, port, workers=workers, name="secretmanager")
