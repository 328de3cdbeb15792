"""OIDC ID tokens for HTTP targets, signed by a key only this process holds.

Handlers verify Cloud Tasks tokens against Google's published certificates;
pointing them at this emulator's certificate endpoint instead lets the exact
same verification code (e.g. ``google.oauth2.id_token.verify_token`` with
``certs_url``) run locally.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME_SECONDS = 3600
# Reusing a token until close to expiry keeps RSA signing off the hot path
# when thousands of tasks go to the same service.
_REUSE_MARGIN_SECONDS = 300
# Audiences derived from per-task URLs can be unbounded in number.
_CACHE_LIMIT = 1024


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def subject_for(email: str) -> str:
    """A stable 21-digit numeric id, shaped like a service account's unique id."""
    digest = int.from_bytes(hashlib.sha256(email.encode("utf-8")).digest()[:16], "big")
    return "1" + str(digest % 10**20).zfill(20)


class OidcSigner:
    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha1(public_der).hexdigest()
        self._cert_pem = self._self_signed_cert().public_bytes(serialization.Encoding.PEM).decode("ascii")
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _self_signed_cert(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudtasks-emulator")])
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self._key, hashes.SHA256())
        )

    def certs_v1(self) -> dict[str, str]:
        """Same shape as https://www.googleapis.com/oauth2/v1/certs (kid -> PEM certificate)."""
        return {self.kid: self._cert_pem}

    def certs_v3(self) -> dict[str, list[dict[str, str]]]:
        """Same shape as https://www.googleapis.com/oauth2/v3/certs (a JWK set)."""
        numbers = self._key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }
        return {"keys": [jwk]}

    def id_token(self, email: str, audience: str, *, issued_at: float | None = None) -> str:
        """A token for ``email`` and ``audience``; ``issued_at`` (seconds since the epoch) back-dates one,
        for tests of expired tokens, and bypasses the cache."""
        now = time.time() if issued_at is None else issued_at
        with self._lock:
            cached = self._cache.get((email, audience)) if issued_at is None else None
            if cached and cached[1] - now > _REUSE_MARGIN_SECONDS:
                return cached[0]
        iat = int(now)
        exp = iat + TOKEN_LIFETIME_SECONDS
        sub = subject_for(email)
        claims = {
            "aud": audience,
            "azp": sub,
            "email": email,
            "email_verified": True,
            "exp": exp,
            "iat": iat,
            "iss": ISSUER,
            "sub": sub,
        }
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        token = signing_input + "." + _b64url(signature)
        if issued_at is None:
            with self._lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[(email, audience)] = (token, float(exp))
        return token


def fake_access_token(email: str, scope: str) -> str:
    """An opaque stand-in for an OAuth access token; no Google API would accept it."""
    return "emulator-oauth." + _b64url(f"{email} {scope}".encode())
