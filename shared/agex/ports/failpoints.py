"""Failpoints port: named places where a process may be made to fail on purpose, for chaos drills. The
engine calls ``hit`` at each; what happens there is the adapter's business (``agex.adapters.failpoints``)."""

from __future__ import annotations

from typing import Protocol


class Failpoints(Protocol):
    def hit(self, point: str) -> str | None:
        """Fire ``point`` if it is armed: the adapter may end the process; an action other than dying is
        returned for the code at that point to act on (``"stall"``); None when the point is not armed."""


class NoFailpoints:
    """No failpoint is ever armed: what a deployment runs with unless a drill sets one up."""

    def hit(self, point: str) -> str | None:
        return None


NO_FAILPOINTS = NoFailpoints()
