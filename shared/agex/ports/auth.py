"""Authenticator port: who is calling. An authenticator yields a tenant and a principal for every API
request (static tokens locally, Google ID tokens in the cloud)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from agex.core.errors import Unauthenticated


@dataclass(frozen=True)
class Caller:
    tenant: str
    principal: str


class Authenticator(abc.ABC):
    @abc.abstractmethod
    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Raise ``Unauthenticated`` when the request does not prove who it is."""


def bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    return token.strip()
