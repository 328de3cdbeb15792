"""Verify the OIDC tokens Cloud Tasks attaches to step tasks (and Cloud Scheduler to sweeps).

Cloud Run can also check these at its front door; checking in the function too keeps the step
endpoint safe when it is deployed with unauthenticated ingress, and locally, where the Cloud Tasks
emulator signs the tokens with its own key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from agex.auth import bearer
from agex.errors import PermissionDenied, TransientError, Unauthenticated

_ISSUERS = {"accounts.google.com", "https://accounts.google.com"}


class OidcVerifier:
    def __init__(self, *, audience: str, service_account: str, certs_url: str, cache_seconds: float = 300) -> None:
        self.audience, self.service_account, self.certs_url = audience, service_account, certs_url
        self.cache_seconds = cache_seconds
        self._certs: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def __call__(self, headers: Mapping[str, str]) -> None:
        from google.auth import exceptions, jwt

        token = bearer(headers)
        try:
            claims = jwt.decode(token, certs=self._keys(), audience=self.audience, clock_skew_in_seconds=30)
        except (ValueError, exceptions.GoogleAuthError) as e:
            raise Unauthenticated(f"the OIDC token was refused: {e}") from e
        if claims.get("iss") not in _ISSUERS:
            raise Unauthenticated(f"the OIDC token has issuer {claims.get('iss')!r}, not Google")
        if claims.get("email") != self.service_account or not claims.get("email_verified"):
            raise PermissionDenied(f"the OIDC token is for {claims.get('email')!r}; only "
                                   f"{self.service_account} may call this endpoint")

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
