"""``agex dev --backend memory``: the whole system in one process, on the in-memory adapters. No Java, no
Google emulators; ready in about a second.

- The composition root, ``Runtime(settings, Backends.in_memory(...))``, with the real clock: the same services
  and handlers as the functions, on memory instead of Firestore, Cloud Tasks, Pub/Sub and Secret Manager.
- The public API (``runtime.public_api``, behind the API's body limits) served by werkzeug's threaded server on
  127.0.0.1, with the dev tokens of the emulator stack.
- The Gemini emulator's WSGI app, served in this process on another loopback port, scripted by a scenario
  directory; the agents talk to it through ``GeminiModel``, the real ``google-genai`` client.
- A dispatcher thread playing Cloud Tasks and the decisions' push subscription: it hands each due task of the
  in-memory queue to a small pool of workers (``runtime.runner`` for a step, ``runtime.applier.expire`` for an
  approval's expiry), retries the deliveries that ask for it (a lease held elsewhere, a task not due, a
  transient error, a crash) with backoff, applies each decision published on ``agex-approval-decisions``
  (``runtime.applier.apply``: the in-memory backend signs decisions and trusts its own key), dead-letters the
  ones that can never be applied, and sweeps as Cloud Scheduler would. Timers and approval expiry are
  scheduled tasks, which become due by the clock.

Everything lives in this process's memory: stopping it forgets every run. No secret is granted to any agent
(a tool that needs one fails as access denied): the emulator stack provisions them from the fleet file.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request

from agex.app.settings import Settings
from agex.dev.stack import DEV_TOKENS, HOST, REPO
from agex.obs import logging as log

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from agex.adapters.gcp.gemini import GeminiModel
    from agex.adapters.inmemory.event_bus import InMemoryEventBus, Published
    from agex.adapters.inmemory.task_queue import InMemoryTaskQueue
    from agex.app.runtime import Runtime
    from agex.ports.task_queue import Task

_log = log.get("dev")


@dataclass
class EmbeddedConfig:
    api_port: int = 8080
    """0 picks a free port."""
    fleet_file: Path | None = field(default_factory=lambda: REPO / "examples" / "fleet.yaml")
    """The agents (``agex.app.fleet``); None to run ``agents``."""
    agents: str = ""
    """Without a fleet file: ``module:attribute`` specs, comma-separated."""
    scenarios: Path = field(default_factory=lambda: REPO / "examples" / "scenarios")
    """The Gemini emulator's scenario directory."""
    project_dir: Path | None = None
    """Put first on ``sys.path`` (with the repository's root after it) so the agents' modules import."""
    dev_tokens: str = DEV_TOKENS
    step_lease_seconds: float = 30.0
    sweep_every_seconds: float = 10.0
    sweep_after_seconds: float = 30.0
    drift_every_seconds: float = 5.0
    """How often the drift check runs (hourly in the cloud)."""
    drift_window_seconds: float = 3600.0
    workers: int = 4
    """Deliveries made at once (the instances Cloud Run would start)."""
    min_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    """A delivery asking for a retry is retried after this backoff, doubling from the minimum (the local
    queue's)."""
    decision_max_attempts: int = 5
    """Attempts at applying a decision before it goes to ``agex-approval-decisions-dead`` (the push
    subscription's)."""
    log_file: Path | None = None
    """Where this process's ``agex`` logs go from the start (``agex dev``: ``.agex/logs/agex.log``); None
    leaves logging as it is."""
    model_settings: dict[str, str] = field(default_factory=dict)
    """``AGEX_*`` settings of a real model (``agex.dev.models.settings_for``); empty: the Gemini emulator."""


