"""The console's server side (agex.app.console): its page and assets under a strict Content Security Policy,
the sign-in session (a signed cookie, never the token), CSRF on every request that changes something, and the
API read and written through the session as the signed-in caller, never as anyone else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from agex.app.console.session import COOKIE, Sessions
from agex.app.http.public_api import PublicApi
from agex.core.agent import Agent
from agex.core.memory import MemoryPolicy, MemoryRecord, MemorySource, Scope
from agex.ports.auth import Caller
from agex.testing import InMemoryRuntime, TestModel

from .conftest import ACME_TOKEN, DEV_TOKEN, LEAD_TOKEN, UNGUARDED, make_api


@pytest.fixture
def console(rt: InMemoryRuntime, tmp_path: Path) -> Client:
    api: PublicApi = make_api(rt)
    assert api.console is not None
    (tmp_path / "index.html").write_text("<!doctype html><title>agex</title><script type=module src=/console/static/app.js></script>")
    (tmp_path / "app.js").write_text("export {};")
    api.console.static = tmp_path
    return Client(Request.application(api))


def _sign_in(client: Client, token: str = DEV_TOKEN) -> str:
    answer = client.post("/console/session", json={"token": token})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    return str(answer.get_json()["csrf"])


def test_pages_and_assets_come_with_a_strict_policy(console: Client) -> None:
    for path in ("/console", "/console/", "/console/runs/run_x", "/console/approvals/apr_x"):
        page = console.get(path)
        assert page.status_code == 200 and b"<title>agex</title>" in page.get_data(), path
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    asset = console.get("/console/static/app.js")
    assert asset.status_code == 200 and asset.mimetype in ("text/javascript", "application/javascript")
    for bad in ("/console/static/../session.py", "/console/static/%2e%2e/server.py", "/console/static/nope.js"):
        assert console.get(bad).status_code == 404, bad
    assert console.post("/console/runs").status_code == 405


def test_signing_in_keeps_a_session_not_the_token(console: Client) -> None:
    assert console.get("/console/session").status_code == 401
    assert console.post("/console/session", json={"token": "wrong"}).status_code == 401
    assert console.post("/console/session", json={"nope": 1}).status_code == 400
    assert console.post("/console/session", data="x" * 20_000, content_type="application/json").status_code == 413
    csrf = _sign_in(console)
    session = console.get("/console/session").get_json()
    assert session == {"principal": "dev@example.com", "tenant": "dev", "csrf": csrf}
    # the API reads as the signed-in caller, with the cookie alone
    assert console.get("/v1/agents").status_code == 200
    assert console.post("/console/session:signout").status_code == 403  # no CSRF token
    assert console.post("/console/session:signout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert console.get("/console/session").status_code == 401 and console.get("/v1/agents").status_code == 401


def test_a_change_through_the_session_needs_its_csrf_token(console: Client, rt: InMemoryRuntime) -> None:
    csrf = _sign_in(console)
    body = {"input": "Refund order A-1042, please."}
    refused = console.post("/v1/agents/support/runs", json=body)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.get_json()["error"]["message"]
    assert console.post("/v1/agents/support/runs", json=body, headers={"X-CSRF-Token": "0" * 32}).status_code == 403
    started = console.post("/v1/agents/support/runs", json=body, headers={"X-CSRF-Token": csrf})
    assert started.status_code == 202 and started.get_json()["input"] == body["input"]
    head = rt.store.get_run("dev", started.get_json()["run_id"])
    assert head is not None and head.principal == "dev@example.com"


def test_a_forged_or_another_tenants_session_gets_nothing(console: Client, rt: InMemoryRuntime) -> None:
    csrf = _sign_in(console, ACME_TOKEN)
    assert console.get("/v1/runs").get_json()["runs"] == []
    # a cookie signed with another key (another deployment, or made up) is no session
    forged, _ = Sessions(b"another key" * 3).issue(Caller("dev", "dev@example.com"))
    console.set_cookie(COOKIE, forged)
    assert console.get("/v1/runs").status_code == 401
    assert console.post("/v1/agents/support/runs", json={"input": "hi"}, headers={"X-CSRF-Token": csrf}).status_code == 401
    # a bearer token wins over a cookie: the API's other callers are unchanged
    assert console.get("/v1/runs", headers={"Authorization": f"Bearer {LEAD_TOKEN}"}).status_code == 200


def test_a_runs_links_are_its_log_lines_locally(rt: InMemoryRuntime, tmp_path: Path) -> None:
    api = make_api(rt)
    assert api.console is not None
    logs = tmp_path / "logs"
    logs.mkdir()
    client = Client(Request.application(api))
    _sign_in(client)
    run = client.post("/v1/agents/support/runs", json={"input": "Refund order A-1042, please."},
                      headers={"X-CSRF-Token": client.get("/console/session").get_json()["csrf"]}).get_json()
    (logs / "step.log").write_text("\n".join([
        '{"time": "2026-01-01T00:00:02Z", "severity": "INFO", "message": "step 1 started", '
        f'"logging.googleapis.com/operation": {{"id": "{run["run_id"]}"}}}}',
        '{"time": "2026-01-01T00:00:01Z", "severity": "INFO", "message": "another run", '
        '"logging.googleapis.com/operation": {"id": "run_other"}}', "not json"]))
    api.console.log_dir = str(logs)
    links = client.get(f"/console/api/runs/{run['run_id']}/links").get_json()
    assert links["lines"] == ["2026-01-01T00:00:02Z step INFO step 1 started"] and links["trace"] is None
    api.console.log_dir, api.console.project = "", "my-project"
    links = client.get(f"/console/api/runs/{run['run_id']}/links").get_json()
    assert links["logs"].startswith("https://console.cloud.google.com/logs/query;query=operation.id")
    assert client.get("/console/api/runs/run_nope/links").status_code == 404


@pytest.fixture
def iap_keys() -> Iterator[tuple[str, str]]:
    """An IAP-like key publisher on this machine: ES256, its public key served as IAP serves its own."""
    import threading

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    server = make_server("127.0.0.1", 0, Request.application(lambda r: Response(
        json.dumps({"iap-key-1": public}), mimetype="application/json")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        yield pem, f"http://127.0.0.1:{server.server_port}/public_key"
    finally:
        server.shutdown()


def test_behind_identity_aware_proxy_people_sign_in_with_google(rt: InMemoryRuntime, tmp_path: Path,
                                                                 iap_keys: tuple[str, str]) -> None:
    from google.auth import crypt, jwt

    from agex.adapters.gcp.oidc import IAP_HEADER, IAP_ISSUER, IapAssertions

    pem, certs_url = iap_keys
    audience = "/projects/123/global/backendServices/456"
    api = make_api(rt)
    assert api.console is not None
    api.console.iap = IapAssertions(audience=audience, tenants=[("*@acme.test", "acme")], certs_url=certs_url)
    client = Client(Request.application(api))
    signer = crypt.ES256Signer.from_string(pem, key_id="iap-key-1")

    def assertion(**claims: Any) -> dict[str, str]:
        now = int(time.time())
        body = {"iss": IAP_ISSUER, "aud": audience, "email": "ops@acme.test", "sub": "accounts.google.com:1",
                "iat": now, "exp": now + 600, **claims}
        return {IAP_HEADER: jwt.encode(signer, body).decode()}

    signed_in = client.post("/console/session", json={"iap": True}, headers=assertion())
    assert signed_in.status_code == 200 and signed_in.get_json()["tenant"] == "acme"
    assert client.get("/v1/runs").status_code == 200
    for headers, status in [({}, 401), (assertion(aud="/projects/123/global/backendServices/999"), 401),
                            (assertion(iss="https://accounts.google.com"), 401),
                            (assertion(email="someone@else.test"), 403)]:
        fresh = Client(Request.application(api))
        assert fresh.post("/console/session", json={"iap": True}, headers=headers).status_code == status, headers


def _remembering() -> tuple[InMemoryRuntime, Client]:
    """A deployment whose concierge agent keeps memory, with one memory of Alice's in it."""
    rt = InMemoryRuntime([UNGUARDED, Agent(name="concierge", instructions="Help.", memory=MemoryPolicy())],
                         TestModel("noted"))
    memory = rt.runtime.memory
    assert memory is not None
    vectors, now = memory.vectors, rt.clock.now()
    vectors.upsert([MemoryRecord(
        id="mem_alice_1", scope=Scope(tenant="dev", agent="concierge", user="alice@example.com"),
        text="Prefers to be contacted by email.", vector=[1.0] + [0.0] * (vectors.dimensions - 1),
        source=MemorySource(run_id="run_1", user="alice@example.com", trusted=True), created_at=now, valid_from=now,
        embedding_model=memory.embedder.name, dimensions=vectors.dimensions)])
    return rt, Client(Request.application(make_api(rt)))


