"""Firestore adapter of the limiter port: per-tool limits held across every instance, in every process.

Layout (``prefix`` is empty in production; tests isolate themselves with a unique one)::

    {prefix}limits/{tool}/slots/{k}                 k in 0..max_concurrent-1: {holder, until, taken_at}
    {prefix}limits/{tool}/seconds/{start}-{n}       n in 0..permits-1: {holder, at, expire_at}

Concurrency. A slot document exists while its slot is taken and is deleted on release, so the tool's
``slots`` collection holds only taken (or expired, never released) slots. ``acquire`` reads that
collection in one query and picks slots with the rules of :func:`agex.ports.limiter.slot_order`: the
holder's own slot first (re-entrance, with a fresh lease), else a free or expired one, scanning from a
random offset so that racing instances spread over the slots. It claims the slot with a conditional
write: ``create`` for a slot with no document (fails if another instance created it meanwhile), or
``update`` on the precondition that the document is still the version read (its ``update_time``) for an
expired one. Firestore applies a precondition atomically with the write, so two instances can never
both claim one slot; the loser tries its next candidate, and after losing every candidate it reads
again (at most ``max_rounds`` times). With every slot held and live the answer is a ``Wait`` until the
earliest lease expires (1..30 s). ``release`` deletes the slot on the precondition that it is still the
version this instance wrote (the update time of its claim, remembered in memory); if that is unknown
(another process) or stale, it reads the slot and deletes it only if the permit's holder still holds it.
Leases are compared with the ``now`` each caller passes, so instances' clocks should agree to well
within a lease.

Rate. A permit is a document named after its window (epoch second of the window's start, see
:func:`agex.ports.limiter.rate_window`) and a number ``n``; taking one is a ``create``, which fails if the
document exists. There is no counter document, so no hot document limits the throughput: each call
writes a document of its own. ``n`` is tried in a random order, skipping numbers this instance already
saw taken in the window, and at most ``max_creates`` times; with none left the answer is a ``Wait``
until the next window. With ``per_second`` above ``max_creates`` a caller may thus be told to wait
while a few permits of a nearly full window are left: the limit is never exceeded, at worst under-used
at its edge. Permits carry ``expire_at`` (window end + 1 h) for a TTL policy; between expiry and TTL
deletion (up to about a day) they are inert storage. Windows follow each instance's clock: skew between
instances shifts window boundaries, not the count within one window.

Both limits: the rate permit is taken first, then the slot; a call refused a slot has spent its permit.

Cost per call (document reads / writes, as billed):

- ``acquire`` with ``max_concurrent``: one query, ``max(1, slot documents present)`` reads (at most the
  number of slots taken, ``max_concurrent`` when full, plus stale slots above a lowered limit), and one
  write; each race lost costs one more failed write RPC, each extra round another query. A ``Wait``
  costs the query only.
- ``acquire`` with ``per_second``: no read, one write (the create); a refused call costs up to
  ``min(permits, max_creates)`` failed creates (fewer once this instance has seen the window's
  permits taken). The TTL deletion of each permit later is billed as one delete.
- ``release``: one delete; one read more when the releasing instance is not the one that acquired.
- No limits: nothing.

Firestore sustains about one write per second per document: a slot is written twice per call (claim,
release), so tools whose calls last well under a second on many slots may see precondition races,
handled as above. Permit ids increase with time; past ~500 writes/s to one tool's ``seconds``
collection, Firestore's advice against monotonically increasing ids applies.

Indexes: none needed (a collection is read whole; permits are never queried). Declare a TTL policy on
``seconds.expire_at`` (collection group) and exempt ``slots`` and ``seconds`` fields from single-field
indexing to save index writes.
"""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from agex.adapters.gcp.firestore_store import _translate
from agex.core.errors import ConfigurationError
from agex.core.tool import ToolLimits
from agex.ports.limiter import (
    MIN_SLOT_WAIT_S,
    Limiter,
    Permit,
    Wait,
    check_request,
    rate_wait,
    rate_window,
    slot_order,
    slot_wait,
)
from agex.ports.rules import check_collection_prefix, valid_document_id

__all__ = ["FirestoreLimiter"]

_PERMIT_TTL = timedelta(hours=1)
_MAX_REMEMBERED_CLAIMS = 10_000
_LOST_RACE = (gexc.Conflict, gexc.FailedPrecondition, gexc.NotFound)
"""A create found the document, or a precondition found it changed or gone: another instance won."""


