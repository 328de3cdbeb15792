"""The context window handed from one step to the next in the step task, so a step does not read it again.

Without it every step reads the events of its last ``context_window_steps`` steps: about fifty documents,
each a billed Firestore read, to learn what the step before it knew already. So the commit of a step seals the
window of the next one, the events of its steps as of the commit, and its task carries it:

- the commit writes ``"{seq}:{sha256 of the window's text}"`` on the head (``RunHead.window``) in the same write
  as the events it covers, so the digest names exactly what the store holds up to ``seq``;
- the next step uses the window its task carries only if its digest is the head's, and reads only the events
  written after ``seq`` (none, usually: its own claim's are known). Anything else (a task re-enqueued by the
  sweep or an approval, a body changed or cut short, an old head) reads the window from the store as before;
- a step seals a window only if it knows every event up to the commit: what it read, and what it wrote. An
  event someone else appended meanwhile (a late result) leaves a gap, and the next step reads.

Nothing here does I/O: the step runner reads and writes, these functions decide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from agex.core.run import Event, RunHead
from agex.ports.checkpoint_store import Mutation

T = TypeVar("T")

MAX_CARRIED_BYTES = 256 * 1024
"""A larger window is not carried: a Cloud Tasks task is at most 1 MiB, and is billed per 32 KiB of it."""


@dataclass(frozen=True)
class Carried:
    """A window as a step task carries it: the events of its steps up to ``through``, as one JSON text."""

    through: int
    text: str


def seal(mutation: Mutation[T], read: RunHead, known: Iterable[Event], known_through: int,
         first: int) -> tuple[Mutation[T], Carried | None]:
    """``mutation`` (a step's commit, decided on the head ``read``) with the window of the next step sealed on its
    head, and that window; or unsealed (``window`` None) when the step does not know every event up to the commit.

    ``known``: the events the step read and wrote; ``known_through``: the last seq up to which what it read was
    complete; ``first``: the next step's first step in context."""
    if mutation.head is None:
        return mutation, None
    by_seq = {e.seq: e for e in known}
    by_seq.update((e.seq, e) for e in mutation.events)
    complete = all(s in by_seq for s in range(known_through + 1, read.seq + 1))
    window = sorted((e for e in by_seq.values() if e.step >= first), key=lambda e: e.seq)
    text = _text(window) if complete else ""
    if not complete or len(text) > MAX_CARRIED_BYTES:
        return replace(mutation, head=mutation.head.model_copy(update={"window": None})), None
    carried = Carried(mutation.head.seq, text)
    return replace(mutation, head=mutation.head.model_copy(update={"window": seal_of(carried)})), carried


def seal_of(carried: Carried) -> str:
    return f"{carried.through}:{hashlib.sha256(carried.text.encode()).hexdigest()}"


def opened(head: RunHead, carried: Carried | None, first: int) -> list[Event] | None:
    """The events of steps ``>= first`` up to ``carried.through`` if ``carried`` is the window the head sealed,
    else None (read the store)."""
    if carried is None or head.window is None or head.window != seal_of(carried):
        return None
    try:
        events = [Event.model_validate(e) for e in json.loads(carried.text)]
    except ValueError:
        return None
    return [e for e in events if e.step >= first]


def _text(events: Sequence[Event]) -> str:
    dumped: list[dict[str, Any]] = [e.model_dump(mode="json") for e in events]
    return json.dumps(dumped, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