def test_a_users_memories_are_erased_through_the_session_only_with_its_csrf_token() -> None:
    rt, client = _remembering()
    csrf = _sign_in(client)
    listed = client.get("/v1/memory?user=alice@example.com")
    assert listed.status_code == 200
    assert [m["memory_id"] for s in listed.get_json()["scopes"] for m in s["memories"]] == ["mem_alice_1"]
    for headers in ({}, {"X-CSRF-Token": "0" * 32}):
        refused = client.delete("/v1/memory?user=alice@example.com", headers=headers)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.get_json()["error"]["message"]
    assert client.get("/v1/memory?user=alice@example.com").get_json()["scopes"][0]["memories"] != []
    erased = client.delete("/v1/memory?user=alice@example.com", headers={"X-CSRF-Token": csrf})
    assert erased.status_code == 200 and erased.get_json() == {"user": "alice@example.com",
                                                               "deleted": {"memories": 1, "graph": 0}}
    assert all(s["memories"] == [] for s in client.get("/v1/memory?user=alice@example.com").get_json()["scopes"])
    # without a session, no cookie: the API's own 401, whatever the header
    assert Client(Request.application(make_api(rt))).delete(
        "/v1/memory?user=alice@example.com", headers={"X-CSRF-Token": csrf}).status_code == 401


def test_a_deployment_without_memory_answers_the_console_404(console: Client) -> None:
    csrf = _sign_in(console)
    assert console.get("/v1/memory?user=dev@example.com").status_code == 404
    assert console.delete("/v1/memory?user=dev@example.com", headers={"X-CSRF-Token": csrf}).status_code == 404
