"""The scrubber that keeps secret values out of everything a tool returns (model context, events,
checkpoints, logs): the one place that knows how a secret may show up in text.

Scrubbing is defence in depth, not a guarantee: a tool that transforms a secret (hashes it, splits it,
encodes it in a way not listed below) can still leak it. What is covered, per secret value:
- the value itself, and the value stripped of surrounding whitespace (secrets created with ``echo`` end
  in a newline that tools strip before use);
- base64, standard and URL-safe alphabets, with and without ``=`` padding; plus the run of characters
  that depends only on the value when it sits at any byte offset inside a longer base64 string (what
  ``Authorization: Basic base64(user:password)`` produces). The one or two characters at each edge of
  such a run mix in neighbouring bytes and stay visible (at most ~10 bits of the value), and runs
  shorter than 8 characters are not used because they would match ordinary text. Base64 broken into
  lines (MIME, PEM) is not covered;
- hex, lower and upper case (not mixed);
- URL encoding: ``urllib.parse.quote`` (with and without ``/`` kept) and ``quote_plus``;
- JSON string escaping (``ensure_ascii`` on and off), for JSON embedded in a string.

Values shorter than ``MIN_SECRET_LENGTH`` characters are never scrubbed: replacing ``"a"`` or ``"42"``
everywhere would wreck every output while protecting nothing (a value that short is guessable anyway).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 4
_MIN_SHIFTED_BASE64 = 8


def _base64_forms(data: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode("ascii")
        forms |= {whole, whole.rstrip("=")}
        for offset in range(3):
            # Encode after ``offset`` filler bytes and keep only the characters whose 6 bits all come
            # from the value: those appear whatever bytes precede and follow it in a longer string.
            encoded = encode(b"\0" * offset + data).decode("ascii")
            start, end = -(-8 * offset // 6), 8 * (offset + len(data)) // 6
            run = encoded[start:end]
            if len(run) >= _MIN_SHIFTED_BASE64:
                forms.add(run)
    return forms


def encoded_forms(value: str) -> set[str]:
    """Every string ``scrub`` replaces for one secret value (empty for a value too short to scrub)."""
    forms: set[str] = set()
    for v in {value, value.strip()}:
        if len(v) < MIN_SECRET_LENGTH:
            continue
        data = v.encode("utf-8")
        forms |= {v, data.hex(), data.hex().upper(), quote(v, safe=""), quote(v), quote_plus(v),
                  json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1]}
        forms |= _base64_forms(data)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _pattern(secrets: Mapping[str, str]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    owner: dict[str, str] = {}
    for name in sorted(secrets):  # sorted: the same value under two names is reported under the same one
        for form in encoded_forms(secrets[name]):
            owner.setdefault(form, name)
    if not owner:
        return None
    # One alternation, longest first, replaced in a single pass: replacements are never rescanned (a
    # secret equal to "secret" cannot mangle "[secret:X]"), and a padded base64 form wins over the
    # shorter unpadded one at the same place.
    alternatives = sorted(owner, key=lambda f: (-len(f), f))
    return re.compile("|".join(map(re.escape, alternatives))), owner


def scrub(value: Any, secrets: Mapping[str, str]) -> Any:
    """A deep copy of the JSON-like ``value`` with every occurrence of each secret value (``secrets`` maps
    a secret's name to its value) replaced by ``[secret:NAME]``, in strings and in dict keys.

    A number whose digits contain a secret value becomes the scrubbed string; any other object whose
    ``str()`` contains one is replaced by that scrubbed string too, so nothing that would leak is
    returned as is."""
    compiled = _pattern(secrets)
    if compiled is None:
        return copy.deepcopy(value)
    pattern, owner = compiled

    def text(s: str) -> str:
        return pattern.sub(lambda m: f"[secret:{owner[m.group(0)]}]", s)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return text(v)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, dict):
            return {walk(k): walk(item) for k, item in v.items()}
        if isinstance(v, list):
            return [walk(item) for item in v]
        if isinstance(v, tuple):
            return tuple(walk(item) for item in v)
        rendered = str(v)
        if pattern.search(rendered):
            return text(rendered)
        return copy.deepcopy(v)

    return walk(value)
