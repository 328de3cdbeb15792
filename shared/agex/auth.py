"""Who is calling: a pluggable authenticator yields a tenant and a principal for every API request."""

from __future__ import annotations

import abc
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from agex.errors import ConfigurationError, Unauthenticated


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


class StaticTokenAuthenticator(Authenticator):
    """Fixed bearer tokens, each bound to a tenant and principal. For local development and tests:
    ``AGEX_DEV_TOKENS="dev-token=dev:dev@example.com,other=acme:bob@acme.test"``."""

    def __init__(self, tokens: Mapping[str, Caller]) -> None:
        self._tokens = dict(tokens)

    @classmethod
    def parse(cls, spec: str) -> StaticTokenAuthenticator:
        tokens: dict[str, Caller] = {}
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            token, _, who = pair.partition("=")
            tenant, _, principal = who.partition(":")
            if not (token and tenant and principal):
                raise ConfigurationError(f"dev token {pair!r}: expected 'token=tenant:principal'")
            tokens[token] = Caller(tenant, principal)
        return cls(tokens)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        token = bearer(headers)
        for known, caller in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return caller
        raise Unauthenticated("unknown bearer token: use a token listed in AGEX_DEV_TOKENS")
