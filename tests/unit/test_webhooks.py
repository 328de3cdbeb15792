"""Completion webhooks (docs/webhooks.md): when a run ends (or is cancelled), each webhook that applies gets one
signed POST, retried while the endpoint fails, never sent twice for one run; the receiver's check of the
signature refuses a tampered body, another key or a stale timestamp."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from agex.app.backends import OWN_IDENTITY
from agex.core.errors import ConfigurationError
from agex.core.webhook import SIGNATURE_HEADER, Webhook, sign, verify
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime
from examples.ticker_agent import agent as ticker

KEY = "whsec-4f9a2c7e1b"


class Receiver:
    """A team's endpoint: checks the signature, answers ``statuses`` in turn (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.got = statuses, []
        self.now = time.time
        """The receiver's clock: the runtime's (manual) clock in these tests."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        self.got.append({"body": json.loads(body), "valid": verify(KEY, body, request.headers.get(SIGNATURE_HEADER),
                                                                   self.now()),
                         "id": request.headers.get("Agex-Webhook-Id")})
        status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok", status)(environ, start_response)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver([])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/hooks/agex"
    server.shutdown()


def _rt(url: str, **filters: Any) -> InMemoryRuntime:
    def script(request: Any) -> Any:
        return "done"

    rt = InMemoryRuntime([ticker], FunctionModel(script),
                         webhooks=[Webhook(name="crm", url=url, secret="crm-hook-key", **filters)])
    rt.secrets.add_version("crm-hook-key", KEY)
    rt.secrets.grant("crm-hook-key", OWN_IDENTITY)
    return rt


def _receiving(app: Receiver, rt: InMemoryRuntime) -> InMemoryRuntime:
    app.now = lambda: rt.clock.now().timestamp()
    return rt


def test_a_run_that_ends_is_posted_once_signed(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    rt = _receiving(app, _rt(url))
    run = rt.run("ticker", "tick 1")
    (got,) = app.got
    assert got["valid"] and got["id"] == f"{run.run_id}:crm"
    body = got["body"]
    assert body["type"] == "run.finished" and body["run"]["run_id"] == run.run_id
    assert body["run"]["status"] == "succeeded" and body["run"]["result"] == "done"
    # the end of the run seen again (a redelivered step) enqueues nothing new
    from agex.engine import notify

    notify.run_finished(rt.bus, run, rt.queue, rt.runtime._declared_webhooks())
    rt.drive()
    assert len(app.got) == 1


def test_an_endpoint_that_fails_is_retried_until_it_answers(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.statuses = [500, 503]
    rt = _receiving(app, _rt(url))
    rt.run("ticker", "tick 1")
    for _ in range(3):
        rt.clock.advance(60)
        rt.drive()
    assert [g["valid"] for g in app.got] == [True, True, True] and len({g["id"] for g in app.got}) == 1


def test_cancelled_runs_are_posted_and_filters_apply(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    rt = _receiving(app, _rt(url, tenants=("dev",)))
    from agex.testing.harness import DEFAULT_CALLER

    run = rt.start("ticker", "tick 3")
    rt.service.cancel(DEFAULT_CALLER, run.run_id)
    rt.drive()
    assert [g["body"]["run"]["status"] for g in app.got] == ["cancelled"]
    other = _rt(url, tenants=("acme",))
    other.run("ticker", "tick 1")
    assert len(app.got) == 1  # not this tenant's webhook
    with pytest.raises(ConfigurationError, match="not deployed"):
        _rt(url, agents=("support",))


def test_the_signature_check_refuses_tampering_other_keys_and_replays() -> None:
    body = b'{"type":"run.finished"}'
    now = 1_800_000_000
    header = sign(KEY, body, now)
    assert verify(KEY, body, header, now + 10)
    assert not verify(KEY, body + b" ", header, now)
    assert not verify("another-key", body, header, now)
    assert not verify(KEY, body, header, now + 301)
    assert not verify(KEY, body, None, now) and not verify(KEY, body, "t=1,v1=zz", now)


@pytest.mark.parametrize("url", ["http://crm.example.com/hook", "ftp://x/y", "https:///nohost"])
def test_a_webhook_must_be_https_except_to_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        Webhook(name="crm", url=url, secret="k")
