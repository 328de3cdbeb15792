"""Who is calling: the identity behind ``authorization: Bearer <token>``.

There is no token service locally, so the token *is* the identity: either the
bare email (``agent@proj.iam.gserviceaccount.com``) or an unsigned JWT whose
payload carries ``email`` (what ID-token-shaped test fixtures produce).
Signatures are not checked; the emulator models authorization, not
authentication strength.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from .errors import unauthenticated


def caller_email(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    header = None
    for key, value in metadata:
        if key.lower() == "authorization":
            header = value.decode() if isinstance(value, bytes) else value
            break
    if header is None:
        raise unauthenticated()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated()
    email = token if "@" in token else _jwt_email(token)
    if not email or "@" not in email:
        raise unauthenticated()
    return email


def _jwt_email(token: str) -> str | None:
    # Base64url has no '@', so a token without one can only be a JWT here.
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (binascii.Error, ValueError):
        return None
    email = claims.get("email") if isinstance(claims, dict) else None
    return email if isinstance(email, str) else None


def bearer_token(identity: str) -> str:
    """The token the emulator maps back to ``identity`` (used by the client helper)."""
    return identity
