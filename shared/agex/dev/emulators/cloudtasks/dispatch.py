"""Pushing due tasks to their HTTP targets.

A single scheduler thread sleeps on the store's condition variable until
the earliest due task of a running queue (or a rate-limit token) is
available, and hands each attempt to a small pool of worker threads that do
the blocking HTTP call. Results come back under the lock, where the task is
either finished or rescheduled per its retry policy.
"""

from __future__ import annotations

import functools
import heapq
import http
import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import grpc
import requests
from google.api_core import exceptions as core_exceptions

from . import protos
from .config import EmulatorConfig
from .errors import ApiError
from .oidc import OidcSigner, fake_access_token
from .queue_config import effective_retry_config
from .retry import RetryPolicy, backoff_after, should_give_up
from .state import QueueState, Store, TaskState, task_view
from .task_input import USER_AGENT

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Headers the service computes itself or reserves; task values are dropped.
_RESERVED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
_RESERVED_HEADERS = frozenset({"host", "content-length", "user-agent"})
_DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_OK = grpc.StatusCode.OK.value[0]
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]


@dataclass(frozen=True)
class AttemptSpec:
    queue: QueueState
    task: TaskState
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    deadline: float
    # (service account email, audience) when an OIDC token must be attached.
    oidc: tuple[str, str] | None


@dataclass(frozen=True)
class AttemptOutcome:
    http_status: int | None  # None when no response arrived
    rpc_code: int
    message: str
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def reason(self) -> str:
        """Value of X-CloudTasks-TaskRetryReason on the next attempt (format is not documented)."""
        if self.http_status is not None:
            return f"HTTP_STATUS_{self.http_status}"
        return "DEADLINE_EXCEEDED" if self.rpc_code == _DEADLINE_EXCEEDED else "UNAVAILABLE"


def _rpc_code_for_http(status: int) -> int:
    if 200 <= status < 300:
        return _OK
    code = core_exceptions.from_http_status(status, "").grpc_status_code
    return code.value[0] if code is not None else _UNKNOWN


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class _WorkerPool:
    """Daemon threads, started on demand, so a target that never answers cannot block exit."""

    def __init__(self, max_workers: int) -> None:
        self._max = max(1, max_workers)
        self._jobs: queue_mod.SimpleQueue[Callable[[], None] | None] = queue_mod.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._outstanding = 0  # submitted and not yet finished

    @property
    def size(self) -> int:
        return self._max

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._outstanding += 1
            if self._outstanding > len(self._threads) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"cloudtasks-dispatch-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("dispatch job failed")
            finally:
                with self._lock:
                    self._outstanding -= 1

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))


