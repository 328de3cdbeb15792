"""The real client library wired to the emulator as a given identity.

``make_client(host, identity)`` returns an unmodified
``SecretManagerServiceClient`` over an insecure channel whose every call
carries ``authorization: Bearer <identity>`` — the local stand-in for the
access token the identity would present in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from .identity import bearer_token


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"]
        metadata.append(self._header)
        return continuation(_ClientCallDetails(details, metadata), request)


def make_channel(host: str, identity: str | None) -> grpc.Channel:
    """An insecure channel to ``host``; with ``identity`` None no token is sent."""
    channel = grpc.insecure_channel(host)
    if identity is None:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(bearer_token(identity)))


def make_client(host: str, identity: str) -> secretmanager_v1.SecretManagerServiceClient:
    transport = SecretManagerServiceGrpcTransport(channel=make_channel(host, identity))
    return secretmanager_v1.SecretManagerServiceClient(transport=transport)
