"""Server-sent events, read line by line (the HTML standard's "event stream interpretation", without the
``retry`` field, which the follower's own backoff replaces)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None


@dataclass
class Parser:
    """Feed it the stream's lines (without their ends); a blank line completes a message."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _seen: bool = False

    def feed(self, line: str) -> Message | None:
        if not line:
            if not self._seen:
                return None
            message = Message(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id, self._seen = "", [], None, False
            return message
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event, self._seen = value, True
        elif name == "data":
            self._data.append(value)
            self._seen = True
        elif name == "id" and "\0" not in value:
            self._id, self._seen = value, True
        return None