def apply_uri_override(url: str, override: protos.QueueMsg) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme
    if override.HasField("scheme") and override.scheme:
        scheme = "http" if override.scheme == 1 else "https"
    host = parts.hostname or ""
    port = parts.port
    if override.HasField("host"):
        host = override.host
    if override.HasField("port"):
        port = override.port or None
    netloc = host if port is None else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    path = override.path_override.path if override.HasField("path_override") else parts.path
    query = override.query_override.query_params if override.HasField("query_override") else parts.query
    return urlunsplit((scheme, netloc, path, query, ""))


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def build_attempt(q: QueueState, t: TaskState, previous_attempts: int) -> AttemptSpec:
    """The HTTP request for the next attempt of ``t``, with queue-level overrides applied."""
    hr = t.msg.http_request
    method = protos.http_method_name(hr.http_method)
    url = hr.url
    headers = dict(hr.headers)
    auth_source = hr
    if q.msg.HasField("http_target"):
        target = q.msg.http_target
        if target.HasField("uri_override") and target.uri_override.uri_override_enforce_mode != 1:
            # IF_NOT_EXISTS only fills in what the task lacks, and HTTP tasks always carry a URL.
            url = apply_uri_override(url, target.uri_override)
        if target.http_method:
            method = protos.http_method_name(target.http_method)
        for override in target.header_overrides:
            key = override.header.key
            for existing in [k for k in headers if k.lower() == key.lower()]:
                del headers[existing]
            headers[key] = override.header.value
        if target.WhichOneof("authorization_header"):
            auth_source = target

    out = {
        k: v
        for k, v in headers.items()
        if k.lower() not in _RESERVED_HEADERS and not k.lower().startswith(_RESERVED_PREFIXES)
    }
    queue_id = q.name.rsplit("/", 1)[-1]
    out["User-Agent"] = USER_AGENT
    out["X-CloudTasks-QueueName"] = queue_id
    out["X-CloudTasks-TaskName"] = t.task_id
    out["X-CloudTasks-TaskRetryCount"] = str(previous_attempts)
    out["X-CloudTasks-TaskExecutionCount"] = str(t.execution_count)
    out["X-CloudTasks-TaskETA"] = repr(protos.timestamp_seconds(t.msg.schedule_time))
    if previous_attempts > 0:
        out["X-CloudTasks-TaskPreviousResponse"] = str(t.previous_status or 0)
        if t.previous_reason:
            out["X-CloudTasks-TaskRetryReason"] = t.previous_reason

    oidc: tuple[str, str] | None = None
    auth_kind = auth_source.WhichOneof("authorization_header")
    if auth_kind is not None:
        for key in [k for k in out if k.lower() == "authorization"]:
            del out[key]
    if auth_kind == "oidc_token":
        token = auth_source.oidc_token
        oidc = (token.service_account_email, token.audience or _without_query(url))
    elif auth_kind == "oauth_token":
        token = auth_source.oauth_token
        out["Authorization"] = "Bearer " + fake_access_token(
            token.service_account_email, token.scope or _DEFAULT_OAUTH_SCOPE
        )

    body = bytes(hr.body) if method in _BODY_METHODS else b""
    return AttemptSpec(
        queue=q,
        task=t,
        method=method,
        url=url,
        headers=out,
        body=body,
        deadline=protos.duration_seconds(t.msg.dispatch_deadline),
        oidc=oidc,
    )


