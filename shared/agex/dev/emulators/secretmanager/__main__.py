"""Command line entry point: ``python -m agex.dev.emulators.secretmanager``."""

from __future__ import annotations

import argparse
import logging
import sys

from agex.dev.emulators.grpc_service import stop_on_signals

DEFAULT_ADMIN = "admin@agex-local.iam.gserviceaccount.com"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m agex.dev.emulators.secretmanager",
        description="Local Secret Manager v1 emulator (gRPC API with per-secret IAM).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8086, help="gRPC port; 0 picks a free one (default 8086)")
    p.add_argument(
        "--admin",
        action="append",
        default=None,
        metavar="EMAIL",
        help="identity holding every permission, like a project-level Secret Manager admin "
        f"(repeatable; default {DEFAULT_ADMIN})",
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.admin is None:
        args.admin = [DEFAULT_ADMIN]
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args


def main(argv: list[str] | None = None) -> int:
    stop = stop_on_signals()

    args = parse_args(argv)
    from .server import SecretManagerService, build_grpc_server  # heavy imports after argument errors
    from .state import Store

    log = logging.getLogger("agex.dev.emulators.secretmanager")
    try:
        server, port = build_grpc_server(SecretManagerService(Store(), args.admin), args.host, args.port)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 2
    server.start()
    print(f"READY grpc={args.host}:{port}", flush=True)
    log.info(
        "Secret Manager emulator serving gRPC on %s:%d (admins: %s)", args.host, port, ", ".join(args.admin)
    )
    stop.wait()
    log.info("shutting down")
    server.stop(grace=1.0).wait(2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
