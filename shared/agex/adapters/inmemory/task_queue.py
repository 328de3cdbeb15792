"""In-memory task queue with Cloud Tasks' name dedupe; ``deliver_due`` plays the dispatcher in tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from agex.ports.task_queue import Task, TaskQueue


class InMemoryTaskQueue(TaskQueue):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Task] = {}
        self._names: set[str] = set()
        """Every name ever used: like Cloud Tasks' dedupe window, but without an end."""
        self._attempts: dict[str, int] = {}

    def enqueue(self, task: Task) -> bool:
        with self._lock:
            if task.name in self._names:
                return False
            self._names.add(task.name)
            self._pending[task.name] = task
            return True

    def exists(self, task: Task) -> bool:
        with self._lock:
            return task.name in self._pending

    def pending(self) -> list[Task]:
        with self._lock:
            return list(self._pending.values())

    def drop(self, task: Task) -> None:
        """Forget a pending task without running it: a lost enqueue, for sweep tests."""
        with self._lock:
            self._pending.pop(task.name, None)

    def deliver_due(self, now: datetime, handler: Callable[[Task, int], bool]) -> int:
        """Hand each due task to ``handler(task, attempt)``; a task leaves the queue when the handler
        returns True, and stays for another attempt otherwise. Returns how many were delivered."""
        with self._lock:
            due = [t for t in self._pending.values() if t.schedule_at is None or t.schedule_at <= now]
        for task in due:
            attempt = self._attempts.get(task.name, 0)
            done = handler(task, attempt)
            with self._lock:
                if done:
                    self._pending.pop(task.name, None)
                else:
                    self._attempts[task.name] = attempt + 1
        return len(due)
