"""Validation and defaulting of the task a caller passes to CreateTask."""

from __future__ import annotations

from . import protos
from .config import EmulatorConfig
from .errors import invalid_argument
from .queue_config import validate_retry_config

DEFAULT_DISPATCH_DEADLINE_SECONDS = 600.0
MAX_SCHEDULE_AHEAD_SECONDS = 30 * 24 * 3600.0
MAX_URL_LENGTH = 2083
MAX_HEADERS_BYTES = 80 * 1024
MAX_TASK_BYTES = 1024 * 1024
USER_AGENT = "Google-Cloud-Tasks"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def normalize_new_task(task: protos.TaskMsg, now: float, config: EmulatorConfig) -> None:
    """Validate ``task`` and fill service-chosen values in place (name excluded)."""
    if task.ByteSize() > MAX_TASK_BYTES:
        raise invalid_argument("Task size is too large; the maximum task size is 1MB.")
    kind = task.WhichOneof("message_type")
    if kind is None:
        raise invalid_argument("Task.httpRequest is required.")
    if kind == "app_engine_http_request":
        raise invalid_argument(
            "App Engine tasks (app_engine_http_request) are not supported by this emulator; use http_request."
        )
    _normalize_http_request(task.http_request)
    _normalize_deadline(task, config)
    if not task.HasField("schedule_time") or protos.timestamp_seconds(task.schedule_time) < now:
        protos.set_timestamp(task.schedule_time, now)
    else:
        # Re-store to apply the service's microsecond truncation.
        protos.set_timestamp(task.schedule_time, protos.timestamp_seconds(task.schedule_time))
    if protos.timestamp_seconds(task.schedule_time) > now + MAX_SCHEDULE_AHEAD_SECONDS:
        raise invalid_argument("Task.scheduleTime must be at most 30 days in the future.")
    if task.HasField("retry_config"):
        validate_retry_config(task.retry_config)
    # Output-only fields: whatever the caller sent is discarded.
    for field in ("create_time", "first_attempt", "last_attempt"):
        task.ClearField(field)
    task.dispatch_count = 0
    task.response_count = 0
    protos.set_timestamp(task.create_time, float(int(now)))


def _normalize_http_request(hr: protos.TaskMsg) -> None:
    if not hr.url:
        raise invalid_argument("HttpRequest.url is required.")
    if not (hr.url.startswith("http://") or hr.url.startswith("https://")):
        raise invalid_argument("HttpTarget.url must start with 'http://' or 'https://'.")
    if len(hr.url) > MAX_URL_LENGTH:
        raise invalid_argument(f"HttpRequest.url must be at most {MAX_URL_LENGTH} characters.")
    if hr.http_method == 0:
        hr.http_method = protos.METHOD_POST
    if hr.body and protos.http_method_name(hr.http_method) not in _BODY_METHODS:
        raise invalid_argument("HttpRequest.body can only be set for POST, PUT or PATCH requests.")
    # The service stores headers as sent but replaces User-Agent with its own.
    for key in [k for k in hr.headers if k.lower() == "user-agent"]:
        del hr.headers[key]
    hr.headers["User-Agent"] = USER_AGENT
    if sum(len(k) + len(v) for k, v in hr.headers.items()) > MAX_HEADERS_BYTES:
        raise invalid_argument("HttpRequest.headers must be smaller than 80KB.")
    auth = hr.WhichOneof("authorization_header")
    if auth == "oidc_token" and not hr.oidc_token.service_account_email:
        raise invalid_argument("OidcToken.serviceAccountEmail is required.")
    if auth == "oauth_token" and not hr.oauth_token.service_account_email:
        raise invalid_argument("OAuthToken.serviceAccountEmail is required.")


def _normalize_deadline(task: protos.TaskMsg, config: EmulatorConfig) -> None:
    if not task.HasField("dispatch_deadline"):
        task.dispatch_deadline.CopyFrom(protos.duration_from_seconds(DEFAULT_DISPATCH_DEADLINE_SECONDS))
        return
    seconds = protos.duration_seconds(task.dispatch_deadline)
    low, high = config.min_dispatch_deadline_seconds, config.max_dispatch_deadline_seconds
    if not low <= seconds <= high:
        raise invalid_argument(
            f"Task.dispatchDeadline must be between {low:g}s and {high:g}s for HTTP tasks, got {seconds:g}s."
        )
    # The service keeps millisecond precision.
    task.dispatch_deadline.CopyFrom(protos.duration_from_seconds(round(seconds, 3)))
