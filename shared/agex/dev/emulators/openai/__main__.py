"""Command line: ``python -m agex.dev.emulators.openai --host 127.0.0.1 --port PORT --scenarios DIR``.

Prints exactly one ``READY http=HOST:PORT`` line on stdout once it accepts connections (PORT is the
bound port, so ``--port 0`` picks a free one), and exits 0 on SIGTERM or SIGINT after answering the
requests in flight. Invalid scenario files make it exit 2 before READY, with the file named on stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from werkzeug.serving import make_server

from agex.dev.emulators.gemini.scenario import ScenarioError, load_scenarios

from . import DEFAULT_SCENARIOS_DIR
from .server import EmulatorApp


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agex.dev.emulators.openai", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--scenarios", type=Path, default=DEFAULT_SCENARIOS_DIR,
                        help="directory of scenario YAML/JSON files (default: the bundled examples)")
    parser.add_argument("--api-key", default="",
                        help="require this key as `Authorization: Bearer KEY` (default: no key needed, as Ollama)")
    parser.add_argument("--latency-ms", type=int, default=0, help="fixed delay added to every completion")
    parser.add_argument("--log-size", type=int, default=10_000, help="requests kept by GET /_emulator/requests")
    parser.add_argument("--check", action="store_true", help="validate the scenarios directory and exit")
    parser.add_argument("--keep-bodies", action="store_true",
                        help="keep each request's body in GET /_emulator/requests (tests of what a model is sent)")
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be >= 0")
    if args.log_size < 1:
        parser.error("--log-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        scenarios = load_scenarios(args.scenarios)
    except ScenarioError as exc:
        print(f"openai emulator: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.check:
        print(f"OK {len(scenarios.scenarios)} scenario(s) in {scenarios.directory}", flush=True)
        return 0

    app = EmulatorApp(scenarios, latency_ms=args.latency_ms, log_size=args.log_size,
                      keep_bodies=args.keep_bodies, api_key=args.api_key)
    server = make_server(args.host, args.port, app, threaded=True)

    # The handler only flips a flag: shutting the server down from a signal handler can deadlock.
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    thread = threading.Thread(target=server.serve_forever, name="openai-emulator", daemon=True)
    thread.start()
    print(f"READY http={args.host}:{server.server_port}", flush=True)
    try:
        while not stopping:
            time.sleep(0.1)
    finally:
        server.shutdown()
        if not app.drain(timeout=5):
            print("openai emulator: in-flight requests still running at exit", file=sys.stderr, flush=True)
        server.server_close()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
