"""Thread store port: the conversations runs belong to (``agex.core.thread``). One document per thread, changed
only in transactions, like a run's head."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TypeVar

from agex.core.thread import Thread

T = TypeVar("T")


class ThreadStore(abc.ABC):
    @abc.abstractmethod
    def create_thread(self, thread: Thread) -> Thread:
        """Create the thread; raise ``AlreadyExists`` with the stored thread as ``existing`` if its id is taken."""

    @abc.abstractmethod
    def get_thread(self, tenant: str, thread_id: str) -> Thread | None: ...

    @abc.abstractmethod
    def update_thread(self, tenant: str, thread_id: str,
                      mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, T]:
        """Apply ``mutate`` in a transaction (it may run several times): it returns the new thread, or None to
        write nothing, and a value handed back with the thread as stored. ``NotFound`` if there is no thread."""
