"""What the scripted model emulators (Gemini, OpenAI-compatible) share beyond request draining: their
scenarios, injected faults and request log behind the same ``/_emulator/*`` admin endpoints, and the same
command line, so a test or a benchmark drives either alike. Each answers in its own API's error shape."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from agex.dev.emulators.draining import DrainingApp
from agex.dev.emulators.gemini.faults import FaultQueue, FaultRequest, TurnFaultTracker
from agex.dev.emulators.gemini.scenario import ScenarioError, ScenarioSet, load_scenarios


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json",
                    headers=headers)


class RequestLog:
    """Bounded log of model requests, for tests and benchmarks to inspect."""

    def __init__(self, maxlen: int) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._dropped = 0

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if len(self._entries) == self._entries.maxlen:
                self._dropped += 1
            self._entries.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": list(self._entries), "dropped": self._dropped}

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            self._dropped = 0
        return n


class ScriptedModelApp(DrainingApp):
    """Subclasses serve their API in ``_dispatch`` (sending ``/_emulator/...`` to :meth:`_admin`) and say how
    their API words an error (``_api_error``, ``_invalid``); ``_admin_more`` and ``_reset_more`` add their own
    admin endpoints and state."""

    invalid_json = "Invalid JSON payload received."

    def __init__(self, scenarios: ScenarioSet, latency_ms: int = 0, log_size: int = 10_000,
                 keep_bodies: bool = False) -> None:
        self.scenarios = scenarios
        self.latency_ms = latency_ms
        self.keep_bodies = keep_bodies
        """Keep each request's body in the request log, so tests can check what a model was sent."""
        self.faults = FaultQueue()
        self.turn_faults = TurnFaultTracker()
        self.log = RequestLog(log_size)
        super().__init__()

    def _api_error(self, status: int, message: str) -> Exception:
        raise NotImplementedError

    def _invalid(self, message: str) -> Exception:
        raise NotImplementedError

    def _admin_more(self, request: Request, name: str, method: str) -> Response | None:
        return None

    def _reset_more(self) -> None:
        return None

    def _admin_body(self, request: Request) -> Any:
        raw = request.get_data(cache=False)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._invalid(f"{self.invalid_json} ({exc})") from None

    def _health(self) -> Response:
        return json_response({"status": "ok", "scenarios": len(self.scenarios.scenarios)})

    def _admin(self, request: Request, name: str, method: str) -> Response:
        """``/_emulator/{name}``: faults (POST one, GET the pending, DELETE all), the request log (GET, DELETE),
        the scenarios (GET, and POST ``scenarios/reload`` from their directory) and ``reset`` (POST)."""
        routes: dict[tuple[str, str], Callable[[], Response]] = {
            ("faults", "POST"): lambda: self._add_fault(request),
            ("faults", "DELETE"): lambda: json_response({"cleared": self.faults.clear()}),
            ("faults", "GET"): lambda: json_response({"pending": self.faults.pending()}),
            ("requests", "GET"): lambda: json_response(self.log.snapshot()),
            ("requests", "DELETE"): lambda: json_response({"cleared": self.log.clear()}),
            ("scenarios", "GET"): lambda: json_response({
                "directory": str(self.scenarios.directory),
                "scenarios": [{"name": s.name, "file": s.source} for s in self.scenarios.scenarios]}),
            ("scenarios/reload", "POST"): self._reload,
            ("reset", "POST"): self._reset,
        }
        route = routes.get((name, method))
        if route is not None:
            return route()
        more = self._admin_more(request, name, method)
        if more is not None:
            return more
        if any(n == name for n, _ in routes):
            raise self._api_error(405, f"/_emulator/{name} does not accept {method}.")
        raise self._api_error(404, f"Unknown emulator admin endpoint /_emulator/{name}.")

    def _add_fault(self, request: Request) -> Response:
        try:
            fault = self.faults.add(FaultRequest.model_validate(self._admin_body(request)))
        except ValidationError as exc:
            raise self._invalid(f"Invalid fault: {exc.errors(include_url=False)}") from None
        return json_response({"queued": fault.as_json(), "pending": self.faults.pending()})

    def _reload(self) -> Response:
        try:
            # swapping the reference is atomic: requests in flight keep the old set
            self.scenarios = load_scenarios(self.scenarios.directory)
        except ScenarioError as exc:
            raise self._invalid(str(exc)) from None
        return json_response({"scenarios": [s.name for s in self.scenarios.scenarios]})

    def _reset(self) -> Response:
        # everything stateful, so a test can start from a clean emulator
        self.faults.clear()
        self.turn_faults.reset()
        self.log.clear()
        self._reset_more()
        return json_response({"reset": True})


def main(name: str, doc: str, argv: list[str] | None, make_app: Callable[[ScenarioSet, argparse.Namespace],
                                                                   ScriptedModelApp],
         default_scenarios: Path, more_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The command line of an emulator: ``--host``, ``--port``, ``--scenarios`` and the rest (``more_args``
    adds its own). Prints exactly one ``READY http=HOST:PORT`` line once it accepts connections (``--port 0``
    picks a free one) and exits 0 on SIGTERM or SIGINT after answering the requests in flight; invalid
    scenario files make it exit 2 before READY, naming the file on stderr."""
    parser = argparse.ArgumentParser(prog=f"python -m agex.dev.emulators.{name}", description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--scenarios", type=Path, default=default_scenarios,
                        help="directory of scenario YAML/JSON files (default: the bundled examples)")
    parser.add_argument("--latency-ms", type=int, default=0, help="fixed delay added to every model answer")
    parser.add_argument("--log-size", type=int, default=10_000, help="requests kept by GET /_emulator/requests")
    parser.add_argument("--check", action="store_true", help="validate the scenarios directory and exit")
    parser.add_argument("--keep-bodies", action="store_true",
                        help="keep each request's body in GET /_emulator/requests (tests of what a model is sent)")
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    if more_args is not None:
        more_args(parser)
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be >= 0")
    if args.log_size < 1:
        parser.error("--log-size must be >= 1")

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    # werkzeug logs each request at INFO: stderr stays quiet for benchmarks unless asked
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        scenarios = load_scenarios(args.scenarios)
    except ScenarioError as exc:
        print(f"{name} emulator: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.check:
        print(f"OK {len(scenarios.scenarios)} scenario(s) in {scenarios.directory}", flush=True)
        return 0

    app = make_app(scenarios, args)
    server = make_server(args.host, args.port, app, threaded=True)
    # the handler only flips a flag: shutting the server down from a signal handler can deadlock
    stopping: list[bool] = []

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, name=f"{name}-emulator", daemon=True)
    thread.start()
    print(f"READY http={args.host}:{server.server_port}", flush=True)
    try:
        while not stopping:
            time.sleep(0.1)
    finally:
        server.shutdown()
        if not app.drain(timeout=5):
            print(f"{name} emulator: in-flight requests still running at exit", file=sys.stderr, flush=True)
        server.server_close()
        thread.join(timeout=5)
    return 0
