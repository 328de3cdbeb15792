"""Resource names: ``projects/{p}/secrets/{s}[/versions/{v}]``.

The project segment is kept exactly as given (id or number): the emulator has
no resource manager to map one to the other, so they name different projects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agex.ports.rules import SECRET_ID  # the documented rule, as the adapters enforce it

from .errors import invalid_argument

_PROJECT = re.compile(r"^projects/([^/]+)$")
_SECRET = re.compile(r"^projects/([^/]+)/secrets/([^/]+)$")
_VERSION = re.compile(r"^projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)$")
LATEST = "latest"


@dataclass(frozen=True)
class VersionName:
    secret: str  # projects/p/secrets/s
    version: str  # a number or "latest"

    @property
    def full(self) -> str:
        return f"{self.secret}/versions/{self.version}"


def parse_project(parent: str) -> str:
    if not _PROJECT.match(parent):
        raise invalid_argument(f"Invalid resource field value in the request: parent {parent!r}.")
    return parent


def parse_secret(name: str) -> str:
    m = _SECRET.match(name)
    if not m or not SECRET_ID.match(m.group(2)):
        raise invalid_argument(f"Invalid resource field value in the request: name {name!r}.")
    return name


def parse_version(name: str) -> VersionName:
    m = _VERSION.match(name)
    if not m or not SECRET_ID.match(m.group(2)):
        raise invalid_argument(f"Invalid resource field value in the request: name {name!r}.")
    secret = f"projects/{m.group(1)}/secrets/{m.group(2)}"
    return VersionName(secret, m.group(3))