class FirestoreLimiter(Limiter):
    """Per-tool limits in Firestore (native mode).

    ``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``/``database``. ``prefix`` is prepended to the ``limits`` collection id.
    ``max_rounds``: reads of the slots before a caller who lost every race is told to wait.
    ``max_creates``: rate permits tried per call. ``stats`` counts ``reads``, ``writes`` (successful) and
    ``lost`` (writes refused because another instance got there first), for tests and benchmarks.
    """

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        project: str | None = None,
        database: str | None = None,
        prefix: str = "",
        max_rounds: int = 3,
        max_creates: int = 16,
    ) -> None:
        check_collection_prefix(prefix)
        self._client = client or firestore.Client(project=project, database=database or "(default)")
        self._limits = f"{prefix}limits"
        self._max_rounds = max(1, max_rounds)
        self._max_creates = max(1, max_creates)
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, int, str], datetime] = {}
        """(tool, slot, holder) -> update time of this instance's claim: lets release skip a read."""
        self._taken: dict[str, tuple[int, set[int]]] = {}
        """tool -> (window start, permit numbers seen taken in it): skips creates bound to fail."""
        self.stats: dict[str, int] = {"reads": 0, "writes": 0, "lost": 0}

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.stats[k] += v

    def _tool_ref(self, tool: str) -> firestore.DocumentReference:
        if not valid_document_id(tool):
            raise ConfigurationError(f"tool name {tool!r} cannot name a Firestore document (empty, '/', '.', "
                                     f"'..', '__x__' or over 1500 bytes)")
        return self._client.collection(self._limits).document(tool)

    # --- port -------------------------------------------------------------------------------------------

    def acquire(self, tool: str, limits: ToolLimits, holder: str, now: datetime, lease_s: float) -> Permit | Wait:
        check_request(limits, now, lease_s)
        if not limits.any:
            return Permit(tool, holder)
        ref = self._tool_ref(tool)
        if limits.per_second is not None:
            wait = self._take_rate(ref, tool, limits.per_second, holder, now)
            if wait is not None:
                return wait
        if limits.max_concurrent is None:
            return Permit(tool, holder)
        return self._take_slot(ref, tool, limits.max_concurrent, holder, now, lease_s)

    def release(self, permit: Permit) -> None:
        if permit.slot is None:
            return
        ref = self._tool_ref(permit.tool).collection("slots").document(str(permit.slot))
        with self._lock:
            version = self._claims.pop((permit.tool, permit.slot, permit.holder), None)
        what = f"releasing slot {permit.slot} of tool {permit.tool}"
        for _ in range(self._max_rounds):
            if version is None:
                snap = self._get(ref, what)
                if not snap.exists or (snap.to_dict() or {}).get("holder") != permit.holder:
                    return  # released already, or taken over after its lease expired
                version = snap.update_time
            try:
                ref.delete(option=self._client.write_option(last_update_time=version))
            except (gexc.FailedPrecondition, gexc.NotFound):
                version = None  # changed since: check again who holds it
                continue
            except gexc.GoogleAPIError as e:
                raise _translate(e, what) from e
            self._count(writes=1)
            return

    # --- rate -------------------------------------------------------------------------------------------

    def _take_rate(self, ref: firestore.DocumentReference, tool: str, per_second: float, holder: str,
                   now: datetime) -> Wait | None:
        window = rate_window(per_second, now)
        with self._lock:
            start, seen = self._taken.get(tool, (window.start, set()))
            taken = set(seen) if start == window.start else set()
        candidates = [n for n in random.sample(range(window.permits), window.permits) if n not in taken]
        doc = {"holder": holder, "at": now,
               "expire_at": datetime.fromtimestamp(window.end, now.tzinfo) + _PERMIT_TTL}
        seconds = ref.collection("seconds")
        granted = False
        for n in candidates[: self._max_creates]:
            try:
                seconds.document(f"{window.start}-{n}").create(doc)
            except gexc.Conflict:
                self._count(lost=1)
                taken.add(n)
                continue
            except gexc.GoogleAPIError as e:
                raise _translate(e, f"taking a rate permit of tool {tool}") from e
            self._count(writes=1)
            taken.add(n)  # ours now: not worth a create by the next caller of this instance either
            granted = True
            break
        self._remember_taken(tool, window.start, taken)
        return None if granted else rate_wait(tool, per_second, window, now)

    def _remember_taken(self, tool: str, start: int, taken: set[int]) -> None:
        with self._lock:
            prev_start, prev = self._taken.get(tool, (start, set()))
            if prev_start == start:
                taken |= prev
            elif prev_start > start:
                return  # a caller with an older clock reading: keep the newer window
            self._taken[tool] = (start, taken)

    # --- slots ------------------------------------------------------------------------------------------

    def _take_slot(self, ref: firestore.DocumentReference, tool: str, max_concurrent: int, holder: str,
                   now: datetime, lease_s: float) -> Permit | Wait:
        slots = ref.collection("slots")
        doc = {"holder": holder, "until": now + timedelta(seconds=lease_s), "taken_at": now}
        for _ in range(self._max_rounds):
            snaps = self._read_slots(slots, tool)
            held = {k: ((s.to_dict() or {}).get("holder", ""), (s.to_dict() or {})["until"]) for k, s in snaps.items()}
            order = slot_order(max_concurrent, held, holder, now)
            if not order:
                return slot_wait(tool, max_concurrent, held, now)
            for k in order:
                snap = snaps.get(k)
                try:
                    if snap is None:
                        result = slots.document(str(k)).create(doc)
                    else:
                        option = self._client.write_option(last_update_time=snap.update_time)
                        result = snap.reference.update(doc, option=option)
                except _LOST_RACE:
                    self._count(lost=1)
                    continue
                except gexc.GoogleAPIError as e:
                    raise _translate(e, f"claiming slot {k} of tool {tool}") from e
                self._count(writes=1)
                self._remember_claim((tool, k, holder), result.update_time)
                return Permit(tool, holder, k)
        return Wait(MIN_SLOT_WAIT_S, f"tool {tool}: every free call slot was taken by another caller first "
                                     f"({self._max_rounds} tries)")

    def _read_slots(self, slots: Any, tool: str) -> dict[int, Any]:
        try:
            found = list(slots.stream())
        except gexc.GoogleAPIError as e:
            raise _translate(e, f"reading the call slots of tool {tool}") from e
        self._count(reads=max(1, len(found)))  # an empty query is billed one read
        return {int(s.id): s for s in found if s.id.isdigit()}

    def _remember_claim(self, key: tuple[str, int, str], version: datetime) -> None:
        with self._lock:
            self._claims.pop(key, None)
            self._claims[key] = version
            while len(self._claims) > _MAX_REMEMBERED_CLAIMS:  # never released: forget the oldest
                del self._claims[next(iter(self._claims))]

    def _get(self, ref: firestore.DocumentReference, what: str) -> Any:
        try:
            snap = ref.get()
        except gexc.GoogleAPIError as e:
            raise _translate(e, what) from e
        self._count(reads=1)
        return snap