class Embedded:
    """The system in this process; ``start()`` returns when the API answers, ``stop()`` stops every thread and
    server it started (``with Embedded(config) as system: ...``)."""

    def __init__(self, config: EmbeddedConfig | None = None) -> None:
        self.config = config or EmbeddedConfig()
        self.api_url = ""
        self.gemini_url = ""
        self.started_s = 0.0
        """Seconds ``start()`` took."""
        self.runtime: Runtime | None = None
        self.model: GeminiModel | None = None
        self.dispatcher: Dispatcher | None = None
        self._body_limits: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]] | None = None
        self._servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(self) -> Embedded:
        t0 = time.perf_counter()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.perf_counter() - t0
        # google-genai is the heaviest import (GeminiModel makes it on its first call): not at start, nor in
        # the first step
        threading.Thread(target=lambda: _quietly(lambda: importlib.import_module("google.genai")),
                         name="agex-warm-model", daemon=True).start()
        return self

    def _start(self) -> None:
        from agex.adapters.gcp.gemini import GeminiModel
        from agex.app.backends import Backends
        from agex.app.http import limits
        from agex.app.runtime import Runtime
        from agex.core.clock import SystemClock
        from agex.dev.emulators.gemini.scenario import load_scenarios
        from agex.dev.emulators.gemini.server import EmulatorApp

        c = self.config
        if c.log_file is not None:
            log_to_file(c.log_file, Settings().project)
        if c.fleet_file is None and not c.agents.strip():
            raise ValueError("the embedded system needs agents: a fleet file (fleet_file) or module:attribute "
                             "specs (agents)")
        for path in reversed([*([c.project_dir] if c.project_dir is not None else []), REPO]):
            if str(Path(path).resolve()) not in sys.path:
                sys.path.insert(0, str(Path(path).resolve()))

        gemini = self._serve("gemini", 0, EmulatorApp(load_scenarios(c.scenarios)))
        self.gemini_url = f"http://{HOST}:{gemini.port}"
        # bound before the runtime is built, which needs the API's URL for its links; served after
        api = self._bind(c.api_port, self._api)
        self.api_url = f"http://{HOST}:{api.port}"
        chosen = {k.removeprefix("AGEX_").lower(): json.loads(v) if k == "AGEX_PRICES" else v
                  for k, v in c.model_settings.items()}
        real = chosen.get("model_provider") is not None
        values: dict[str, Any] = {
            "fleet_file": str(Path(c.fleet_file).resolve()) if c.fleet_file is not None else "", "agents": c.agents,
            "authenticator": "dev", "dev_tokens": c.dev_tokens, "public_url": self.api_url,
            "gemini_base_url": self.gemini_url, "gemini_api_key": "local-emulator-key", "vertex": False,
            "step_lease_seconds": c.step_lease_seconds, "sweep_after_seconds": c.sweep_after_seconds,
            "drift_interval_seconds": c.drift_every_seconds, "drift_window_seconds": c.drift_window_seconds,
            **chosen}
        settings = Settings(**values)
        if real:
            models = Backends.gcp(settings).models()
        else:
            self.model = model = GeminiModel(api_key=settings.gemini_api_key, base_url=settings.gemini_base_url,
                                             timeout_seconds=settings.model_timeout_seconds)
            models = lambda agent: model  # noqa: E731
        runtime = self.runtime = Runtime(settings, Backends.in_memory(models, clock=SystemClock()))
        runtime.agents  # noqa: B018 - load and check the agents now: a mistake in them stops the start
        self._body_limits = limits.BodyLimits(self._public_api, max_body_bytes=limits.body_limit(settings.max_input_bytes),
                                              read_timeout_s=settings.request_timeout_seconds)
        self.dispatcher = Dispatcher(runtime, workers=c.workers, min_backoff_s=c.min_backoff_seconds,
                                     max_backoff_s=c.max_backoff_seconds, sweep_every_s=c.sweep_every_seconds,
                                     decision_max_attempts=c.decision_max_attempts,
                                     drift_every_s=c.drift_every_seconds).start()
        self._run("api", api)

    def stop(self) -> None:
        """The API first (no new work), then the deliveries under way (they may still call the model), then
        the Gemini emulator."""
        servers, self._servers = list(reversed(self._servers)), []
        for server, thread in servers[:1]:
            _close(server, thread)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        for server, thread in servers[1:]:
            _close(server, thread)

    def __enter__(self) -> Embedded:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, str]:
        c = self.config
        agents = {"fleet": str(c.fleet_file)} if c.fleet_file is not None else {"agents": c.agents}
        return {"api": self.api_url, "gemini": self.gemini_url, "backend": "memory, in this process",
                **agents, "scenarios": str(c.scenarios), **({"logs": str(c.log_file)} if c.log_file else {})}

    # --- pieces ---------------------------------------------------------------------------------------

    def _api(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        assert self._body_limits is not None
        return self._body_limits(cast(dict[str, Any], environ), start_response)

    def _public_api(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert self.runtime is not None
        response = self.runtime.public_api(Request(environ))
        return cast(Iterable[bytes], response(environ, start_response))

    def _bind(self, port: int, app: Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]) -> BaseWSGIServer:
        # bound here: werkzeug's own bind exits the process when the port is taken
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug's and gunicorn's servers
            sock.bind((HOST, port))
            sock.listen(128)
            server = make_server(HOST, sock.getsockname()[1], app, threaded=True, request_handler=_QuietHandler,
                                 fd=sock.fileno())
        except OSError as e:
            raise OSError(f"cannot serve on {HOST}:{port}: {e.strerror or e}; give another port (--port)") from e
        finally:
            sock.close()  # the server holds its own duplicate
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"agex-server-{server.port}", daemon=True)
        self._servers.append((server, thread))
        return server

    def _serve(self, name: str, port: int, app: Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]
               ) -> BaseWSGIServer:
        server = self._bind(port, app)
        self._run(name, server)
        return server

    def _run(self, name: str, server: BaseWSGIServer) -> None:
        thread = next(t for s, t in self._servers if s is server)
        thread.name = f"agex-{name}"
        thread.start()


