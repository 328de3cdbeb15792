"""Completion webhooks: a signed HTTP POST to a team's endpoint when a run ends, beside Pub/Sub's
``run.finished`` (docs/webhooks.md). Declared in the fleet file; delivered by the step function through Cloud
Tasks, which retries with backoff until the endpoint answers 2xx.

The signature is ``Agex-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}" with the webhook's
secret}``: the receiver recomputes it over the raw body and refuses a stale ``t`` (a replay)."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

SIGNATURE_HEADER = "Agex-Signature"
DEFAULT_TOLERANCE_S = 300
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    url: str
    """``https://`` (``http://`` only to the loopback interface, for local development)."""
    secret: str = Field(min_length=1)
    """The Secret Manager secret holding the signing key, read by the step function with its own identity."""
    tenants: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    """Only runs of these tenants or agents (empty: all)."""

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        parts = urlsplit(url)
        if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)):
            raise ValueError(f"webhook url {url!r} must be https:// (http:// only to 127.0.0.1 or localhost)")
        return url

    def applies(self, tenant: str, agent: str) -> bool:
        return (not self.tenants or tenant in self.tenants) and (not self.agents or agent in self.agents)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Agex-Signature`` header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


_HEADER = re.compile(r"t=(\d{1,12}),v1=([0-9a-f]{64})")


def verify(secret: str, body: bytes, header: str | None, now: float, tolerance_s: int = DEFAULT_TOLERANCE_S) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and was made within ``tolerance_s`` of ``now``: what a
    receiver checks before it trusts a delivery."""
    match = _HEADER.fullmatch(header or "")
    if match is None or abs(now - int(match.group(1))) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, int(match.group(1))), match.group(0))
