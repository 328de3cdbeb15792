"""Queue configuration: validation and the defaults the service picks.

Proto3 cannot tell "unset" from zero for scalars, and the API documents zero
as "let Cloud Tasks pick the default", so zero values are replaced here.
"""

from __future__ import annotations

import math

from . import protos
from .errors import invalid_argument

DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
MAX_CONCURRENT_DISPATCHES = 5000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF_SECONDS = 0.1
DEFAULT_MAX_BACKOFF_SECONDS = 3600.0
DEFAULT_MAX_DOUBLINGS = 16

# Fields callers cannot set; UpdateQueue ignores them in its mask.
OUTPUT_ONLY_PATHS = frozenset({"name", "state", "purge_time", "rate_limits.max_burst_size"})


def burst_size_for(max_dispatches_per_second: float) -> int:
    """The service derives max_burst_size itself and does not publish the rule.

    The default queue (500/s) reports 100; smaller rates get proportionally
    smaller buckets so a low-rate queue really is smooth rather than letting a
    whole second's worth of tasks out at once.
    """
    return max(1, min(100, math.ceil(max_dispatches_per_second / 5)))


def normalize_queue(queue: protos.QueueMsg) -> None:
    """Validate the caller-settable fields of ``queue`` and fill defaults in place."""
    _normalize_rate_limits(queue.rate_limits)
    validate_retry_config(queue.retry_config)
    fill_retry_defaults(queue.retry_config)
    if queue.HasField("stackdriver_logging_config"):
        ratio = queue.stackdriver_logging_config.sampling_ratio
        if not 0.0 <= ratio <= 1.0:
            raise invalid_argument("StackdriverLoggingConfig.samplingRatio must be between 0 and 1.")
    if queue.HasField("http_target"):
        _validate_http_target(queue.http_target)


def _normalize_rate_limits(rl: protos.QueueMsg) -> None:
    rate = rl.max_dispatches_per_second
    if math.isnan(rate) or rate < 0:
        raise invalid_argument("RateLimits.maxDispatchesPerSecond cannot be negative.")
    if rate > MAX_DISPATCHES_PER_SECOND:
        raise invalid_argument("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
    if rate == 0:
        rl.max_dispatches_per_second = DEFAULT_MAX_DISPATCHES_PER_SECOND
    if rl.max_concurrent_dispatches < 0:
        raise invalid_argument("RateLimits.maxConcurrentDispatches cannot be negative.")
    if rl.max_concurrent_dispatches > MAX_CONCURRENT_DISPATCHES:
        raise invalid_argument("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")
    if rl.max_concurrent_dispatches == 0:
        rl.max_concurrent_dispatches = DEFAULT_MAX_CONCURRENT_DISPATCHES
    rl.max_burst_size = burst_size_for(rl.max_dispatches_per_second)


def validate_retry_config(rc: protos.RetryConfigMsg) -> None:
    if rc.max_attempts < -1:
        raise invalid_argument("RetryConfig.maxAttempts must be greater or equal to -1.")
    if rc.max_doublings < 0:
        raise invalid_argument("RetryConfig.maxDoublings cannot be negative.")
    for field, label in (
        ("min_backoff", "minBackoff"),
        ("max_backoff", "maxBackoff"),
        ("max_retry_duration", "maxRetryDuration"),
    ):
        if rc.HasField(field) and protos.duration_seconds(getattr(rc, field)) < 0:
            raise invalid_argument(f"RetryConfig.{label} cannot be negative.")


def fill_retry_defaults(rc: protos.RetryConfigMsg) -> None:
    if rc.max_attempts == 0:
        rc.max_attempts = DEFAULT_MAX_ATTEMPTS
    if rc.max_doublings == 0:
        rc.max_doublings = DEFAULT_MAX_DOUBLINGS
    if protos.duration_seconds(rc.min_backoff) <= 0:
        rc.min_backoff.CopyFrom(protos.duration_from_seconds(DEFAULT_MIN_BACKOFF_SECONDS))
    if protos.duration_seconds(rc.max_backoff) <= 0:
        rc.max_backoff.CopyFrom(protos.duration_from_seconds(DEFAULT_MAX_BACKOFF_SECONDS))
    if not rc.HasField("max_retry_duration"):
        rc.max_retry_duration.CopyFrom(protos.Duration())
    if protos.duration_seconds(rc.min_backoff) > protos.duration_seconds(rc.max_backoff):
        raise invalid_argument("RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.")


def effective_retry_config(queue: protos.QueueMsg, task: protos.TaskMsg) -> protos.RetryConfigMsg:
    """A task-level retry_config overrides the queue's, field by field where set."""
    merged = protos.RetryConfig()
    merged.CopyFrom(queue.retry_config)
    if not task.HasField("retry_config"):
        return merged
    own = task.retry_config
    if own.max_attempts:
        merged.max_attempts = own.max_attempts
    if own.max_doublings:
        merged.max_doublings = own.max_doublings
    for field in ("min_backoff", "max_backoff", "max_retry_duration"):
        if own.HasField(field):
            getattr(merged, field).CopyFrom(getattr(own, field))
    return merged


def _validate_http_target(target: protos.QueueMsg) -> None:
    if target.HasField("uri_override"):
        uo = target.uri_override
        if uo.HasField("host") and not uo.host:
            raise invalid_argument("UriOverride.host cannot be empty.")
        if uo.HasField("port") and uo.port < 0:
            raise invalid_argument("UriOverride.port must be a positive integer.")
    for override in target.header_overrides:
        if not override.header.key:
            raise invalid_argument("HttpTarget.headerOverrides keys cannot be empty.")
    auth = target.WhichOneof("authorization_header")
    if auth == "oidc_token" and not target.oidc_token.service_account_email:
        raise invalid_argument("HttpTarget.oidcToken.serviceAccountEmail is required.")
    if auth == "oauth_token" and not target.oauth_token.service_account_email:
        raise invalid_argument("HttpTarget.oauthToken.serviceAccountEmail is required.")
