"""What the Firestore adapters share: Google's errors as agex errors, and Firestore's timestamps as plain
datetimes. The Google client libraries are imported only when a call fails (cold start)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any


@contextmanager
def calling(what: str) -> Iterator[None]:
    """Google's errors as agex errors, ``what`` naming the call that failed."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.GoogleAPIError as e:
        from agex.adapters.gcp.firestore_store import _translate

        raise _translate(e, what) from e


def native(value: Any) -> Any:
    """Firestore's DatetimeWithNanoseconds as plain aware-UTC datetimes, recursively."""
    if isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=value.tzinfo or UTC).astimezone(UTC)
    if isinstance(value, dict):
        return {k: native(v) for k, v in value.items()}
    if isinstance(value, list):
        return [native(v) for v in value]
    return value
