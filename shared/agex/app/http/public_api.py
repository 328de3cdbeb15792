"""The public HTTP API (``/v1``), served by the ``api`` function. Documented in docs/api.md; the
OpenAPI document at ``GET /v1/openapi.json`` is built from the same views."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from agex.app.console.session import COOKIE
from agex.app.http import live, openapi
from agex.app.http.responses import (
    error_response,
    http_exception_response,
    internal_error,
    json_response,
    method_not_allowed,
    not_found,
    served,
)
from agex.app.http.rules import EVENTS_TOKEN_PATTERN, check_text, idempotency_key, parse_json
from agex.app.http.views import (
    AgentList,
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    EventsPage,
    EventView,
    MemoryErased,
    MemoryList,
    MemoryScopeView,
    MemoryView,
    RunsPage,
    RunView,
    ScheduleList,
    ScheduleView,
    ThreadView,
    VersionList,
    VersionView,
    fingerprint_of,
)
from agex.core.agent import AgentRegistry
from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import (
    AgexError,
    NotFound,
    PayloadTooLarge,
    RequestError,
    Unauthenticated,
    UnsupportedMediaType,
    validation_problems,
)
from agex.core.memory import Scope
from agex.core.run import RunStatus
from agex.engine.approvals import ApprovalService, DecideRequest
from agex.engine.memory import MemoryService
from agex.engine.reports import EvalSubmission, Reports
from agex.engine.runs import CreateRunRequest, RunService, Started
from agex.engine.schedules import ScheduleService
from agex.engine.threads import CreateThreadRequest, ThreadService
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.auth import Authenticator, Caller
from agex.ports.checkpoint_store import RunFilter
from agex.ports.live_text import LiveTexts

if TYPE_CHECKING:
    from agex.app.console.server import Console

MAX_PAGE_SIZE = 1000
_log = log.get("api")


class _IdConverter(BaseConverter):
    """Ids are URL-safe and never contain ':', so ``/v1/runs/{id}:cancel`` splits cleanly."""

    regex = r"[A-Za-z0-9_-]+"


_routes = Map([
    Rule("/healthz", endpoint="health", methods=["GET"]),
    Rule("/v1/openapi.json", endpoint="openapi", methods=["GET"]),
    Rule("/v1/agents", endpoint="list_agents", methods=["GET"]),
    Rule("/v1/agents/<id:agent>", endpoint="get_agent", methods=["GET"]),
    Rule("/v1/agents/<id:agent>/runs", endpoint="start_run", methods=["POST"]),
    Rule("/v1/agents/<id:agent>/versions", endpoint="agent_versions", methods=["GET"]),
    Rule("/v1/agents/<id:agent>/threads", endpoint="create_thread", methods=["POST"]),
    Rule("/v1/threads/<id:thread_id>", endpoint="get_thread", methods=["GET"]),
    Rule("/v1/threads/<id:thread_id>/runs", endpoint="post_to_thread", methods=["POST"]),
    Rule("/v1/runs", endpoint="list_runs", methods=["GET"]),
    Rule("/v1/runs/<id:run_id>", endpoint="get_run", methods=["GET"]),
    Rule("/v1/runs/<id:run_id>/events", endpoint="list_events", methods=["GET"]),
    Rule("/v1/runs/<id:run_id>:cancel", endpoint="cancel_run", methods=["POST"]),
    Rule("/v1/approvals", endpoint="list_approvals", methods=["GET"]),
    Rule("/v1/approvals/<id:approval_id>", endpoint="get_approval", methods=["GET"]),
    Rule("/v1/approvals/<id:approval_id>", endpoint="decide_approval", methods=["POST"]),
    Rule("/v1/agents/<id:agent>/metrics", endpoint="agent_metrics", methods=["GET"]),
    Rule("/v1/agents/<id:agent>/evals", endpoint="list_evals", methods=["GET"]),
    Rule("/v1/agents/<id:agent>/evals", endpoint="put_eval", methods=["POST"]),
    Rule("/v1/usage", endpoint="usage", methods=["GET"]),
    Rule("/v1/schedules", endpoint="list_schedules", methods=["GET"]),
    Rule("/v1/schedules/<id:name>:pause", endpoint="pause_schedule", methods=["POST"]),
    Rule("/v1/schedules/<id:name>:resume", endpoint="resume_schedule", methods=["POST"]),
    Rule("/v1/alerts", endpoint="list_alerts", methods=["GET"]),
    Rule("/v1/memory", endpoint="list_memory", methods=["GET"]),
    Rule("/v1/memory", endpoint="erase_memory", methods=["DELETE"]),
], converters={"id": _IdConverter}, strict_slashes=False)

_PUBLIC = {"health", "openapi"}


class PublicApi:
    def __init__(self, *, service: RunService, approvals: ApprovalService, agents: AgentRegistry,
                 authenticator: Authenticator, max_body_bytes: int, base_url: str = "",
                 reports: Reports | None = None, max_wait_s: float = 50.0, stream_max_s: float = 3300.0,
                 schedules: Callable[[], ScheduleService] | None = None,
                 threads: Callable[[], ThreadService] | None = None,
                 live_texts: Callable[[], LiveTexts] | None = None, console: Console | None = None,
                 memory: Callable[[], MemoryService] | None = None) -> None:
        self.service, self.approvals, self.agents, self.auth = service, approvals, agents, authenticator
        self.memory = memory
        self.live_texts, self.console = live_texts, console
        self.schedules, self.threads = schedules, threads
        self.max_wait_s, self.stream_max_s = max_wait_s, stream_max_s
        self.reports = reports
        self.max_body_bytes = max_body_bytes
        self.base_url = base_url.rstrip("/")

    def __call__(self, request: Request) -> Response:
        return served(request, self._serve, lambda: tracing.tracer().start_as_current_span(
            f"{request.method} {request.path}", kind=SpanKind.SERVER, context=tracing.extract(dict(request.headers))))

    def _serve(self, request: Request) -> Response:
        if self.console is not None and (request.path == "/console" or request.path.startswith("/console/")):
            return self.console(request)
        try:
            endpoint, params = _routes.bind("", path_info=request.path).match(method=request.method)
            caller = None if endpoint in _PUBLIC else self._authenticate(request)
            log.annotate_request(run=params.get("run_id"))
            with log.labels(tenant=caller.tenant if caller else None):
                return getattr(self, f"_{endpoint}")(request, caller, **params)
        except WerkzeugNotFound:
            return error_response(not_found(request.method, request.path))
        except WerkzeugMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.valid_methods or []))
            return error_response(method_not_allowed(request.method, allowed), {"Allow": allowed})
        except HTTPException as e:  # werkzeug's, reading the request (a client that went away mid-body)
            return http_exception_response(e, request.method, request.path)
        except AgexError as e:
            if e.status >= 500:
                _log.exception("request failed")
            return error_response(e)
        except Exception:
            _log.exception("request crashed")
            return error_response(internal_error())

    def _authenticate(self, request: Request) -> Caller:
        """The bearer token's caller; without one, the console's signed-in session, whose CSRF token must come
        with any request that changes something (a page of another origin can make a browser send the cookie,
        not the header)."""
        if self.console is not None and "Authorization" not in request.headers and COOKIE in request.cookies:
            if request.method in ("GET", "HEAD"):
                session = self.console.session_of(request)
                if session is None:
                    raise Unauthenticated("the console session expired or is not valid: sign in again")
                return session.caller
            return self.console.checked(request).caller
        return self.auth.authenticate(dict(request.headers))

    # --- endpoints -----------------------------------------------------------------------------------

    def _health(self, request: Request, caller: None) -> Response:
        return json_response({"status": "ok"})

    def _openapi(self, request: Request, caller: None) -> Response:
        return json_response(openapi.document(self.base_url))

    def _list_agents(self, request: Request, caller: Caller) -> Response:
        return json_response(AgentList(agents=[AgentView.of(a) for a in self.agents.all()]).model_dump(mode="json"))

    def _get_agent(self, request: Request, caller: Caller, agent: str) -> Response:
        return json_response(AgentView.of(self.agents.get(agent)).model_dump(mode="json"))

    def _agent_versions(self, request: Request, caller: Caller, agent: str) -> Response:
        served = self.agents.versions(agent)
        counts = self.service.unfinished_versions(caller, agent)
        named = [v for (_, v) in sorted(counts) if self.agents.version(agent, v) is None]
        versions = [VersionView(version=v, current=i == 0, served=a is not None,
                                fingerprint=fingerprint_of(a) if a is not None else None,
                                unfinished_runs=counts.get((agent, v), 0), migrates_to=self.agents.migration(agent, v))
                    for i, (v, a) in enumerate([*((a.version, a) for a in served), *((v, None) for v in named)])]
        return json_response(VersionList(agent=agent, versions=versions).model_dump(mode="json"))

    def _start_run(self, request: Request, caller: Caller, agent: str) -> Response:
        self.agents.get(agent)  # an unknown agent is a 404 before the body is even read
        wait = live.wait_seconds(request.args.get("wait"), self.max_wait_s)
        key = idempotency_key(request)
        create = self._run_request(request)
        started = self.service.start(caller, agent, create, idempotency_key=key,
                                     traceparent=tracing.current_traceparent())
        return self._started(caller, started, wait)

    def _run_request(self, request: Request) -> CreateRunRequest:
        body = self._json_body(request)
        check_text(body, ("input",), ("metadata",))
        try:
            return CreateRunRequest.model_validate(body)
        except ValidationError as e:
            raise RequestError(f"invalid run request: {_describe(e, CreateRunRequest)}") from e

    def _threads(self) -> ThreadService:
        if self.threads is None:
            raise NotFound("this deployment serves no threads")
        return self.threads()

    def _create_thread(self, request: Request, caller: Caller, agent: str) -> Response:
        self.agents.get(agent)
        key = idempotency_key(request)
        # the body is optional: none at all (no length, not chunked) is every default
        empty = request.content_length == 0 or (request.content_length is None
                                                 and "chunked" not in request.headers.get("Transfer-Encoding", ""))
        body = {} if empty else self._json_body(request)
        check_text(body, (), ("metadata",))
        try:
            create = CreateThreadRequest.model_validate(body)
        except ValidationError as e:
            raise RequestError(f"invalid thread request: {_describe(e, CreateThreadRequest)}") from e
        thread, replayed = self._threads().create(caller, agent, create, idempotency_key=key)
        view = ThreadView.of(thread, self.base_url)
        log.info(_log, "thread created" if not replayed else "thread request replayed", thread=thread.thread_id,
                 agent=agent)
        headers = {"Location": view.links.self, **({"Idempotent-Replayed": "true"} if replayed else {})}
        return json_response(view.model_dump(mode="json"), 200 if replayed else 201, headers)

    def _get_thread(self, request: Request, caller: Caller, thread_id: str) -> Response:
        return json_response(ThreadView.of(self._threads().get(caller, thread_id), self.base_url).model_dump(mode="json"))

    def _post_to_thread(self, request: Request, caller: Caller, thread_id: str) -> Response:
        threads = self._threads()
        threads.get(caller, thread_id)  # an unknown thread is a 404 before the body is even read
        wait = live.wait_seconds(request.args.get("wait"), self.max_wait_s)
        key = idempotency_key(request)
        create = self._run_request(request)
        started = threads.post(caller, thread_id, create, idempotency_key=key,
                               traceparent=tracing.current_traceparent())
        return self._started(caller, started, wait)

    def _started(self, caller: Caller, started: Started, wait: float | None) -> Response:
        run = started.run
        if wait:
            run = live.wait_for_end(lambda: self.service.get(caller, started.run.run_id), wait)
        view = RunView.of(run, self.base_url)
        agent = run.agent
        log.annotate_request(run=started.run.run_id, agent=agent)
        log.info(_log, "run started" if not started.replayed else "run request replayed",
                 run=started.run.run_id, agent=agent, thread=run.thread_id)
        headers = {"Location": view.links.self, **({"Idempotent-Replayed": "true"} if started.replayed else {})}
        # 200 when the wait saw it end, 202 otherwise
        return json_response(view.model_dump(mode="json"), 200 if wait and run.status.terminal else 202, headers)

    def _get_run(self, request: Request, caller: Caller, run_id: str) -> Response:
        wait = live.wait_seconds(request.args.get("wait"), self.max_wait_s)
        run = self.service.get(caller, run_id)
        if wait:
            run = live.wait_for_end(lambda: self.service.get(caller, run_id), wait)
        return json_response(RunView.of(run, self.base_url).model_dump(mode="json"))

    def _list_runs(self, request: Request, caller: Caller) -> Response:
        size = _int_param(request, "page_size", 100, 1, MAX_PAGE_SIZE)
        after = _decode_position(request.args["page_token"]) if "page_token" in request.args else None
        raw_status = request.args.get("status")
        if raw_status is not None and raw_status not in set(RunStatus):
            raise RequestError(f"query parameter status must be one of {', '.join(s.value for s in RunStatus)} "
                               f"(or absent for all), got {raw_status[:40]!r}")
        status = RunStatus(raw_status) if raw_status is not None else None
        where = RunFilter(agent=_text_param(request, "agent"), status=status, principal=_text_param(request, "principal"),
                          thread=_text_param(request, "thread"),
                          created_after=_time_param(request, "created_after"),
                          created_before=_time_param(request, "created_before"))
        runs = self.service.list(caller, where, limit=size + 1, after=after)
        more = len(runs) > size
        last = runs[size - 1] if more else None
        page = RunsPage(runs=[RunView.of(r, self.base_url) for r in runs[:size]],
                        next_page_token=_encode(last.created_at, last.run_id) if last is not None else None)
        return json_response(page.model_dump(mode="json"))

    def _memories(self) -> MemoryService:
        if self.memory is None:
            raise NotFound("this deployment keeps no long-term memory (no agent declares Agent.memory)")
        return self.memory()

    def _list_memory(self, request: Request, caller: Caller) -> Response:
        """What is remembered about a user (docs/memory.md, "A user's memories"): every scope of theirs, a page each,
        or one scope (``agent``: an agent's name, or ``*`` for across agents) paged on."""
        memory = self._memories()
        user = _required_text(request, "user")
        agent = request.args.get("agent")
        size = _int_param(request, "page_size", 50, 1, 500)
        token = request.args.get("page_token")
        if token is not None and agent is None:
            raise RequestError("query parameter page_token needs agent: a page token continues one scope")
        if agent is None:
            scopes = memory.scopes_of(caller.tenant, user)
        else:
            name = None if agent == "*" else _text_param(request, "agent")
            scopes = [Scope(tenant=caller.tenant, agent=name, user=user)]
        views = []
        for scope in scopes:
            try:
                page = memory.view(caller.tenant, user, scope.agent, cursor=token, page_size=size)
            except ValueError as e:
                raise RequestError(f"query parameter page_token is not a token this endpoint gave: {e}") from e
            views.append(MemoryScopeView(agent=scope.agent, memories=[MemoryView.of(r) for r in page.records],
                                         next_page_token=page.next_cursor))
        return json_response(MemoryList(user=user, scopes=views).model_dump(mode="json"))

    def _erase_memory(self, request: Request, caller: Caller) -> Response:
        """Erase everything remembered about a user, in every backend the deployment keeps memory in."""
        user = _required_text(request, "user")
        deleted = self._memories().erase(caller.tenant, user)
        return json_response(MemoryErased(user=user, deleted=deleted).model_dump(mode="json"))

    def _list_events(self, request: Request, caller: Caller, run_id: str) -> Response:
        after = _int_param(request, "page_token", 0, 0, 10**18, _EVENTS_TOKEN)
        size = _int_param(request, "page_size", 100, 1, MAX_PAGE_SIZE)
        follow = _choice(request, "follow", ("true", "false"), "false") == "true"
        if follow:
            return self._follow(request, caller, run_id, after)
        events = self.service.events(caller, run_id, after_seq=after, limit=size + 1)
        more = len(events) > size
        page = EventsPage(events=[EventView.of(e) for e in events[:size]],
                          next_page_token=str(events[size - 1].seq) if more else None)
        return json_response(page.model_dump(mode="json"))

    def _follow(self, request: Request, caller: Caller, run_id: str, after: int) -> Response:
        """The run's events as ``text/event-stream``, from after ``page_token`` or the ``Last-Event-ID`` the
        client got last (a reconnection), until the run ended."""
        resumed = request.headers.get("Last-Event-ID")
        if resumed is not None:
            if not _EVENTS_TOKEN.fullmatch(resumed):
                raise RequestError(f"header Last-Event-ID must be the id of an event of this stream, got {resumed[:40]!r}")
            after = max(after, int(resumed))
        self.service.get(caller, run_id)  # an unknown run is a 404, not an empty stream
        texts = self.live_texts() if self.live_texts is not None else None
        stream = live.event_stream(
            lambda seq: self.service.events_of_checked(caller, run_id, after_seq=seq, limit=MAX_PAGE_SIZE),
            lambda: self.service.get(caller, run_id), after,
            lambda e: EventView.of(e).model_dump(mode="json"), max_seconds=self.stream_max_s,
            text=(lambda: texts.get(caller.tenant, run_id)) if texts is not None else None,
            watch=(lambda: self.service.watch(caller, run_id, live.WATCHED_FOR)) if texts is not None else None)
        return Response(stream, mimetype="text/event-stream", direct_passthrough=True,
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _schedule_service(self) -> ScheduleService:
        if self.schedules is None:
            raise NotFound("this deployment has no schedules")
        return self.schedules()

    def _list_schedules(self, request: Request, caller: Caller) -> Response:
        views = self._schedule_service().list(caller) if self.schedules is not None else []
        return json_response(ScheduleList(schedules=[ScheduleView.of(v) for v in views]).model_dump(mode="json"))

    def _pause_schedule(self, request: Request, caller: Caller, name: str) -> Response:
        view = self._schedule_service().set_paused(caller, name, True)
        return json_response(ScheduleView.of(view).model_dump(mode="json"))

    def _resume_schedule(self, request: Request, caller: Caller, name: str) -> Response:
        view = self._schedule_service().set_paused(caller, name, False)
        return json_response(ScheduleView.of(view).model_dump(mode="json"))

    def _cancel_run(self, request: Request, caller: Caller, run_id: str) -> Response:
        return json_response(RunView.of(self.service.cancel(caller, run_id), self.base_url).model_dump(mode="json"))

    def _list_approvals(self, request: Request, caller: Caller) -> Response:
        status = _status_param(request)
        size = _int_param(request, "page_size", 100, 1, MAX_PAGE_SIZE)
        after = _decode_position(request.args["page_token"]) if "page_token" in request.args else None
        approvals = self.approvals.list(caller, status=status, limit=size + 1, after=after)
        more = len(approvals) > size
        page = ApprovalsPage(approvals=[ApprovalView.of(a, self.base_url) for a in approvals[:size]],
                             next_page_token=_encode_position(approvals[size - 1]) if more else None)
        return json_response(page.model_dump(mode="json"))

    def _get_approval(self, request: Request, caller: Caller, approval_id: str) -> Response:
        approval = self.approvals.get(caller, approval_id)
        return json_response(ApprovalView.of(approval, self.base_url).model_dump(mode="json"))

    def _decide_approval(self, request: Request, caller: Caller, approval_id: str) -> Response:
        self.approvals.get(caller, approval_id)  # an unknown approval is a 404 before the body is even read
        key = idempotency_key(request)
        body = self._json_body(request)
        check_text(body, ("comment",))
        try:
            decide = DecideRequest.model_validate(body)
        except ValidationError as e:
            raise RequestError(f"invalid decision: {_describe(e, DecideRequest)}") from e
        submitted = self.approvals.decide(caller, approval_id, decide, idempotency_key=key)
        log.annotate_request(run=submitted.approval.run_id)
        view = DecisionView(decision_id=submitted.decision_id,
                            status="already_applied" if submitted.replayed else "submitted",
                            approval=ApprovalView.of(submitted.approval, self.base_url))
        log.info(_log, "decision replayed" if submitted.replayed else "decision submitted", approval=approval_id,
                 run=submitted.approval.run_id, decision=decide.decision.value, decision_id=submitted.decision_id)
        headers = {"Location": view.approval.links.self,
                   **({"Idempotent-Replayed": "true"} if submitted.replayed else {})}
        return json_response(view.model_dump(mode="json"), 202, headers)

    def _reports(self) -> Reports:
        if self.reports is None:
            raise NotFound("this deployment keeps no metrics")
        return self.reports

    def _agent_metrics(self, request: Request, caller: Caller, agent: str) -> Response:
        bucket = _choice(request, "bucket", ("hour", "day", "none"), "day")
        report = self._reports().agent_metrics(
            caller, agent, version=_text_param(request, "version"), start=_time_param(request, "from"),
            end=_time_param(request, "to"), bucket=bucket)  # type: ignore[arg-type]
        return json_response(report.model_dump(mode="json", by_alias=True))

    def _usage(self, request: Request, caller: Caller) -> Response:
        group_by = [g.strip() for g in request.args.get("group_by", "agent").split(",") if g.strip()]
        report = self._reports().usage(caller, group_by, start=_time_param(request, "from"),
                                       end=_time_param(request, "to"), agent=_text_param(request, "agent"))
        return json_response(report.model_dump(mode="json", by_alias=True))

    def _list_alerts(self, request: Request, caller: Caller) -> Response:
        page = self._reports().alerts(caller, agent=_text_param(request, "agent"), since=_time_param(request, "since"),
                                      limit=_int_param(request, "page_size", 100, 1, MAX_PAGE_SIZE))
        return json_response(page.model_dump(mode="json"))

    def _list_evals(self, request: Request, caller: Caller, agent: str) -> Response:
        accepted = _choice(request, "accepted", ("true", "false"), "")
        page = self._reports().evals(caller, agent, version=_text_param(request, "version"),
                                     accepted={"true": True, "false": False}.get(accepted),
                                     limit=_int_param(request, "page_size", 20, 1, 100))
        return json_response(page.model_dump(mode="json"))

    def _put_eval(self, request: Request, caller: Caller, agent: str) -> Response:
        self.agents.get(agent)
        body = self._json_body(request)
        try:
            submission = EvalSubmission.model_validate(body)
        except ValidationError as e:
            raise RequestError(f"invalid evaluation result: {_describe(e, EvalSubmission)}") from e
        view = self._reports().put_eval(caller, agent, submission)
        log.info(_log, "evaluation stored", agent=agent, version=view.version, eval_id=view.eval_id,
                 passed=view.passed, accepted=view.accepted)
        return json_response({"eval": view.model_dump(mode="json")}, 201)

    # --- parsing -------------------------------------------------------------------------------------

    def _json_body(self, request: Request) -> Any:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise PayloadTooLarge(f"request body is {request.content_length} bytes; the limit is {self.max_body_bytes}")
        if request.mimetype != "application/json":
            raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
        charset = request.mimetype_params.get("charset")
        if charset is not None and charset.lower().replace("-", "") != "utf8":
            raise UnsupportedMediaType(f"send the body as UTF-8 JSON, not {charset}: "
                                       "'Content-Type: application/json' or 'application/json; charset=utf-8'")
        # read at most one byte past the limit: a chunked body has no Content-Length to refuse early
        raw = request.stream.read(self.max_body_bytes + 1)
        if len(raw) > self.max_body_bytes:
            raise PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes")
        return parse_json(raw)


_INTEGER = re.compile("-?[0-9]{1,20}")
_EVENTS_TOKEN = re.compile(EVENTS_TOKEN_PATTERN)


def _int_param(request: Request, name: str, default: int, low: int, high: int,
               pattern: re.Pattern[str] = _INTEGER) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not pattern.fullmatch(raw):
        what = "an integer" if pattern is _INTEGER else "the next_page_token of a previous page"
        raise RequestError(f"query parameter {name} must be {what}, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise RequestError(f"query parameter {name} must be between {low} and {high}, got {value}")
    return value


_TEXT_PARAM = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")


def _text_param(request: Request, name: str) -> str | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not _TEXT_PARAM.fullmatch(raw):
        raise RequestError(f"query parameter {name} must be 1-128 letters, digits or _.@:+-, got {raw[:40]!r}")
    return raw


def _required_text(request: Request, name: str) -> str:
    value = _text_param(request, name)
    if value is None:
        raise RequestError(f"query parameter {name} is required")
    return value


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise RequestError(f"query parameter {name} must be an ISO 8601 time with its offset, like "
                           f"2026-11-29T10:00:00Z; got {raw[:40]!r}")
    # before the first run or past the last representable day, a time means the same as those bounds
    low, high = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)
    try:
        return min(max(value.astimezone(UTC), low), high)
    except OverflowError:
        return low if value.year < 1970 else high


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = request.args.get(name, default)
    if raw != default and raw not in allowed:
        raise RequestError(f"query parameter {name} must be one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def _status_param(request: Request) -> ApprovalStatus | None:
    raw = request.args.get("status")
    if raw is None:
        return None
    try:
        return ApprovalStatus(raw)
    except ValueError:
        allowed = ", ".join(s.value for s in ApprovalStatus)
        raise RequestError(f"query parameter status must be one of {allowed} (or absent for all), "
                           f"got {raw!r}") from None


def _encode_position(approval: Approval) -> str:
    """The page token after ``approval``: its place in the listing's order, opaque to clients."""
    return _encode(approval.created_at, approval.approval_id)


def _encode(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_position(token: str) -> tuple[datetime, str]:
    try:
        created_at, approval_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = datetime.fromisoformat(created_at), approval_id
    except (ValueError, TypeError, RecursionError):
        position = None  # base64, UTF-8, JSON and ISO 8601 errors are all ValueErrors, a wrong shape a TypeError
    if position is None or position[0].tzinfo is None or not isinstance(position[1], str):
        raise RequestError("query parameter page_token is not a token this API returned; pass the "
                           "next_page_token of the previous page, or leave it out to start from the beginning")
    return position


def _describe(e: ValidationError, model: type[BaseModel]) -> str:
    return validation_problems(e, "body", fields=list(model.model_fields))

