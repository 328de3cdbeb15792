"""The console's sign-in session: a cookie that says who signed in, signed by the API, and the CSRF token that
goes with it. The bearer token someone signed in with is checked once and never kept: not in the cookie, not in
the page. See docs/console.md."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer

from agex.ports.auth import Caller

COOKIE = "agex_session"
LIFETIME = timedelta(hours=12)
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    caller: Caller
    csrf: str
    """Sent back by the page in ``X-CSRF-Token`` with every request that changes something: a page of another
    origin can make the browser send the cookie, not read this."""


class Sessions:
    def __init__(self, key: bytes, lifetime: timedelta = LIFETIME) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="agex console session")
        self._csrf_key = hmac.new(key, b"agex console csrf", hashlib.sha256).digest()
        self.lifetime = lifetime

    @classmethod
    def derived(cls, secret: bytes) -> Sessions:
        """Sessions keyed by a secret the API already holds (its decision signing key): every instance signs and
        checks alike, and no other secret is needed."""
        return cls(hashlib.sha256(b"agex console session key\0" + secret).digest())

    def issue(self, caller: Caller) -> tuple[str, Session]:
        """The cookie value of a new session of ``caller``, and the session."""
        nonce = secrets.token_urlsafe(18)
        value = self._serializer.dumps({"t": caller.tenant, "p": caller.principal, "n": nonce})
        return value, Session(caller, self._csrf(nonce))

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie this API issued and that has not expired; None otherwise."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=int(self.lifetime.total_seconds()))
        except BadSignature:
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("t", "p", "n")):
            return None
        return Session(Caller(data["t"], data["p"]), self._csrf(data["n"]))

    def _csrf(self, nonce: str) -> str:
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()[:32]
