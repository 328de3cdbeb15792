"""End-to-end authentication of approval decisions: a decision source (the API) signs each decision it
publishes with its own Ed25519 key; the ``approvals`` function applies only decisions whose signature one
of the declared sources' public keys verifies.

Why a signature and not only the push subscription's OIDC token: the token proves that *Pub/Sub*
delivered the request, not who published the message, and a misconfigured ingress or invoker binding
would let anyone post to the function. The signature covers every field of the decision (tenant,
approval, decision, principal, arguments, time), so a forged, altered or re-targeted decision is refused
whatever the transport. A replayed one carries its original ``decision_id`` and is applied at most once.

The private key lives in Secret Manager, readable by the API's identity alone; the public keys are
configuration (``AGEX_DECISION_SOURCES``), so a verifier can never sign. See docs/approvals.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agex.core.approval import DecisionMessage
from agex.core.errors import ConfigurationError, PermissionDenied

SIGNED_FIELDS_EXCLUDE = frozenset({"signature"})


class DecisionRefused(PermissionDenied):
    """A decision message that is not authenticated as coming from a declared decision source."""


def canonical(message: DecisionMessage) -> bytes:
    """The bytes a signature covers: every field but the signature, as sorted compact JSON."""
    body = message.model_dump(mode="json", exclude=set(SIGNED_FIELDS_EXCLUDE))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, so logs and messages say which key signed."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class DecisionSigner:
    """Signs decisions as one source (``api``) with its private key."""

    def __init__(self, source: str, private_key: Ed25519PrivateKey) -> None:
        self.source, self._key = source, private_key
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_pem(cls, source: str, pem: str) -> DecisionSigner:
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as e:
            raise ConfigurationError(f"the decision signing key of {source!r} is not a PEM private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"the decision signing key of {source!r} must be an Ed25519 key "
                                     f"(got {type(key).__name__})")
        return cls(source, key)

    def sign(self, message: DecisionMessage) -> DecisionMessage:
        unsigned = message.model_copy(update={"source": self.source, "key_id": self.key_id, "signature": ""})
        signature = self._key.sign(canonical(unsigned))
        return unsigned.model_copy(update={"signature": base64.urlsafe_b64encode(signature).decode().rstrip("=")})


class DecisionVerifier:
    """The trusted decision sources and their public keys (several per source while a key rotates)."""

    def __init__(self, sources: Mapping[str, Sequence[Ed25519PublicKey]]) -> None:
        self._keys = {name: {key_id(k): k for k in keys} for name, keys in sources.items() if keys}

    @classmethod
    def from_config(cls, sources: Mapping[str, Sequence[str]]) -> DecisionVerifier:
        """``{"api": ["-----BEGIN PUBLIC KEY-----..."]}``: PEM public keys by source name."""
        parsed: dict[str, list[Ed25519PublicKey]] = {}
        for name, pems in sources.items():
            for pem in pems:
                try:
                    key = serialization.load_pem_public_key(pem.encode())
                except (ValueError, TypeError) as e:
                    raise ConfigurationError(f"AGEX_DECISION_SOURCES: a key of source {name!r} is not a PEM "
                                             f"public key: {e}") from e
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigurationError(f"AGEX_DECISION_SOURCES: the keys of {name!r} must be Ed25519")
                parsed.setdefault(name, []).append(key)
        return cls(parsed)

    @property
    def sources(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, message: DecisionMessage) -> None:
        """Raise ``DecisionRefused`` unless a key of the message's source signed exactly this message."""
        keys = self._keys.get(message.source)
        if not self._keys:
            raise DecisionRefused(f"decision {message.decision_id}: no decision source is declared "
                                  "(AGEX_DECISION_SOURCES), so no decision can be authenticated")
        if keys is None:
            raise DecisionRefused(f"decision {message.decision_id} names source {message.source!r}, which is not a "
                                  f"declared decision source ({', '.join(self.sources)})")
        key = keys.get(message.key_id)
        if key is None:
            raise DecisionRefused(f"decision {message.decision_id} is signed with key {message.key_id!r}, which is "
                                  f"not a key of source {message.source!r}")
        try:
            signature = base64.urlsafe_b64decode(message.signature + "=" * (-len(message.signature) % 4))
            key.verify(signature, canonical(message))
        except (InvalidSignature, ValueError) as e:
            raise DecisionRefused(f"decision {message.decision_id}: the signature of source {message.source!r} "
                                  "does not match the message (forged or altered)") from e


def new_key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private PEM, public PEM): ``agex dev`` and tests use one per stack."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public
