"""Fixtures of the public API tests: the API in-process on the in-memory runtime, no agex.dev.emulators.

``client`` speaks WSGI to ``PublicApi`` through werkzeug's test client and checks every response it
gets against the OpenAPI document the API serves (``OpenApiChecker``): a response whose status is not
documented for its operation, or whose body does not match the documented schema, fails the test that
made the request. ``snapshot`` captures everything the API could have written (runs, events, tasks) so
a test can assert that a refused request wrote nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import Client, TestResponse
from werkzeug.wrappers import Request

from agex.app.http import openapi
from agex.app.http.public_api import PublicApi
from agex.app.runtime import Runtime
from agex.core.agent import Agent
from agex.core.approval import Approval, approval_id, redact
from agex.core.run import Event, EventKind, RunHead, RunStatus
from agex.core.schedule import Schedule
from agex.core.spend import Budget
from agex.ports.checkpoint_store import Mutation
from agex.testing import TestModel
from agex.testing.harness import InMemoryRuntime
from examples.support_agent import agent as support_agent

TOKENS = ("dev-token=dev:dev@example.com,acme-token=acme:ops@acme.test,"
          "lead-token=dev:lead@example.com,intern-token=dev:intern@example.com,ana-token=dev:ana@finance.example.com")
DEV_TOKEN, ACME_TOKEN = "dev-token", "acme-token"
LEAD_TOKEN, INTERN_TOKEN, ANA_TOKEN = "lead-token", "intern-token", "ana-token"
"""More principals of tenant ``dev``, to decide approvals: the lead and Ana (a pattern) approve, the intern
does not."""
MAX_BODY_BYTES = 80 * 1024
FINAL_TEXT = "Your refund of $89.00 for order A-1042 is on its way."
TOOL_ARGS: dict[str, dict[str, Any]] = {
    "lookup_order": {"order_id": "A-1042"},
    "check_refund_policy": {"order_id": "A-1042"},
    "issue_refund": {"order_id": "A-1042", "amount_usd": 89.0, "reason": "split sole"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_DOC_URI = "urn:agex:openapi"


# --- the OpenAPI checker ----------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    body: Any
    operation: str | None
    """The documented operationId the request matched, or None for an undocumented route or method."""


@dataclass
class OpenApiChecker:
    """Validates responses against an OpenAPI 3.1 document (Draft 2020-12 schemas, the document's
    components as the registry) and records what it checked."""

    doc: dict[str, Any]
    seen: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry: Registry = Registry().with_resource(
            _DOC_URI, Resource(contents=self.doc, specification=DRAFT202012))
        self._templates = [(re.compile(_template_regex(p)), p) for p in self.doc["paths"]]

    def validator(self, pointer: str) -> Draft202012Validator:
        """A validator for the schema at JSON pointer ``pointer`` of the document."""
        return Draft202012Validator({"$ref": f"{_DOC_URI}#{quote(pointer, safe='/~')}"}, registry=self.registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)

    def component(self, name: str) -> Draft202012Validator:
        return self.validator(f"/components/schemas/{name}")

    def match(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """The documented (path template, operation) of a request, if any."""
        for regex, template in self._templates:
            if regex.fullmatch(path):
                op = self.doc["paths"][template].get(method.lower())
                return (template, op) if op is not None else None
        return None

    def check(self, method: str, url: str, status: int, content_type: str | None, raw: bytes) -> Exchange:
        path = urlsplit(url).path
        matched = self.match(method, path)
        body: Any = None
        if method.upper() != "HEAD":
            assert content_type is not None and content_type.split(";")[0] == "application/json", (
                f"{method} {path} -> {status}: content type {content_type!r}, not JSON")
            body = json.loads(raw)
        if matched is None:
            # no documented operation: only the generic "no such route" and "wrong method" errors
            assert status in (404, 405), f"{method} {path} is undocumented but answered {status}"
            if body is not None:
                _assert_valid(self.component("ErrorBody"), body, f"{method} {path} -> {status}")
            exchange = Exchange(method.upper(), path, status, body, None)
        else:
            template, op = matched
            assert str(status) in op["responses"], (
                f"{method} {template} answered {status}, which the document does not list "
                f"(documented: {sorted(op['responses'])})")
            content = op["responses"][str(status)].get("content", {}).get("application/json")
            if content is not None and body is not None:
                pointer = "/".join(["", "paths", _escape(template), method.lower(), "responses", str(status),
                                    "content", _escape("application/json"), "schema"])
                _assert_valid(self.validator(pointer), body, f"{method} {template} -> {status}")
            if status >= 400 and body is not None:
                _assert_valid(self.component("ErrorBody"), body, f"{method} {template} -> {status}")
            exchange = Exchange(method.upper(), path, status, body, op["operationId"])
        self.seen.append(exchange)
        return exchange


def _template_regex(template: str) -> str:
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", template)
    return "".join(f"(?P<{p[1:-1]}>[^/:]+)" if p.startswith("{") else re.escape(p) for p in parts)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _assert_valid(validator: Draft202012Validator, instance: Any, where: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    assert not errors, f"{where}: body does not match the documented schema: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5])


# --- the API under test -----------------------------------------------------------------------------


_DEFAULT: Any = object()


class ApiClient:
    """werkzeug's test client with a default bearer token; every response goes through the checker."""

    def __init__(self, api: PublicApi, checker: OpenApiChecker, token: str | None = DEV_TOKEN) -> None:
        self._client = Client(Request.application(api))
        self.checker = checker
        self.token = token

    def open(self, method: str, path: str, *, token: Any = _DEFAULT, headers: dict[str, str] | None = None,
             **kwargs: Any) -> TestResponse:
        """``token=None`` sends no Authorization header; ``headers`` may set one of its own."""
        token = self.token if token is _DEFAULT else token
        headers = dict(headers or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        response = self._client.open(path, method=method, headers=headers, **kwargs)
        self.checker.check(method, path, response.status_code, response.headers.get("Content-Type"),
                           response.get_data())
        return response

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("POST", path, **kwargs)

    def start(self, input: str = "Refund order A-1042, please.", *, agent: str = "support",
              **kwargs: Any) -> TestResponse:
        """POST /v1/agents/{agent}/runs with a JSON body; ``kwargs`` go to ``open``."""
        body: dict[str, Any] = {"input": input, **kwargs.pop("extra", {})}
        return self.post(f"/v1/agents/{agent}/runs", json=body, **kwargs)


@pytest.fixture(autouse=True)
def _refund_ledger(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The support agent's refund tool writes a SQLite ledger: keep it in the test's temp dir."""
    monkeypatch.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path / "refunds.sqlite"))


UNGUARDED = Agent(**{**dict(support_agent), "approvals": ()})
"""The sample support agent without its approval policy: the run tests follow runs that never wait for a
human (approvals are seeded and tested in ``test_approvals_api``)."""


@pytest.fixture
def rt() -> InMemoryRuntime:
    """The sample support agent on in-memory ports; its model calls every tool once, then answers."""
    return InMemoryRuntime([UNGUARDED], TestModel(FINAL_TEXT, args_for=lambda name: TOOL_ARGS[name]))


SCHEDULE = Schedule(name="nightly", agent="support", cron="0 6 * * *", input="Any refunds to check?", tenant="dev")


def make_api(rt: InMemoryRuntime, base_url: str = "", budgets: list[Budget] | None = None) -> PublicApi:
    """The API as the composition root builds it, over the test runtime's ports, with these tokens."""
    settings = rt.runtime.settings.model_copy(update={"dev_tokens": TOKENS, "public_url": base_url,
                                                      "budgets": budgets or []})
    api = Runtime(settings, rt.runtime.backends, agents=rt.agents, schedules=(SCHEDULE,)).public_api
    assert api.max_body_bytes == MAX_BODY_BYTES
    return api


@pytest.fixture
def api(rt: InMemoryRuntime) -> PublicApi:
    return make_api(rt)


@pytest.fixture(scope="session")
def openapi_doc() -> dict[str, Any]:
    return openapi.document()


@pytest.fixture
def checker(openapi_doc: dict[str, Any]) -> OpenApiChecker:
    return OpenApiChecker(openapi_doc)


@pytest.fixture
def client(api: PublicApi, checker: OpenApiChecker) -> ApiClient:
    return ApiClient(api, checker)


# --- what the API wrote ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    runs: tuple[str, ...]
    events: tuple[tuple[str, str, int, str], ...]
    tasks: tuple[str, ...]
    approvals: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    """Everything published on the bus (decisions to apply, notifications)."""


def take_snapshot(rt: InMemoryRuntime) -> Snapshot:
    """Every run head, event, approval, pending task and published message, through the ports' public
    methods."""
    heads = rt.store.find_runs(list(RunStatus), datetime(9999, 1, 1, tzinfo=UTC), 1_000_000)
    runs = tuple(sorted(h.model_dump_json() for h in heads))
    events = tuple(sorted((h.tenant, h.run_id, e.seq, e.kind.value)
                          for h in heads for e in rt.store.list_events(h.tenant, h.run_id, limit=1_000_000)))
    tasks = tuple(sorted(t.name for t in rt.queue.pending()))
    approvals = tuple(sorted(a.model_dump_json() for tenant in sorted({h.tenant for h in heads})
                             for a in rt.store.list_approvals(tenant, limit=1_000_000)))
    messages = tuple(json.dumps([m.topic, m.message, m.attributes], sort_keys=True) for m in rt.bus.messages)
    return Snapshot(runs, events, tasks, approvals, messages)


@pytest.fixture
def snapshot(rt: InMemoryRuntime) -> Callable[[], Snapshot]:
    return lambda: take_snapshot(rt)


@pytest.fixture
def unchanged(rt: InMemoryRuntime) -> Callable[[], Iterator[None]]:
    """``with unchanged(): ...`` fails if the block wrote a run, an event, an approval or a task, or
    published a message."""

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        before = take_snapshot(rt)
        yield
        assert take_snapshot(rt) == before, "a refused request wrote to the store or the queue, or published"

    return guard


# --- approvals, seeded through the store --------------------------------------------------------------

_SEEDS = itertools.count(1)
APPROVERS = ("lead@example.com", "*@finance.example.com")
SECRET_REASON = "customer 4242: card ending 1234, split sole"
REFUND_ARGS = {"order_id": "A-1042", "amount_usd": 89.0, "reason": SECRET_REASON}


def seed_approval(rt: InMemoryRuntime, *, tenant: str = "dev", principal: str = "dev@example.com",
                  run_status: RunStatus = RunStatus.waiting_approval, arguments: dict[str, Any] | None = None,
                  **fields: Any) -> Approval:
    """A run that waits for a human and its approval, written as the engine writes them: the head and the
    approval in one commit. Independent of the engine. ``fields`` override the approval's."""
    now = rt.clock.now()
    run_id = f"run_seed{next(_SEEDS):06d}"
    step, call_id = fields.pop("step", 1), fields.pop("call_id", "call_1")
    args = dict(REFUND_ARGS) if arguments is None else arguments
    paths = fields.pop("redact", ["reason"])
    head = RunHead(run_id=run_id, tenant=tenant, agent="support", agent_version="1", principal=principal,
                   input="Refund order A-1042, please.", created_at=now, updated_at=now,
                   expire_at=now + timedelta(days=7), seq=1)
    created = Event(seq=1, step=0, kind=EventKind.run_created, at=now, expire_at=head.expire_at,
                    data={"agent": "support", "agent_version": "1", "principal": principal,
                          "input": head.input, "metadata": {}})
    rt.store.create_run(head, [created])
    approval = Approval(**{
        "approval_id": approval_id(run_id, step, call_id), "tenant": tenant, "run_id": run_id, "agent": "support",
        "step": step, "call_id": call_id, "tool": "issue_refund", "arguments": redact(args, paths),
        "call_arguments": args, "redact": paths, "reason": "Refunds need a human.", "approvers": list(APPROVERS),
        "four_eyes": True, "allow_edits": True, "on_expiry": "reject", "requested_by": principal,
        "created_at": now, "expires_at": now + timedelta(days=1), "updated_at": now, "expire_at": head.expire_at,
        "trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", **fields})
    waiting = run_status == RunStatus.waiting_approval
    rt.store.update_run(tenant, run_id, lambda h: Mutation(h.model_copy(update={
        "status": run_status, "step": step, "approval_id": approval.approval_id if waiting else None,
        "wake_at": approval.expires_at if waiting else None}), [], approvals=[approval]))
    return approval
