"""What the model emulators share as WSGI applications: every request answered in the API's own error
shape, even after a bug, and a shutdown that waits for the answers in flight instead of dropping them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import ClosingIterator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)


class DrainingApp:
    """Subclasses answer in ``_dispatch`` and turn an error into their API's response in ``_error_response``
    (``None``: not one of theirs, answered as an internal error by ``_internal_error``)."""

    def __init__(self) -> None:
        # set on shutdown: cuts injected delays short, so requests in flight are answered, not dropped
        self._stopping = threading.Event()
        self._inflight = 0
        self._inflight_cond = threading.Condition()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._inflight_cond:
            self._inflight += 1
        try:
            request = Request(environ)
            try:
                response = self._dispatch(request)
            except Exception as exc:
                known = self._error_response(exc)
                if known is None:  # a bug here must still answer in the API's error shape
                    logger.exception("emulator error")
                    known = self._internal_error(exc)
                response = known
            # the server calls close() after writing the body: in flight until the answer is on the wire
            return ClosingIterator(response(environ, start_response), self._request_done)
        except BaseException:
            self._request_done()
            raise

    def _request_done(self) -> None:
        with self._inflight_cond:
            self._inflight -= 1
            self._inflight_cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stops delaying answers and waits for in-flight requests; False on timeout."""
        self._stopping.set()
        with self._inflight_cond:
            return self._inflight_cond.wait_for(lambda: self._inflight <= 0, timeout=timeout)

    def _dispatch(self, request: Request) -> Response:
        raise NotImplementedError

    def _error_response(self, exc: Exception) -> Response | None:
        raise NotImplementedError

    def _internal_error(self, exc: Exception) -> Response:
        raise NotImplementedError
