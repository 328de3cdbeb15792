"""Explicit context caches: the ``cachedContents`` resource (create, get, list, update, delete) and what a
generateContent request that names one sees.

As in the real API, a cache holds contents, a system instruction, tools and a tool config for one model
until its ``expireTime`` (``ttl``, default one hour); a request that names it in ``cachedContent`` gets
those prepended and must not send a system instruction, tools or tool config of its own; the cached
tokens are reported as ``usageMetadata.cachedContentTokenCount`` (and are part of ``promptTokenCount``);
a cache below its model's minimum size is refused, and an unknown or expired one is answered
``403 PERMISSION_DENIED`` "CachedContent not found (or permission denied)", the Gemini API's answer.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .faults import normalize_model
from .wire import (
    ApiError,
    check_function_turns,
    count_tokens,
    invalid,
    prefix_chars,
    validate_content,
    validate_tools,
)

DEFAULT_TTL_S = 3600.0
MAX_DISPLAY_NAME = 128
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

MIN_TOKENS: dict[str, int] = {
    "gemini-2.5-flash-lite": 2048,
    "gemini-2.5-flash": 1024,
    "gemini-2.5-pro": 4096,
}
"""The smallest cache each model accepts, as the Gemini API enforces it (by model-name prefix; others 4,096)."""
DEFAULT_MIN_TOKENS = 4096

NOT_FOUND = "CachedContent not found (or permission denied)"
_TTL = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")


def min_tokens(model: str) -> int:
    for prefix in sorted(MIN_TOKENS, key=len, reverse=True):
        if model.startswith(prefix):
            return MIN_TOKENS[prefix]
    return DEFAULT_MIN_TOKENS


def timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise invalid(f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Timestamp), {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Timestamp), "
                      f"\"{value}\"") from None


def _expiry(body: dict[str, Any], now: float, default: float | None) -> float | None:
    ttl, expire = body.get("ttl"), body.get("expireTime", body.get("expire_time"))
    if ttl is not None and expire is not None:
        raise invalid("oneof field 'expiration' is already set. Cannot set 'ttl'")
    if ttl is not None:
        m = _TTL.match(ttl) if isinstance(ttl, str) else None
        if m is None:
            raise invalid(f"Invalid value at 'cached_content.ttl' (type.googleapis.com/google.protobuf.Duration), "
                          f"\"{ttl}\"")
        return now + float(m.group(1))
    if expire is not None:
        return _parse_time(expire, "cached_content.expire_time")
    return None if default is None else now + default


@dataclass
class CachedContent:
    name: str
    model: str
    display_name: str
    contents: list[dict[str, Any]]
    system: dict[str, Any] | None
    tools: list[dict[str, Any]] | None
    tool_config: dict[str, Any] | None
    tokens: int
    create_time: float
    update_time: float
    expire_time: float

    def resource(self) -> dict[str, Any]:
        """The CachedContent as the API shows it: its inputs (contents, instruction, tools) are not."""
        shown: dict[str, Any] = {
            "name": self.name,
            "model": f"models/{self.model}",
            "createTime": timestamp(self.create_time),
            "updateTime": timestamp(self.update_time),
            "expireTime": timestamp(self.expire_time),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }
        if self.display_name:
            shown["displayName"] = self.display_name
        return shown

    def applied_to(self, data: dict[str, Any]) -> dict[str, Any]:
        """A generateContent request with the cached parts put where the model sees them."""
        merged = {**data, "contents": [*self.contents, *(data.get("contents") or [])]}
        for key, value in (("systemInstruction", self.system), ("tools", self.tools),
                           ("toolConfig", self.tool_config)):
            if value is not None:
                merged[key] = value
        return merged


@dataclass
class _Calls:
    create: int = 0
    get: int = 0
    list: int = 0
    update: int = 0
    delete: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class CacheStore:
    """The caches of the emulator's one project, and how often each method was called (for tests)."""

    clock: Callable[[], float] = time.time
    _caches: dict[str, CachedContent] = field(default_factory=dict)
    _calls: _Calls = field(default_factory=_Calls)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _doomed: int = 0

    # -- the API ---------------------------------------------------------------------------------

    def create(self, body: Any) -> CachedContent:
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected a CachedContent object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise invalid("* CachedContent.model: model is required")
        model = normalize_model(model)
        display = body.get("displayName", body.get("display_name", ""))
        if not isinstance(display, str) or len(display) > MAX_DISPLAY_NAME:
            raise invalid(f"* CachedContent.display_name: must be a string of at most {MAX_DISPLAY_NAME} characters")
        contents = body.get("contents") or []
        if not isinstance(contents, list):
            raise invalid("* CachedContent.contents: expected a list of Content objects")
        roles, kinds = [], []
        for i, content in enumerate(contents):
            role, _, ks = validate_content(content, f"cached_content.contents[{i}]", role_required=True)
            roles.append(role)
            kinds.append(ks)
        check_function_turns(roles, kinds)
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system is not None:
            validate_content(system, "cached_content.system_instruction", role_required=False)
        tools = body.get("tools")
        if tools is not None:
            validate_tools(tools)
        tool_config = body.get("toolConfig", body.get("tool_config"))
        if not contents and system is None and not tools:
            raise invalid("CachedContent must have at least one of contents, system_instruction or tools.")
        tokens = count_tokens(prefix_chars({"contents": contents, "systemInstruction": system, "tools": tools}))
        least = min_tokens(model)
        if tokens < least:
            raise invalid(f"Cached content is too small. total_token_count={tokens}, min_total_token_count={least}")
        now = self.clock()
        expire = _expiry(body, now, DEFAULT_TTL_S)
        assert expire is not None
        if expire <= now:
            raise invalid("* CachedContent.expire_time: must be in the future")
        cache = CachedContent(
            name=f"cachedContents/{secrets.token_hex(8)}", model=model, display_name=display, contents=contents,
            system=system, tools=tools, tool_config=tool_config if isinstance(tool_config, dict) else None,
            tokens=tokens, create_time=now, update_time=now, expire_time=expire)
        shown = CachedContent(**cache.__dict__)
        with self._lock:
            self._calls.create += 1
            self._caches[cache.name] = cache
            if self._doomed > 0:
                self._doomed -= 1
                cache.expire_time = now - 1
        return shown

    def get(self, name: str, count: bool = True) -> CachedContent:
        with self._lock:
            if count:
                self._calls.get += 1
            self._drop_expired()
            cache = self._caches.get(_resource(name))
        if cache is None:
            raise ApiError(403, NOT_FOUND, "PERMISSION_DENIED")
        return cache

    def list(self, page_size: int, page_token: str) -> tuple[list[CachedContent], str]:
        if page_size <= 0:
            page_size = DEFAULT_PAGE_SIZE
        page_size = min(page_size, MAX_PAGE_SIZE)
        with self._lock:
            self._calls.list += 1
            self._drop_expired()
            ordered = sorted(self._caches.values(), key=lambda c: (c.create_time, c.name))
        start = 0
        if page_token:
            try:
                start = int(page_token)
            except ValueError:
                raise invalid(f"Invalid page token: {page_token!r}") from None
        page = ordered[start:start + page_size]
        after = start + page_size
        return page, str(after) if after < len(ordered) else ""

    def update(self, name: str, body: Any) -> CachedContent:
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected a CachedContent object.")
        with self._lock:
            self._calls.update += 1
        cache = self.get(name, count=False)
        now = self.clock()
        expire = _expiry(body, now, None)
        if expire is None:
            raise invalid("* update_mask: only ttl or expire_time can be updated")
        with self._lock:
            cache.expire_time, cache.update_time = expire, now
        return cache

    def delete(self, name: str) -> None:
        with self._lock:
            self._calls.delete += 1
            self._drop_expired()
            if self._caches.pop(_resource(name), None) is None:
                raise ApiError(403, NOT_FOUND, "PERMISSION_DENIED")

    # -- for tests -------------------------------------------------------------------------------

    def expire(self, name: str | None = None, display_name: str | None = None, made_next: int = 0) -> int:
        """Expire now the caches named (or with that display name; all without either): what an elapsed
        TTL does. ``made_next``: the next caches made are gone as soon as they are answered too (a cache
        lost again right after it is made again)."""
        with self._lock:
            self._doomed = made_next
            hit = [c for c in self._caches.values()
                   if (name is None or c.name == _resource(name))
                   and (display_name is None or c.display_name == display_name)]
            for c in hit:
                c.expire_time = self.clock() - 1
            return len(hit)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._drop_expired()
            return {"caches": [{**c.resource(), "cachedTokens": c.tokens} for c in self._caches.values()],
                    "calls": self._calls.as_json()}

    def clear(self) -> int:
        with self._lock:
            n = len(self._caches)
            self._caches.clear()
            self._calls = _Calls()
            self._doomed = 0
            return n

    def _drop_expired(self) -> None:
        now = self.clock()
        for name in [n for n, c in self._caches.items() if c.expire_time <= now]:
            del self._caches[name]


def _resource(name: str) -> str:
    return name if name.startswith("cachedContents/") else f"cachedContents/{name}"

