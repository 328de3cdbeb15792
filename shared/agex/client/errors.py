"""What a call of the API fails with: the API's own error (``ApiError``, its ``code`` stable and meant for
programs), a spent budget (``BudgetExceeded``), or no answer at all (``ApiUnreachable``)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx


class ApiError(Exception):
    """The API answered with an error: ``status`` (HTTP), ``code`` (docs/api.md, "Errors"), ``message`` (for
    people), ``details`` (the error body's other fields, such as a spent budget's ``budget`` and ``resets_at``)
    and ``retry_after`` (seconds, from the ``Retry-After`` header, when there was one). ``attempts`` is how
    many times the request was sent."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None, *,
                 retry_after: float | None = None, attempts: int = 1) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after, self.attempts = retry_after, attempts


class BudgetExceeded(ApiError):
    """``429 budget_exceeded``: a budget with ``action: refuse`` is spent (docs/budgets.md). A retry before
    ``resets_at`` is refused alike."""

    @property
    def budget(self) -> str | None:
        value = self.details.get("budget")
        return value if isinstance(value, str) else None

    @property
    def resets_at(self) -> datetime | None:
        value = self.details.get("resets_at")
        try:
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None


class ApiUnreachable(ApiError):
    """No answer: the connection could not be opened, broke, or timed out (``status`` 0, ``code``
    ``unreachable``; the transport's exception is the ``__cause__``)."""

    def __init__(self, api: str, cause: Exception, attempts: int = 1) -> None:
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        why = f"{type(cause).__name__}: {cause}"
        super().__init__(0, "unreachable", f"cannot reach the API at {api}{tries}: {why}", attempts=attempts)


def error_of(response: httpx.Response, attempts: int = 1) -> ApiError:
    """The error a non-2xx answer stands for; its body need not be the API's (a proxy's page, say)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str):
        code = f"http_{response.status_code}"
    if not isinstance(message, str):
        message = response.text[:500] or response.reason_phrase
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    kind = BudgetExceeded if code == "budget_exceeded" else ApiError
    return kind(response.status_code, code, message, details,
                retry_after=retry_after(response.headers.get("Retry-After")), attempts=attempts)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds, or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
