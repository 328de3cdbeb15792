"""The one error taxonomy of Agent Executor.

Three families, as in the best runtimes of this field:
- request errors a caller can fix (``RequestError`` and subclasses): each carries an HTTP status and a
  stable ``code`` so the API can answer ``{"error": {"code", "message"}}`` without a lookup table;
- developer mistakes in an agent definition or configuration (``ConfigurationError``);
- control flow of the step protocol (``StaleDelivery``, ``LeaseHeld``, ``LeaseLost``) and transient
  infrastructure failures (``TransientError``) that tell the step function to acknowledge or to let
  Cloud Tasks retry.

Adapters translate SDK exceptions into these with ``raise ... from e``; nothing above the adapters
catches a ``google.*`` exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydantic import ValidationError


class AgexError(Exception):
    """Base of every error raised on purpose by Agent Executor."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- errors a caller can fix -------------------------------------------------------------------------


class RequestError(AgexError):
    """A request that cannot be served as sent. The message says what was wrong and what to do."""

    code = "invalid_argument"
    status = 400


class InvalidJson(RequestError):
    code = "invalid_json"


class Unauthenticated(RequestError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(RequestError):
    code = "permission_denied"
    status = 403


class NotFound(RequestError):
    code = "not_found"
    status = 404


class MethodNotAllowed(RequestError):
    code = "method_not_allowed"
    status = 405


class Conflict(RequestError):
    code = "conflict"
    status = 409


class BudgetExceeded(RequestError):
    """A budget whose action is ``refuse`` is spent: no new run until its rolling window frees up. The answer
    says which budget and when (``resets_at``, and ``Retry-After``)."""

    code = "budget_exceeded"
    status = 429

    def __init__(self, message: str, *, budget: str, resets_at: datetime, retry_after_s: int) -> None:
        super().__init__(message)
        self.details = {"budget": budget, "resets_at": resets_at.isoformat()}
        self.retry_after_s = retry_after_s


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"
    status = 415


class RequestTimeout(RequestError):
    """The request (its headers or its body) did not arrive in time; nothing was done."""

    code = "request_timeout"
    status = 408


class UriTooLong(RequestError):
    code = "uri_too_long"
    status = 414


class HeadersTooLarge(RequestError):
    code = "headers_too_large"
    status = 431


class NotImplementedByServer(RequestError):
    """A transfer coding (or other protocol feature) the server does not implement."""

    code = "not_implemented"
    status = 501


# --- developer mistakes -------------------------------------------------------------------------------


class ConfigurationError(AgexError):
    """An agent definition, tool or setting is wrong; fixing it needs a code or config change."""

    code = "configuration_error"


class SecretError(ConfigurationError):
    """A tool's secret cannot be read. Retrying cannot help: a grant, a version or a name must change."""

    code = "secret_error"

    def __init__(self, message: str, *, secret: str, identity: str) -> None:
        super().__init__(message)
        self.secret, self.identity = secret, identity


class SecretAccessDenied(SecretError):
    code = "secret_access_denied"


class SecretNotFound(SecretError):
    code = "secret_not_found"


class SecretUnavailable(SecretError):
    """The secret has no usable version: its latest one is disabled or destroyed."""

    code = "secret_unavailable"


class DocumentTooLarge(ConfigurationError, ValueError):
    """A run head or event would exceed Firestore's document size limit; nothing was written."""

    def __init__(self, message: str, path: str, size: int) -> None:
        super().__init__(message)
        self.path = path
        self.size = size


# --- step protocol control flow -----------------------------------------------------------------------


class StepControl(AgexError):
    """Raised inside a step to stop it; the step function maps each to a delivery outcome."""


class StaleDelivery(StepControl):
    """The task is for a step that already committed, or for a finished run: acknowledge, do nothing."""

    code = "stale_delivery"
    status = 200


class LeaseHeld(StepControl):
    """Another live attempt holds the step's lease: answer non-2xx so Cloud Tasks tries again later."""

    code = "lease_held"
    status = 409


class NotDue(StepControl):
    """A scheduled task arrived before its time (clock skew): Cloud Tasks retries it with backoff."""

    code = "not_due"
    status = 409


class LeaseLost(StepControl):
    """This attempt's lease was taken over (it was too slow, or the run was cancelled): stop writing."""

    code = "lease_lost"
    status = 200


# --- infrastructure -----------------------------------------------------------------------------------


class TransientError(AgexError):
    """A dependency failed in a way worth retrying (quota, unavailable, timeout). Cloud Tasks retries."""

    code = "unavailable"
    status = 503


class AlreadyExists(AgexError):
    """A create found the name taken (task names, run ids). Adapters raise it; callers decide."""

    code = "already_exists"
    status = 409

    def __init__(self, message: str, existing: object | None = None) -> None:
        super().__init__(message)
        self.existing = existing


class ModelError(AgexError):
    """The model refused the request for a reason retrying will not fix (bad request, blocked)."""

    code = "model_error"
    status = 502


FallbackReason = Literal["quota", "server", "timeout", "safety"]
"""Why a model call may move on to an agent's next model (``Agent.fallbacks``)."""


class ModelUnavailable(TransientError):
    """The model could not answer now: its quota (429), the provider's servers (5xx), or the network or a
    timeout. Worth trying another model, or again later."""

    def __init__(self, message: str, reason: FallbackReason = "server") -> None:
        super().__init__(message)
        self.reason: FallbackReason = reason


class ModelBlocked(ModelError):
    """The provider's safety filter blocked the answer: this model will not answer this request, another might."""

    reason: FallbackReason = "safety"


def model_unavailable(status: int, message: str) -> ModelUnavailable:
    """The error of a model answering ``status`` (429, 408, 409 or 5xx), or 0 for no answer at all."""
    reason: FallbackReason = "quota" if status == 429 else "timeout" if status in (0, 408, 504) else "server"
    return ModelUnavailable(message, reason)


# --- describing errors ----------------------------------------------------------------------------------


def validation_problems(e: ValidationError, root: str, *, fields: Sequence[str] = ()) -> str:
    """A pydantic validation error as one line a caller can act on: ``where: what; ...``, where is the
    dotted path of each problem (``root`` for the value as a whole). With ``fields`` (the model's), an
    unknown field is reported with the fields allowed."""
    allowed = f"{', '.join(fields[:-1])} and {fields[-1]}" if len(fields) > 1 else "".join(fields)
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or root
        msg = f"unknown field; allowed fields are {allowed}" if fields and err["type"] == "extra_forbidden" \
            else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
