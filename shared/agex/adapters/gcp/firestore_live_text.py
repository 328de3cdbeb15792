"""Firestore adapter of the live text port: ``{prefix}tenants/{tenant}/live/{run}``, one document per run that a
follower watched while its model answered, overwritten as the text grows (a few times a second at most) and
deleted with the run (TTL on ``expire_at``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from agex.adapters.gcp.firestore_calls import calling, native
from agex.ports.live_text import LiveText, LiveTexts
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_collection_prefix, valid_document_id

if TYPE_CHECKING:
    from google.cloud import firestore


class FirestoreLiveTexts(LiveTexts):
    def __init__(self, client: firestore.Client, *, prefix: str = "") -> None:
        check_collection_prefix(prefix)
        self._client = client
        self._tenants, self._live = f"{prefix}tenants", f"{prefix}live"

    def _ref(self, tenant: str, run_id: str) -> firestore.DocumentReference:
        return self._client.collection(self._tenants).document(tenant).collection(self._live).document(run_id)

    def put(self, tenant: str, run_id: str, live: LiveText, expire_at: datetime) -> None:
        if not (valid_document_id(tenant) and valid_document_id(run_id)):
            return
        with calling(f"writing the live text of run {run_id}"):
            self._ref(tenant, run_id).set({"step": live.step, "attempt": live.attempt, "text": live.text,
                                           "at": utc(live.at), "expire_at": utc(expire_at)})

    def get(self, tenant: str, run_id: str) -> LiveText | None:
        if not (valid_document_id(tenant) and valid_document_id(run_id)):
            return None
        with calling(f"reading the live text of run {run_id}"):
            snap = self._ref(tenant, run_id).get()
        if not snap.exists:
            return None
        data = native(snap.to_dict())
        return LiveText(step=int(data["step"]), attempt=str(data["attempt"]), text=str(data["text"]), at=data["at"])
