"""Wiring of store, dispatcher, gRPC server and HTTP side server."""

from __future__ import annotations

import logging
import threading

from . import names, protos
from .config import EmulatorConfig
from .dispatch import Dispatcher
from .errors import ApiError
from .http_endpoints import SideServer
from .oidc import OidcSigner
from .server import CloudTasksService, build_grpc_server
from .state import Store

log = logging.getLogger(__name__)


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.signer = OidcSigner()
        self.store = Store(config)
        self.dispatcher = Dispatcher(self.store, self.signer, config)
        self._grpc, self.grpc_port = build_grpc_server(
            CloudTasksService(self.store, self.dispatcher), config.host, config.grpc_port
        )
        try:
            self._http = SideServer(config.host, config.http_port, self.store, self.signer)
        except OSError:
            self._grpc.stop(None)
            raise
        self.http_port = self._http.port
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="cloudtasks-http",
            daemon=True,
        )
        for queue_name in config.initial_queues:
            self._create_initial_queue(queue_name)

    def _create_initial_queue(self, queue_name: str) -> None:
        qn = names.parse_queue(queue_name)
        queue = protos.Queue(name=queue_name)
        try:
            self.store.create_queue(qn.parent, queue)
        except ApiError as exc:
            raise ValueError(f"--queue {queue_name}: {exc.message}") from exc

    def start(self) -> None:
        self.dispatcher.start()
        self._grpc.start()
        self._http_thread.start()

    def stop(self) -> None:
        # Stop accepting API calls first so nothing new is scheduled mid-shutdown.
        self._grpc.stop(grace=1.0).wait(2.0)
        self.dispatcher.stop()
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join(2.0)
