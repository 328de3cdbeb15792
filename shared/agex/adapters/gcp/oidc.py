"""Google-signed ID tokens: who calls the step endpoint, and (optionally) who calls the API.

Cloud Tasks attaches an OIDC token for the step service account to each step task (Cloud Scheduler
does the same for the sweep). Cloud Run can check such tokens at its front door; checking in the
function as well keeps the endpoint safe with unauthenticated ingress, and works locally, where the
Cloud Tasks emulator signs the tokens with its own key and serves it at ``AGEX_OIDC_CERTS_URL``.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Mapping
from typing import Any

from agex.core.errors import ConfigurationError, PermissionDenied, TransientError, Unauthenticated
from agex.ports.auth import Authenticator, Caller, bearer

_ISSUERS = {"accounts.google.com", "https://accounts.google.com"}


class _Keys:
    """Signing keys published at a URL (key id to certificate or public key), fetched again after a while."""

    def __init__(self, certs_url: str, cache_seconds: float) -> None:
        self.certs_url, self.cache_seconds = certs_url, cache_seconds
        self._certs: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _keys(self) -> dict[str, Any]:
        with self._lock:
            if not self._certs or time.monotonic() - self._fetched > self.cache_seconds:
                import requests

                try:
                    response = requests.get(self.certs_url, timeout=10)
                    response.raise_for_status()
                except requests.RequestException as e:
                    raise TransientError(f"could not fetch token signing keys from {self.certs_url}: {e}") from e
                self._certs, self._fetched = response.json(), time.monotonic()
            return self._certs


class GoogleIdTokens(_Keys):
    """Verifies Google-signed ID tokens for one audience; signing keys are cached."""

    def __init__(self, *, audience: str, certs_url: str, cache_seconds: float = 300) -> None:
        super().__init__(certs_url, cache_seconds)
        self.audience = audience

    def claims(self, headers: Mapping[str, str]) -> dict[str, Any]:
        from google.auth import exceptions, jwt

        token = bearer(headers)
        try:
            claims: dict[str, Any] = jwt.decode(token, certs=self._keys(), audience=self.audience,
                                                clock_skew_in_seconds=30)
        except (ValueError, exceptions.GoogleAuthError) as e:
            raise Unauthenticated(f"the ID token was refused: {e}") from e
        if claims.get("iss") not in _ISSUERS:
            raise Unauthenticated(f"the ID token has issuer {claims.get('iss')!r}, not Google")
        if not claims.get("email") or not claims.get("email_verified"):
            raise Unauthenticated("the ID token has no verified email; mint it with the email scope")
        return claims


IAP_HEADER = "X-Goog-IAP-JWT-Assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"


class IapAssertions(_Keys):
    """Who a request comes from when Identity-Aware Proxy fronts the API (the console in the cloud): IAP signed
    in the person with Google and says so in a signed header, checked here against IAP's keys and the backend's
    audience (``/projects/NUMBER/global/backendServices/ID``), then mapped to a tenant as ID tokens are."""

    def __init__(self, *, audience: str, tenants: list[tuple[str, str]], certs_url: str = IAP_CERTS_URL,
                 cache_seconds: float = 300) -> None:
        super().__init__(certs_url, cache_seconds)
        self.audience, self.tenants = audience, tenants

    def __call__(self, headers: Mapping[str, str]) -> Caller:
        from google.auth import exceptions, jwt

        assertion = next((v for k, v in headers.items() if k.lower() == IAP_HEADER.lower()), "")
        if not assertion:
            raise Unauthenticated(f"no {IAP_HEADER}: this request did not come through Identity-Aware Proxy")
        try:
            claims: dict[str, Any] = jwt.decode(assertion, certs=self._keys(), audience=self.audience,
                                                clock_skew_in_seconds=30)
        except (ValueError, exceptions.GoogleAuthError) as e:
            raise Unauthenticated(f"the IAP assertion was refused: {e}") from e
        if claims.get("iss") != IAP_ISSUER or not claims.get("email"):
            raise Unauthenticated("the IAP assertion is not IAP's, or names no one")
        return tenant_of(str(claims["email"]).lower(), self.tenants)


def tenant_of(email: str, tenants: list[tuple[str, str]]) -> Caller:
    """The caller ``email`` is, in the first tenant whose pattern matches it; 403 when none does."""
    for pattern, tenant in tenants:
        if fnmatch.fnmatchcase(email, pattern):
            return Caller(tenant, email)
    raise PermissionDenied(f"{email} belongs to no tenant of this deployment; ask an operator to add it "
                           "to AGEX_TENANTS")


def parse_tenants(spec: str) -> list[tuple[str, str]]:
    """``AGEX_TENANTS``: ``email-pattern=tenant`` pairs, comma-separated."""
    pairs = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        pattern, _, tenant = item.partition("=")
        if not pattern or not tenant:
            raise ConfigurationError(f"tenant mapping {item!r}: expected 'email-pattern=tenant'")
        pairs.append((pattern.strip().lower(), tenant.strip()))
    return pairs


class OidcVerifier:
    """Admits only tokens of one service account: the step endpoint's gate."""

    def __init__(self, tokens: GoogleIdTokens, service_account: str) -> None:
        self.tokens, self.service_account = tokens, service_account

    def __call__(self, headers: Mapping[str, str]) -> None:
        email = self.tokens.claims(headers)["email"]
        if email != self.service_account:
            raise PermissionDenied(f"the token is for {email!r}; only {self.service_account} may call this endpoint")


class GoogleIdTokenAuthenticator(Authenticator):
    """API callers prove who they are with a Google ID token (a service account's, or a user's through
    ``gcloud auth print-identity-token``); a table maps their email to a tenant.

    ``AGEX_TENANTS="ops@acme.com=acme,*@acme.com=acme,*@globex.com=globex"``: the first pattern that
    matches the email wins; no match is a 403.
    """

    def __init__(self, tokens: GoogleIdTokens, tenants: list[tuple[str, str]]) -> None:
        self.tokens, self.tenants = tokens, tenants

    @classmethod
    def parse(cls, tokens: GoogleIdTokens, spec: str) -> GoogleIdTokenAuthenticator:
        return cls(tokens, parse_tenants(spec))

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return tenant_of(str(self.tokens.claims(headers)["email"]).lower(), self.tenants)
