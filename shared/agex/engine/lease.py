"""The heartbeat of a step attempt: it renews the attempt's lease while the attempt works.

A lease ends ``lease_seconds`` after its last renewal. The keeper renews it every third of that, in a
thread of its own, through ``decisions.renew_lease`` (a conditional write of the head, no event), so a
live attempt keeps its step however long its model and tool calls take, whatever their timeouts, and
another delivery of the step is refused (409) meanwhile. An attempt that dies stops renewing: its lease
expires at most ``lease_seconds`` later, and the next delivery takes the step over.

A renewal that fails for a transient reason is tried again at the next beat; if none succeeds before
the lease ends, the attempt may be taken over while it still works, and it learns so at its next write
(``LeaseLost``). The keeper stops when the lease ends (the attempt released it, or the run stopped) or
when another attempt holds it (``lost``).
"""

from __future__ import annotations

import contextvars
import threading
from types import TracebackType

from agex.core.clock import Clock
from agex.core.errors import AgexError, LeaseLost, NotFound
from agex.core.run import RunHead
from agex.engine import decisions
from agex.engine.decisions import Delivery
from agex.obs import logging as log
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints

_log = log.get("step")

RENEWALS_PER_LEASE = 3
"""Renewals per lease period: two may fail in a row before the lease can expire under a live attempt."""


class LeaseKeeper:
    def __init__(self, store: CheckpointStore, clock: Clock, d: Delivery, lease_seconds: float,
                 every_seconds: float | None = None, failpoints: Failpoints = NO_FAILPOINTS, adopted: bool = False) -> None:
        self.store, self.clock, self.d, self.lease_seconds = store, clock, d, lease_seconds
        self.adopted = adopted
        """The attempt works under the lease the last commit issued to its task: a renewal takes it, if no write has."""
        self.failpoints = failpoints
        self.every_seconds = every_seconds if every_seconds is not None else max(0.05, lease_seconds / RENEWALS_PER_LEASE)
        self.lost: str | None = None
        """Why the lease is no longer this attempt's, once the keeper saw another attempt holding it."""
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        # the log labels (run, step, ...) follow the thread
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._beat,), daemon=True,
                                        name=f"lease-{self.d.run_id}-{self.d.step}")
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def renew(self) -> bool:
        """One renewal; False once the lease has ended or is lost (then the keeper stops)."""
        d = self.d

        def renew(head: RunHead) -> Mutation[bool]:
            now = self.clock.now()
            taken, started = decisions.take_issued(head, d, now, self.lease_seconds) if self.adopted else (head, [])
            renewed = decisions.renew_lease(taken, d.owner, d.step, now, self.lease_seconds)
            return Mutation(renewed.head or taken, started, renewed.value) if started else renewed

        try:
            renewed = self.store.update_run(d.tenant, d.run_id, renew)
        except LeaseLost as e:
            self.lost = e.message
            return False
        except NotFound:
            return False
        if renewed.value:
            self.renewals += 1
        return bool(renewed.value)

    def check(self) -> None:
        """Raise ``LeaseLost`` if the keeper saw the lease taken over: start no call on a lost lease."""
        if self.lost is not None:
            raise LeaseLost(self.lost)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_seconds):
            if self.failpoints.hit("step.lease_renewal") == "stall":
                # chaos drill: the heartbeat stops (a partition, a paused instance) while the step goes on
                log.info(_log, "failpoint: this attempt stops renewing its lease", outcome="stalled")
                return
            try:
                if not self.renew():
                    return
            except AgexError as e:
                # transient (Firestore unavailable, contention): try again at the next beat; the lease
                # outlives two failed renewals
                _log.warning("could not renew the lease of step %s: %s", self.d.step, e.message,
                             extra={"fields": {"owner": self.d.owner}})
            except Exception:
                _log.exception("could not renew the lease of step %s", self.d.step)
