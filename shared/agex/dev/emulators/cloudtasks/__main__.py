"""Command line entry point: ``python -m agex.dev.emulators.cloudtasks``."""

from __future__ import annotations

import argparse
import logging
import sys

from agex.dev.emulators.grpc_service import stop_on_signals

from .config import EmulatorConfig


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    p = argparse.ArgumentParser(
        prog="python -m agex.dev.emulators.cloudtasks",
        description="Local Cloud Tasks v2 emulator (gRPC API + HTTP task dispatch).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface for both servers (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8123, help="gRPC port; 0 picks a free one (default 8123)")
    p.add_argument("--http-port", type=int, default=8124, help="health/stats/certs port; 0 picks a free one")
    p.add_argument("--project", default=None, help="only accept this project id (others: PERMISSION_DENIED)")
    p.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="create projects/P/locations/L/queues/Q at start (repeatable); with --project, "
        "LOCATION/QUEUE or QUEUE (location us-central1) are accepted too",
    )
    p.add_argument(
        "--dedupe-window-seconds",
        type=float,
        default=3600.0,
        help="how long a finished or deleted task name stays reserved (default 3600)",
    )
    p.add_argument(
        "--queue-tombstone-seconds",
        type=float,
        default=0.0,
        help="refuse re-creating a deleted queue name for this long (default 0 = allow)",
    )
    p.add_argument(
        "--min-dispatch-deadline-seconds",
        type=float,
        default=15.0,
        help="lowest accepted Task.dispatch_deadline (default 15, as the service)",
    )
    p.add_argument(
        "--dispatch-workers",
        type=int,
        default=64,
        help="maximum HTTP dispatches in flight across all queues (default 64)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG logs every dispatch (default INFO)")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.min_dispatch_deadline_seconds <= 0:
        p.error("--min-dispatch-deadline-seconds must be positive")
    if args.dispatch_workers < 1:
        p.error("--dispatch-workers must be at least 1")
    return EmulatorConfig(
        host=args.host,
        grpc_port=args.port,
        http_port=args.http_port,
        project=args.project,
        dedupe_window_seconds=args.dedupe_window_seconds,
        queue_tombstone_seconds=args.queue_tombstone_seconds,
        min_dispatch_deadline_seconds=args.min_dispatch_deadline_seconds,
        dispatch_workers=args.dispatch_workers,
        initial_queues=tuple(_expand_queue(q, args.project, p) for q in args.queue),
    )


def _expand_queue(value: str, project: str | None, parser: argparse.ArgumentParser) -> str:
    if value.startswith("projects/"):
        return value
    if project is None:
        parser.error(f"--queue {value}: a short queue name needs --project")
    location, _, queue_id = value.rpartition("/")
    return f"projects/{project}/locations/{location or 'us-central1'}/queues/{queue_id}"


def main(argv: list[str] | None = None) -> int:
    stop = stop_on_signals()

    config = parse_args(argv)
    from .emulator import Emulator  # heavy imports (grpc, protobuf) after argument errors

    log = logging.getLogger("agex.dev.emulators.cloudtasks")
    try:
        emulator = Emulator(config)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    emulator.start()
    print(
        f"READY grpc={config.host}:{emulator.grpc_port} http={config.host}:{emulator.http_port}", flush=True
    )
    log.info(
        "Cloud Tasks emulator serving gRPC on %s:%d, HTTP on %s:%d",
        config.host,
        emulator.grpc_port,
        config.host,
        emulator.http_port,
    )
    stop.wait()
    log.info("shutting down")
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
