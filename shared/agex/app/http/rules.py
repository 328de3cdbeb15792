"""What a request to the API must look like, beyond its JSON schema: UTF-8 JSON bodies, text without
control characters, one well-formed ``Idempotency-Key``. The API enforces these rules and the OpenAPI
document states them (the patterns below are in it), so clients and fuzzers see the same contract."""

from __future__ import annotations

import json
import re
from typing import Any

from werkzeug.wrappers import Request

from agex.core.errors import InvalidJson, RequestError


def parse_json(raw: bytes) -> Any:
    """A request body as JSON (RFC 8259): UTF-8 without a byte-order mark, no duplicate keys, no NaN or
    Infinity. (``json.loads`` alone would also take UTF-16 and UTF-32, guessing the encoding.)"""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InvalidJson("request body is not valid JSON: it must be UTF-8 without a byte-order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidJson(f"request body is not valid JSON: it must be UTF-8, and byte {e.start} is not") from e
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=_finite)
    except ValueError as e:  # a syntax error, a duplicate key, NaN, a number out of range, 4301 digits
        raise InvalidJson(f"request body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise InvalidJson("request body is nested too deeply to be a request of this API") from e


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {literal[:40]} is out of range")
    return value


_END = r"(?![\s\S])"
"""The end of the string, in ECMA-262 regexes (OpenAPI's) and Python's alike: Python's ``$`` also matches before
a final line feed, which would let ``"key\n"`` match a pattern meant to exclude it."""
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x2B\x2D-\x7E](?:[\x20-\x2B\x2D-\x7E]*[\x21-\x2B\x2D-\x7E])?" + _END
"""Visible ASCII and inner spaces, no comma: a comma is how HTTP joins a header sent twice."""
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, or None without one. The one check of the key in the API: sent
    once, 1-255 visible ASCII characters (inner spaces allowed), no comma. Servers join a header sent
    twice into one value with commas, so two keys are refused, never silently merged into ``a,b``."""
    values = request.headers.getlist("Idempotency-Key")
    if not values:
        return None
    if len(values) > 1:
        raise RequestError("send the Idempotency-Key header once")
    key = values[0]
    if "," in key:
        raise RequestError("send the Idempotency-Key header once; a key may not contain a comma")
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise RequestError(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters (spaces "
                           "inside it are allowed, commas and control characters are not)")
    return key


TEXT_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*" + _END
"""Text in a request (``input``, metadata values, ``comment``): no control characters but tab, line feed and
carriage return."""
LABEL_PATTERN = r"^[^\x00-\x1F\x7F-\x9F]*" + _END
"""A metadata key: no control characters at all."""
_TEXT = re.compile(TEXT_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(body: Any, text: tuple[str, ...], labels: tuple[str, ...] = ()) -> None:
    """Refuse control characters (and lone surrogates, which are not text) in a request's text fields
    before the model sees them: they are stored, shown to approvers and written to logs. ``labels`` are
    objects of string labels (``metadata``): keys by the stricter rule, values as text. Other types are
    left to the model, which refuses them."""
    if not isinstance(body, dict):
        return
    for name in text:
        if isinstance(body.get(name), str):
            _check_string(body[name], _TEXT, name)
    for name in labels:
        value = body.get(name)
        if isinstance(value, dict):
            for k, v in value.items():
                _check_string(k, _LABEL, f"{name} key {k[:64]!r}")
                if isinstance(v, str):
                    _check_string(v, _TEXT, f"{name}.{k[:64]}")


def _check_string(value: str, rule: re.Pattern[str], where: str) -> None:
    surrogate = _SURROGATE.search(value)
    if surrogate is None and rule.fullmatch(value):
        return
    bad = surrogate.group() if surrogate else next(c for c in value if not rule.fullmatch(c))
    allowed = "other than tab, line feed and carriage return " if rule is _TEXT else ""
    raise RequestError(f"{where}: character U+{ord(bad):04X} is not allowed (no control characters {allowed}"
                       "and no lone surrogates)")


EVENTS_TOKEN_PATTERN = "^[0-9]{1,18}" + _END
"""An events page token (the last ``seq`` of the previous page; opaque to clients)."""
APPROVALS_TOKEN_PATTERN = "^[A-Za-z0-9_-]+" + _END
"""An approvals page token (a position in the listing, base64url; opaque to clients)."""
