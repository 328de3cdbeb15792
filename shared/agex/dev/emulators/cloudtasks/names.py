"""Parsing and validation of Cloud Tasks resource names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import invalid_argument, permission_denied

_PROJECT = r"[A-Za-z0-9\-:.]+"
_LOCATION = r"[A-Za-z0-9\-]+"
_QUEUE_ID = r"[A-Za-z0-9\-]{1,100}"
_TASK_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,500}")

_LOCATION_RE = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})")
_QUEUE_RE = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})/queues/({_QUEUE_ID})")
_TASK_RE = re.compile(rf"(projects/{_PROJECT}/locations/{_LOCATION}/queues/{_QUEUE_ID})/tasks/([^/]*)")


@dataclass(frozen=True)
class QueueName:
    project: str
    location: str
    queue_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


@dataclass(frozen=True)
class TaskName:
    queue: str
    task_id: str

    def __str__(self) -> str:
        return f"{self.queue}/tasks/{self.task_id}"


def parse_location(name: str) -> tuple[str, str]:
    m = _LOCATION_RE.fullmatch(name)
    if not m:
        raise invalid_argument(
            f'Invalid resource field value in the request. Location name "{name}" must be formatted: '
            '"projects/<PROJECT_ID>/locations/<LOCATION_ID>".'
        )
    return m.group(1), m.group(2)


def parse_queue(name: str) -> QueueName:
    m = _QUEUE_RE.fullmatch(name)
    if not m:
        raise invalid_argument(
            'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
        )
    return QueueName(m.group(1), m.group(2), m.group(3))


def parse_task(name: str) -> TaskName:
    m = _TASK_RE.fullmatch(name)
    if not m:
        raise invalid_argument(
            "Task name must be formatted: "
            '"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>/tasks/<TASK_ID>".'
        )
    validate_task_id(m.group(2))
    return TaskName(m.group(1), m.group(2))


def validate_task_id(task_id: str) -> None:
    if not _TASK_ID_RE.fullmatch(task_id):
        raise invalid_argument(
            f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), '
            "or underscores (_). Task ID must between 1 and 500 characters."
        )


def check_project(project: str, allowed: str | None) -> None:
    """Mimic the permission error the service gives for a project the caller cannot use."""
    if allowed is not None and project != allowed:
        raise permission_denied(f"Permission denied on resource project {project}.")
