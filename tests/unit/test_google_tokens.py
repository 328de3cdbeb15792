"""Google ID tokens: the step endpoint's gate and the API's Google authenticator, against keys served
over HTTP the way Google serves them (signed here by the Cloud Tasks emulator's signer)."""

from __future__ import annotations

import pytest

from agex.adapters.gcp.oidc import GoogleIdTokenAuthenticator, GoogleIdTokens, OidcVerifier
from agex.core.errors import PermissionDenied, Unauthenticated

from .conftest import GOOGLE

AUDIENCE = "https://step.example.run.app/"
signer = GOOGLE


def bearer(email: str, audience: str = AUDIENCE) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.id_token(email, audience)}"}


def test_the_step_gate_admits_only_the_step_service_account(certs_url: str) -> None:
    gate = OidcVerifier(GoogleIdTokens(audience=AUDIENCE, certs_url=certs_url), "step@p.iam.gserviceaccount.com")
    gate(bearer("step@p.iam.gserviceaccount.com"))
    with pytest.raises(PermissionDenied, match="only step@"):
        gate(bearer("intruder@p.iam.gserviceaccount.com"))
    with pytest.raises(Unauthenticated, match="refused"):
        gate(bearer("step@p.iam.gserviceaccount.com", audience="https://elsewhere/"))
    with pytest.raises(Unauthenticated):
        gate({"Authorization": "Bearer not.a.token"})
    with pytest.raises(Unauthenticated, match="missing credentials"):
        gate({})


def test_the_google_authenticator_maps_emails_to_tenants(certs_url: str) -> None:
    tokens = GoogleIdTokens(audience=AUDIENCE, certs_url=certs_url)
    auth = GoogleIdTokenAuthenticator.parse(tokens, "ops@acme.com=acme-ops,*@acme.com=acme,*@globex.com=globex")
    assert auth.authenticate(bearer("ops@acme.com")).tenant == "acme-ops"
    caller = auth.authenticate(bearer("Dana@Acme.com"))
    assert (caller.tenant, caller.principal) == ("acme", "dana@acme.com")
    with pytest.raises(PermissionDenied, match="AGEX_TENANTS"):
        auth.authenticate(bearer("eve@evil.test"))
