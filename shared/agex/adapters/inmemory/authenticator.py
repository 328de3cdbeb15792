"""Fixed bearer tokens, each bound to a tenant and a principal: the authenticator of local development and
tests (``AGEX_AUTHENTICATOR=dev``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from agex.core.errors import ConfigurationError, Unauthenticated
from agex.ports.auth import Authenticator, Caller, bearer


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
