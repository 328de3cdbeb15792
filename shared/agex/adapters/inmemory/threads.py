"""In-memory thread store: one lock stands in for Firestore's transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from agex.core.errors import AlreadyExists, NotFound
from agex.core.thread import Thread
from agex.ports.rules import check_size, valid_document_id
from agex.ports.threads import ThreadStore

T = TypeVar("T")


class InMemoryThreads(ThreadStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[tuple[str, str], Thread] = {}

    def create_thread(self, thread: Thread) -> Thread:
        if not (valid_document_id(thread.tenant) and valid_document_id(thread.thread_id)):
            raise ValueError(f"thread {thread.thread_id!r} of tenant {thread.tenant!r} cannot name a document")
        check_size(_path(thread), thread.model_dump(mode="python"))
        key = (thread.tenant, thread.thread_id)
        with self._lock:
            existing = self._threads.get(key)
            if existing is not None:
                raise AlreadyExists(f"thread {thread.thread_id} exists", existing=existing.model_copy(deep=True))
            self._threads[key] = thread.model_copy(deep=True)
        return thread

    def get_thread(self, tenant: str, thread_id: str) -> Thread | None:
        with self._lock:
            found = self._threads.get((tenant, thread_id))
            return found.model_copy(deep=True) if found else None

    def update_thread(self, tenant: str, thread_id: str,
                      mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, T]:
        with self._lock:
            current = self._threads.get((tenant, thread_id))
            if current is None:
                raise NotFound(f"thread {thread_id!r} not found")
            new, value = mutate(current.model_copy(deep=True))
            if new is not None:
                check_size(_path(new), new.model_dump(mode="python"))
                self._threads[(tenant, thread_id)] = new.model_copy(deep=True)
                current = new
            return current.model_copy(deep=True), value


def _path(thread: Thread) -> str:
    return f"tenants/{thread.tenant}/threads/{thread.thread_id}"
