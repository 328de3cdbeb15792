"""What our gRPC emulators share: the error a service reports to its caller, the guard that turns it
(or a crash) into a gRPC status, and a server bound to one port only."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from types import FrameType
from typing import Any

import grpc


class ApiError(Exception):
    """An error the service reports to the caller (never a server bug)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status(code: grpc.StatusCode) -> Callable[[str], ApiError]:
    """A constructor of errors with ``code``: ``not_found = status(grpc.StatusCode.NOT_FOUND)``."""
    return lambda message: ApiError(code, message)


def serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def guarded(rpc: str, fn: Callable[[Any, grpc.ServicerContext], Any],
            log: logging.Logger) -> Callable[[Any, grpc.ServicerContext], Any]:
    """Serve ``fn``: an ``ApiError`` becomes its status, anything else INTERNAL (and a logged traceback)."""
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:
            log.exception("%s failed", rpc)
            context.abort(grpc.StatusCode.INTERNAL, f"Internal emulator error in {rpc}: {exc}")

    return call


def bind_server(handler: grpc.GenericRpcHandler, host: str, port: int, *, workers: int,
                name: str) -> tuple[grpc.Server, int]:
    """Create and bind (not start) a server for ``handler``; returns it with the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-grpc"),
        # gRPC enables SO_REUSEPORT by default on Linux, which would let two
        # emulators silently share one port.
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((handler,))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc reports bind failures this way
        bound = 0
        cause: Exception | None = exc
    else:
        cause = None
    if bound == 0:
        server.stop(None)
        raise OSError(f"could not bind gRPC server to {host}:{port} (address in use?)") from cause
    return server, bound


Invoke = Callable[[Callable[..., Any], Any, grpc.ServicerContext], Any]


def generic_handler(service: str, methods: dict[str, tuple[Callable[..., Any], Any]], log: logging.Logger,
                    invoke: Invoke = lambda fn, request, context: fn(request)) -> grpc.GenericRpcHandler:
    """Serve ``methods`` (``{rpc: (fn, request proto class)}``) as the unary RPCs of ``service``; ``invoke``
    says how ``fn`` is called (with the request alone by default, or with what the context says)."""
    return grpc.method_handlers_generic_handler(service, {
        rpc: grpc.unary_unary_rpc_method_handler(
            guarded(rpc, functools.partial(invoke, fn), log),
            request_deserializer=request_cls.FromString, response_serializer=serialize)
        for rpc, (fn, request_cls) in methods.items()})


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT. Call it first thing, so an early signal still exits cleanly."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
