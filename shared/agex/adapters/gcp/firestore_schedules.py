"""Firestore adapter of the schedule state port: ``{prefix}schedule_states/{name}`` (paused, by, at), a
document per schedule ever paused. Written only by a pause or a resume; read by each firing."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.schedule import ScheduleState
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_collection_prefix
from agex.ports.schedules import ScheduleStore

if TYPE_CHECKING:
    from google.cloud import firestore


class FirestoreSchedules(ScheduleStore):
    def __init__(self, client: firestore.Client, *, prefix: str = "") -> None:
        check_collection_prefix(prefix)
        self._client = client
        self._collection = f"{prefix}schedule_states"

    def state(self, name: str) -> ScheduleState | None:
        with calling(f"reading the state of schedule {name}"):
            snap = self._client.collection(self._collection).document(name).get()
        return ScheduleState.model_validate(native(snap.to_dict())) if snap.exists else None

    def set_paused(self, name: str, paused: bool, by: str, at: datetime) -> ScheduleState:
        state = ScheduleState(name=name, paused=paused, by=by, at=utc(at))
        with calling(f"{'pausing' if paused else 'resuming'} schedule {name}"):
            self._client.collection(self._collection).document(name).set(state.model_dump(mode="python"))
        return state
