"""The console, served by the ``api`` function under ``/console`` (docs/console.md): the page and its assets, the
sign-in session, and the links of a run to its trace and logs. Everything else the page shows it reads from the
``/v1`` API, with the session cookie standing in for a bearer token (``PublicApi``).

Every answer carries a Content Security Policy that allows the page's own scripts and styles only (no inline
script or style, nothing from another origin) and forbids framing; the page renders every value as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from agex.app.console.session import COOKIE, CSRF_HEADER, Session, Sessions
from agex.app.http.responses import error_response, json_response
from agex.core.errors import (
    AgexError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RequestError,
    Unauthenticated,
)
from agex.engine.runs import RunService
from agex.ports.auth import Authenticator, Caller

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin"}
MAX_LOG_LINES = 500
_LINKS = re.compile(r"/console/api/runs/([A-Za-z0-9_-]{1,128})/links")


class Console:
    def __init__(self, *, sessions: Callable[[], Sessions], authenticator: Authenticator, service: RunService,
                 project: str = "", log_dir: str = "", static: Path = STATIC,
                 iap: Callable[[Mapping[str, str]], Caller] | None = None) -> None:
        self.sessions, self.auth, self.service = sessions, authenticator, service
        self.project, self.log_dir, self.static = project, log_dir, static
        self.iap = iap
        """Identity-Aware Proxy's word on who the request comes from, when IAP fronts the API: signing in then
        needs no token (``{"iap": true}``)."""

    def __call__(self, request: Request) -> Response:
        try:
            response = self._route(request)
        except AgexError as e:
            response = error_response(e)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _route(self, request: Request) -> Response:
        path = request.path
        if path in ("/console/session", "/console/session:signout"):
            return self._session(request, signout=path.endswith(":signout"))
        links = _LINKS.fullmatch(path)
        if links is not None:
            return self._links(request, links.group(1))
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{request.method} {path}: the console's pages are read with GET")
        if path.startswith("/console/static/"):
            try:
                response = send_from_directory(self.static, path.removeprefix("/console/static/"), request.environ,
                                               max_age=300)
            except WerkzeugNotFound as e:
                raise NotFound(f"no console asset {path!r}") from e
            return response
        # every other path is a page of the console: the page routes it
        page = send_from_directory(self.static, "index.html", request.environ, max_age=0)
        page.headers["Cache-Control"] = "no-cache"
        return page

    # --- the session -------------------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions().read(request.cookies.get(COOKIE))

    def _session(self, request: Request, signout: bool) -> Response:
        if signout:
            if request.method != "POST":
                raise MethodNotAllowed("sign out with POST")
            self.checked(request)
            response = Response(status=204)
            response.delete_cookie(COOKIE, path="/", secure=_secure(request), httponly=True, samesite="Strict")
            return response
        if request.method == "GET":
            session = self.session_of(request)
            if session is None:
                raise Unauthenticated("not signed in to the console")
            return json_response(_described(session))
        if request.method != "POST":
            raise MethodNotAllowed("sign in with POST, read the session with GET")
        token = _token(request, iap=self.iap is not None)
        if token is None:
            assert self.iap is not None
            caller = self.iap(dict(request.headers))
        else:
            caller = self.auth.authenticate({"Authorization": f"Bearer {token}"})
        value, session = self.sessions().issue(caller)
        response = json_response(_described(session))
        response.set_cookie(COOKIE, value, max_age=int(self.sessions().lifetime.total_seconds()), path="/",
                            secure=_secure(request), httponly=True, samesite="Strict")
        return response

    def checked(self, request: Request) -> Session:
        """The request's session, which must carry its CSRF token (a request that changes something)."""
        session = self.session_of(request)
        if session is None:
            raise Unauthenticated("not signed in to the console")
        if request.headers.get(CSRF_HEADER, "") != session.csrf:
            raise PermissionDenied(f"a console request that changes something must send the session's {CSRF_HEADER}")
        return session

    # --- links of a run ------------------------------------------------------------------------------------

    def _links(self, request: Request, run_id: str) -> Response:
        session = self.session_of(request)
        if session is None:
            raise Unauthenticated("not signed in to the console")
        head = self.service.get(session.caller, run_id)  # another tenant's run is a 404
        trace = head.trace.split("-")[1] if head.trace.count("-") == 3 else ""
        body: dict[str, Any] = {"trace": None, "logs": None, "lines": None}
        if self.log_dir:
            body["lines"] = _log_lines(Path(self.log_dir), run_id)
        elif self.project:
            if trace:
                body["trace"] = f"https://console.cloud.google.com/traces/list?project={self.project}&tid={trace}"
            query = f'operation.id="{run_id}"'
            body["logs"] = (f"https://console.cloud.google.com/logs/query;query={quote(query, safe='')}"
                            f"?project={self.project}")
        return json_response(body)


def _described(session: Session) -> dict[str, str]:
    return {"principal": session.caller.principal, "tenant": session.caller.tenant, "csrf": session.csrf}


def _token(request: Request, iap: bool) -> str | None:
    """The bearer token a sign-in request carries; None for ``{"iap": true}`` where IAP fronts the API."""
    if request.content_length is not None and request.content_length > 16 * 1024:
        raise PayloadTooLarge("a sign-in request is a token, at most 16 KiB")
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except ValueError as e:
        raise RequestError("sign in with a JSON body {\"token\": \"...\"}") from e
    if iap and isinstance(body, dict) and body.get("iap") is True:
        return None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip() or any(c in token for c in "\r\n"):
        raise RequestError("sign in with a JSON body {\"token\": \"...\"}: a bearer token of the API")
    return token.strip()


def _secure(request: Request) -> bool:
    """A cookie only sent over HTTPS, except to this machine (the local stack serves plain HTTP)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.scheme == "https" or forwarded == "https" or request.host.split(":")[0] not in (
        "127.0.0.1", "localhost")


def _log_lines(directory: Path, run_id: str) -> list[str]:
    """The local stack's log entries about the run, oldest first, as one line each."""
    lines: list[tuple[str, str]] = []
    for path in sorted(directory.glob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            if run_id not in raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            operation = entry.get("logging.googleapis.com/operation") or {}
            labels = entry.get("logging.googleapis.com/labels") or {}
            if operation.get("id") != run_id and labels.get("run") != run_id:
                continue
            at = str(entry.get("time") or entry.get("timestamp") or "")
            lines.append((at, f"{at} {path.stem} {entry.get('severity', '')} {entry.get('message', '')}"))
    return [line for _, line in sorted(lines)][-MAX_LOG_LINES:]
