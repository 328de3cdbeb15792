"""The endpoint Cloud Scheduler calls: ``POST /`` evaluates the agents' SLOs (``agex.engine.slo``) and runs one
drift check (``agex.engine.watching``).

It demands the scheduler identity's OIDC token itself, whatever the platform let through. A check that
fails answers 500 and the next scheduled one does its work: every step of a check is safe to repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from werkzeug.wrappers import Request, Response

from agex.app.http.responses import error_response, json_response, served
from agex.core.errors import AgexError, RequestError
from agex.engine.slo import SloService
from agex.engine.watching import DriftService
from agex.obs import logging as log

_log = log.get("drift")


class DriftEndpoint:
    def __init__(self, *, service: Callable[[], DriftService], verify: Callable[[Mapping[str, str]], None],
                 slo: Callable[[], SloService] | None = None) -> None:
        self.service, self.verify, self.slo = service, verify, slo

    def __call__(self, request: Request) -> Response:
        return served(request, self._serve)

    def _serve(self, request: Request) -> Response:
        try:
            if request.method != "POST":
                raise RequestError("the drift endpoint takes POST requests from Cloud Scheduler only")
            self.verify(dict(request.headers))
            # first, and never raising for one agent (its errors are in its report): a failing drift check
            # must not stop degradations
            slo = self.slo().evaluate() if self.slo is not None else None
            report = self.service().check()
            evaluated = {"slo": slo.as_dict()} if slo is not None else {}
            log.info(_log, f"drift check: {report.collected} runs collected, {len(report.compared)} versions "
                     f"compared, {len(report.alerts)} alerts published"
                     + (f"; SLOs: {len(slo.transitions)} transitions" if slo is not None else ""),
                     outcome="checked", **report.as_dict(), **evaluated)
            return json_response({"outcome": "checked", **report.as_dict(), **evaluated})
        except AgexError as e:
            if e.status >= 500:
                _log.exception("drift check failed; the next scheduled check does its work")
            return error_response(e)
        except Exception:
            _log.exception("drift check crashed; the next scheduled check does its work")
            return error_response(AgexError("the drift check crashed (see the log entry)"))