class Dispatcher:
    def __init__(self, store: Store, signer: OidcSigner, config: EmulatorConfig) -> None:
        self._store = store
        self._cond = store.cond
        self._signer = signer
        self._pool = _WorkerPool(config.dispatch_workers)
        self._busy = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._schedule_loop, name="cloudtasks-scheduler", daemon=True)
        self._local = threading.local()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._pool.shutdown(timeout=0.5)

    # -- RunTask ---------------------------------------------------------------

    def run_task(self, name: str, view: int) -> protos.TaskMsg:
        """Dispatch now, regardless of schedule, pause state, rate limits or a running attempt."""
        with self._cond:
            q, t = self._store.task(name)
            if self._stopping:
                raise ApiError(grpc.StatusCode.UNAVAILABLE, "The emulator is shutting down.")
            q.unschedule(t)
            spec = self._begin_attempt(q, t, time.time())
            result = task_view(t.msg, view)
        self._pool.submit(functools.partial(self._execute, spec))
        return result

    # -- scheduling (lock held) -----------------------------------------------

    def _schedule_loop(self) -> None:
        with self._cond:
            while not self._stopping:
                timeout: float | None = None
                now, now_mono = time.time(), time.monotonic()
                for q in list(self._store.queues.values()):
                    wait = self._pump(q, now, now_mono)
                    if wait is not None:
                        timeout = wait if timeout is None else min(timeout, wait)
                # Woken by notify_all on any state change; otherwise sleeps
                # exactly until the next due time or token.
                self._cond.wait(timeout)

    def _pump(self, q: QueueState, now: float, now_mono: float) -> float | None:
        """Start every attempt ``q`` allows now; return seconds until it may allow another."""
        if not q.running:
            return None
        rl = q.msg.rate_limits
        while q.heap:
            due, seq, task_id = q.heap[0]
            t = q.tasks.get(task_id)
            if t is None or t.seq != seq:
                heapq.heappop(q.heap)
                continue
            if due > now:
                return due - now
            if q.in_flight >= rl.max_concurrent_dispatches or self._busy >= self._pool.size:
                return None  # a completion will notify
            q.refill_tokens(now_mono)
            if q.tokens < 1.0:
                return (1.0 - q.tokens) / rl.max_dispatches_per_second
            heapq.heappop(q.heap)
            q.unschedule(t)
            q.tokens -= 1.0
            spec = self._begin_attempt(q, t, now)
            self._pool.submit(functools.partial(self._execute, spec))
        return None

    def _begin_attempt(self, q: QueueState, t: TaskState, now: float) -> AttemptSpec:
        previous = t.msg.dispatch_count
        spec = build_attempt(q, t, previous)
        t.msg.dispatch_count += 1
        t.running += 1
        q.in_flight += 1
        q.stats.dispatched += 1
        self._busy += 1
        attempt = protos.Attempt()
        attempt.schedule_time.CopyFrom(t.msg.schedule_time)
        protos.set_timestamp(attempt.dispatch_time, now)
        if previous == 0:
            t.first_dispatch_at = now
            # The service retains only the dispatch time of the first attempt.
            protos.set_timestamp(t.msg.first_attempt.dispatch_time, now)
        t.msg.last_attempt.CopyFrom(attempt)
        return spec

    # -- attempts (worker threads) --------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Targets are local services; proxy settings from the environment
            # would route loopback traffic away.
            session.trust_env = False
            self._local.session = session
        return session

    def _execute(self, spec: AttemptSpec) -> None:
        headers = dict(spec.headers)
        if spec.oidc is not None:
            headers["Authorization"] = "Bearer " + self._signer.id_token(*spec.oidc)
        outcome = self._send(spec, headers)
        self._finish(spec, outcome)

    def _send(self, spec: AttemptSpec, headers: dict[str, str]) -> AttemptOutcome:
        started = time.monotonic()
        try:
            response = self._session().request(
                spec.method,
                spec.url,
                headers=headers,
                data=spec.body or None,
                timeout=(spec.deadline, spec.deadline),
                allow_redirects=True,
            )
        except requests.Timeout:
            return AttemptOutcome(None, _DEADLINE_EXCEEDED, "Deadline exceeded")
        except requests.RequestException as exc:
            return AttemptOutcome(None, _UNAVAILABLE, f"Target unreachable: {exc}")
        with response:
            # requests times out per socket read; a target trickling its reply
            # must still not outlive the whole-request deadline.
            if time.monotonic() - started > spec.deadline:
                return AttemptOutcome(None, _DEADLINE_EXCEEDED, "Deadline exceeded")
            status = response.status_code
            return AttemptOutcome(
                status,
                _rpc_code_for_http(status),
                _phrase(status),
                _retry_after(response.headers.get("Retry-After")),
            )

    def _finish(self, spec: AttemptSpec, outcome: AttemptOutcome) -> None:
        q, t = spec.queue, spec.task
        with self._cond:
            now = time.time()
            q.in_flight -= 1
            t.running -= 1
            self._busy -= 1
            self._cond.notify_all()
            last = t.msg.last_attempt
            protos.set_timestamp(last.response_time, now)
            last.response_status.CopyFrom(protos.Status(code=outcome.rpc_code, message=outcome.message))
            if outcome.http_status is not None:
                t.msg.response_count += 1
                if outcome.http_status < 500:
                    t.execution_count += 1
            t.previous_status = outcome.http_status
            t.previous_reason = None if outcome.succeeded else outcome.reason
            log.debug("%s -> %s (%s)", t.msg.name, outcome.http_status, outcome.message)

            if self._store.queues.get(q.name) is not q or q.tasks.get(t.task_id) is not t:
                return  # deleted or purged while in flight
            if outcome.succeeded:
                q.stats.succeeded += 1
                q.remove(t)
                return
            q.stats.failed_attempts += 1
            if t.running > 0:
                return  # a concurrent RunTask attempt decides what happens next
            policy = RetryPolicy.from_proto(effective_retry_config(q.msg, t.msg))
            attempts = t.msg.dispatch_count
            if should_give_up(attempts, now - (t.first_dispatch_at or now), policy):
                log.info("dropping %s after %d attempts (last: %s)", t.msg.name, attempts, outcome.message)
                q.stats.dropped += 1
                q.remove(t)
                return
            delay = backoff_after(attempts, policy)
            if outcome.retry_after is not None and outcome.http_status in (429, 503):
                delay = min(max(delay, outcome.retry_after), policy.max_backoff)
            q.schedule(t, now + delay)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form is rare for task handlers; ignored