def _close(server: BaseWSGIServer, thread: threading.Thread) -> None:
    with contextlib.suppress(Exception):
        if thread.is_alive():  # shutdown() waits for serve_forever, which a bound-only server never ran
            server.shutdown()
            thread.join(timeout=5)
        server.server_close()


class _QuietHandler(WSGIRequestHandler):
    """No line per request on the console (``agex`` polls); errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Dispatcher:
    """Cloud Tasks, the decisions' push subscription and Cloud Scheduler's sweep, for a runtime on the
    in-memory backend and the real clock (see the module's docstring)."""

    TICK_S = 0.05

    def __init__(self, runtime: Runtime, *, workers: int = 4, min_backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 sweep_every_s: float = 10.0, decision_max_attempts: int = 5, instance: str = "",
                 drift_every_s: float = 5.0) -> None:
        self.runtime = runtime
        self.queue = cast("InMemoryTaskQueue", runtime.queue)
        self.bus = cast("InMemoryEventBus", runtime.bus)
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.sweep_every_s, self.decision_max_attempts = sweep_every_s, decision_max_attempts
        self.drift_every_s = drift_every_s
        self.instance = instance or f"embedded-{os.getpid()}"
        self._workers = workers
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._work: queue.Queue[Task | None] = queue.Queue()
        self._inflight: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._seen = 0
        self._decisions: list[_Pending] = []
        self._threads: list[threading.Thread] = []
        self.delivered = 0
        """Deliveries that completed (acknowledged), for tests and stats."""

    def start(self) -> Dispatcher:
        self._threads = [threading.Thread(target=self._loop, name="agex-dispatcher", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"agex-worker-{i}", daemon=True)
                          for i in range(self._workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching; wait up to ``timeout`` for the deliveries under way (a stuck tool is left behind:
        the threads are daemons)."""
        self._stop.set()
        self._wake.set()
        for _ in range(self._workers):
            self._work.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self.sweep_every_s
        next_drift = time.monotonic() + self.drift_every_s
        while not self._stop.is_set():
            self._wake.wait(self.TICK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._apply_decisions()
                self._dispatch_due()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_every_s
                    self._sweep()
                if time.monotonic() >= next_drift:
                    next_drift = time.monotonic() + self.drift_every_s
                    self.runtime.drift.check()
            except Exception:  # the loop outlives any one bad pass
                _log.exception("the dispatcher's pass failed; it goes on")

    def _dispatch_due(self) -> None:
        now, mono = self.runtime.clock.now(), time.monotonic()
        for task in self.queue.pending():
            if task.schedule_at is not None and task.schedule_at > now:
                continue
            with self._lock:
                if task.name in self._inflight or self._retry_at.get(task.name, 0.0) > mono:
                    continue
                self._inflight.add(task.name)
            self._work.put(task)

    def _worker(self) -> None:
        while True:
            task = self._work.get()
            if task is None:
                return
            with self._lock:
                attempt = self._attempts.get(task.name, 0)
            done = self._deliver(task, attempt)
            with self._lock:
                if done:
                    self.queue.drop(task)  # acknowledged: it leaves the queue
                    self._attempts.pop(task.name, None)
                    self._retry_at.pop(task.name, None)
                    self.delivered += 1
                else:
                    self._attempts[task.name] = attempt + 1
                    self._retry_at[task.name] = time.monotonic() + self._backoff(attempt)
                self._inflight.discard(task.name)
            self._wake.set()  # a step usually enqueues the next one

    def _deliver(self, task: Task, attempt: int) -> bool:
        """One delivery, as the step function answers Cloud Tasks: True acknowledges, False asks for a retry."""
        from opentelemetry import context

        from agex.core.errors import LeaseHeld, NotDue, NotFound, TransientError
        from agex.engine.decisions import Delivery
        from agex.obs import tracing
        from agex.ports.task_queue import ApprovalExpiryTask, MemoryTask, ThreadTask, WebhookTask

        rt = self.runtime
        token = context.attach(tracing.extract({"traceparent": task.traceparent} if task.traceparent else {}))
        try:
            if isinstance(task, ApprovalExpiryTask):
                rt.applier.expire(task.tenant, task.run_id, task.approval_id)
            elif isinstance(task, WebhookTask):
                rt.webhooks.deliver(task.tenant, task.run_id, task.webhook)
            elif isinstance(task, ThreadTask):
                rt.threads.advance(task.tenant, task.thread_id, task.run_id)
            elif isinstance(task, MemoryTask):
                if rt.memory is not None:
                    rt.memory.learn(task.tenant, task.run_id)
            else:
                rt.runner.run(Delivery.of(task, attempt, self.instance))
            return True
        except (LeaseHeld, NotDue, TransientError) as e:
            _log.info("task %s: %s; retried later", task.name, e.message)
            return False
        except NotFound as e:
            _log.warning("acknowledged a task for a missing run: %s", e.message)
            return True
        except Exception:
            _log.exception("task %s crashed; retried later", task.name)
            return False
        finally:
            context.detach(token)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.min_backoff_s * 2 ** min(attempt, 16)))

    # --- decisions and the sweep ------------------------------------------------------------------------

    def _apply_decisions(self) -> None:
        from agex.core.approval import DECISIONS_TOPIC

        published = self.bus.messages[self._seen:]  # append-only: read past what was seen
        self._seen += len(published)
        self._decisions += [_Pending(m) for m in published if m.topic == DECISIONS_TOPIC]
        mono = time.monotonic()
        for pending in [p for p in self._decisions if p.retry_at <= mono]:
            if self._apply(pending):
                self._decisions.remove(pending)

    def _apply(self, pending: _Pending) -> bool:
        """One push of one decision, as the approvals function answers it: True when it is done with (applied,
        understood, or dead-lettered)."""
        from pydantic import ValidationError

        from agex.core.approval import DecisionMessage
        from agex.engine.approvals import Applied

        message = pending.message
        try:
            outcome = self.runtime.applier.apply(DecisionMessage.model_validate(message.message))
        except ValidationError as e:
            return self._dead_letter(pending, f"not a decision: {e.errors()[0]['msg']}")
        except Exception as e:
            pending.attempts += 1
            if pending.attempts >= self.decision_max_attempts:
                return self._dead_letter(pending, f"{type(e).__name__}: {e}")
            _log.warning("decision message %s not applied yet (%s); retried later", message.id, e)
            pending.retry_at = time.monotonic() + self._backoff(pending.attempts - 1)
            return False
        if outcome.result == Applied.unauthenticated:
            return self._dead_letter(pending, outcome.detail)
        return True

    def _dead_letter(self, pending: _Pending, why: str) -> bool:
        from agex.core.approval import DECISIONS_DEAD_LETTER_TOPIC

        _log.warning("decision message %s dead-lettered: %s", pending.message.id, why)
        self.bus.publish(DECISIONS_DEAD_LETTER_TOPIC, pending.message.message, pending.message.attributes)
        return True

    def _sweep(self) -> None:
        rt = self.runtime
        report = rt.service.sweep()
        expired = rt.applier.sweep(rt.service.sweep_after)
        if report.reenqueued or report.expired or expired:
            _log.info("sweep: %s re-enqueued, %s expired, %s approvals expired", report.reenqueued, report.expired,
                      expired)


class _Pending:
    def __init__(self, message: Published) -> None:
        self.message, self.attempts, self.retry_at = message, 0, 0.0


def _quietly(fn: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        fn()


def log_to_file(path: Path, project: str = "agex-local") -> None:
    """Send the ``agex`` loggers of this process to ``path`` (Cloud Logging JSON, as the functions write it),
    so the console keeps to what ``agex dev`` prints. Once per path."""
    root = logging.getLogger("agex")
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()) for h in root.handlers):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(log.CloudLoggingFormatter(project))
    root.addHandler(handler)
    root.setLevel(os.environ.get("AGEX_LOG_LEVEL", "INFO"))
    root.propagate = False
