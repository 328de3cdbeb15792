"""Firestore adapter of the metrics store port.

Layout (``prefix`` is empty in production; tests isolate themselves with a unique one)::

    {prefix}tenants/{tenant}/{prefix}run_metrics/{run_id}      a RunMetrics, native (TTL on expire_at)
    {prefix}agent_versions/{agent}~{version}                   an AgentVersion, fleet-wide
    {prefix}drift_alerts/{alert_id}                            alert_json, agent, version, metric,
                                                               detected_at, claimed_by, claimed_at,
                                                               published_at, published_by
    {prefix}agex_state/{key}                                   {"value": the drift function's state}
    {prefix}tenants/{tenant}/{prefix}evals/{eval_id}           an evaluation result, native

Datetimes are Timestamps (queries and the TTL policy need that) and come back as aware UTC datetimes. An
alert is kept whole as one JSON string (its ``counts`` are keyed by observed values, which Firestore may
refuse as field names), with the fields its listing filters on beside it.

Concurrency. Every conditional write is a precondition, not a transaction: a first write is a
``create`` (fails if the document exists), a change of a document read is an ``update`` on the
precondition that it is still the version read (its ``update_time``), tried again on the new version if
another writer got there first. So two instances claiming one alert cannot both get ``created`` or both
``reclaimed``, and no lock is held (the emulator deadlocks concurrent transactions on one document until
its lock timeout).

The Google client libraries are imported only when a store is made or used, so that importing this
module costs nothing at a function's cold start.

Indexes the deployment must declare (terraform/modules/fleet/firestore.tf):

- ``query_run_metrics`` across tenants: collection-group indexes on ``run_metrics``: ``agent`` ASC,
  ``ended_at`` ASC and ``agent``, ``agent_version``, ``ended_at`` ASC; with no agent, a collection-group
  single-field index on ``ended_at`` (not automatic for collection groups).
- ``query_run_metrics`` of one tenant: the same two composites at collection scope (``ended_at`` alone
  is automatic).
- ``list_alerts`` of one agent: ``drift_alerts``: ``agent`` ASC, ``detected_at`` DESC.
- ``list_evals``: ``evals``: ``agent`` ASC with ``created_at`` DESC; with ``version``, ``accepted`` or
  both as equalities between them.
- ``list_versions`` needs none: it filters on ``agent`` and sorts the few versions itself.
- TTL on ``run_metrics.expire_at`` (collection group); exempt from single-field indexing the maps no
  query reads (``models``, ``tool_calls``, ``watched``...), ``drift_alerts.alert_json`` and
  ``agex_state.value``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.errors import NotFound, TransientError
from agex.core.metrics import AgentVersion, DriftAlert, RunMetrics
from agex.ports.metrics_rules import (
    check_eval,
    check_id,
    check_query,
    claim_state,
    merge_version,
    utc,
    utc_all,
)
from agex.ports.metrics_store import AlertClaim, MetricsStore, StoredAlert
from agex.ports.rules import check_collection_prefix, check_size, valid_document_id

if TYPE_CHECKING:
    from google.cloud import firestore

__all__ = ["FirestoreMetricsStore"]

T = TypeVar("T")

_GET_ALL_CHUNK = 300
"""References per batched read: one RPC each, of a size the server takes comfortably."""


class _Retry(Exception):
    """A precondition failed: another writer changed the document since it was read."""


class FirestoreMetricsStore(MetricsStore):
    """Metrics, versions, alerts, state and evaluations in Firestore (native mode).

    ``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``/``database``. ``prefix`` is prepended to each collection id; the
    collection-group query across tenants only sees records of the same prefix. ``max_attempts``: reads
    of a contended document before a conditional write gives up with ``TransientError``.
    """

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        project: str | None = None,
        database: str | None = None,
        prefix: str = "",
        max_attempts: int = 20,
    ) -> None:
        check_collection_prefix(prefix)
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project, database=database or "(default)")
        self._client = client
        self.prefix = prefix
        self._tenants = f"{prefix}tenants"
        self._run_metrics = f"{prefix}run_metrics"
        self._versions = f"{prefix}agent_versions"
        self._alerts = f"{prefix}drift_alerts"
        self._state = f"{prefix}agex_state"
        self._evals = f"{prefix}evals"
        self._max_attempts = max_attempts

    @property
    def client(self) -> firestore.Client:
        return self._client

    # --- references -------------------------------------------------------------------------------------

    def _tenant(self, tenant: str) -> firestore.DocumentReference:
        check_id("tenant", tenant)
        return self._client.collection(self._tenants).document(tenant)

    def _run_ref(self, tenant: str, run_id: str) -> firestore.DocumentReference:
        check_id("run id", run_id)
        return self._tenant(tenant).collection(self._run_metrics).document(run_id)

    def _version_ref(self, agent: str, version: str) -> firestore.DocumentReference:
        key = f"{agent}~{version}"
        check_id("agent version", key)
        return self._client.collection(self._versions).document(key)

    def _alert_ref(self, alert_id: str) -> firestore.DocumentReference:
        check_id("alert id", alert_id)
        return self._client.collection(self._alerts).document(alert_id)

    # --- runs' metrics ---------------------------------------------------------------------------------

    def put_run_metrics(self, record: RunMetrics) -> bool:
        from google.api_core import exceptions as gexc

        ref = self._run_ref(record.tenant, record.run_id)
        doc = utc_all(record.model_dump(mode="python"))
        check_size(ref.path, doc)
        with calling(f"recording the metrics of run {record.run_id}"):
            try:
                ref.create(doc)  # written once: a second writer (step and collector racing) changes nothing
            except gexc.Conflict:
                return False
        return True

    def recorded(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        refs = [self._run_ref(t, r) for t, r in dict.fromkeys(runs) if valid_document_id(t) and valid_document_id(r)]
        by_path = {ref.path: (ref.parent.parent.id, ref.id) for ref in refs}
        found: set[tuple[str, str]] = set()
        with calling("checking which runs have metrics"):
            for i in range(0, len(refs), _GET_ALL_CHUNK):
                # a field mask: only existence matters, not the records' bytes
                for snap in self._client.get_all(refs[i:i + _GET_ALL_CHUNK], field_paths=["run_id"]):
                    if snap.exists:
                        found.add(by_path[snap.reference.path])
        return found

    def query_run_metrics(self, *, ended_from: datetime, ended_to: datetime, agent: str | None = None,
                          tenant: str | None = None, version: str | None = None,
                          limit: int = 1000) -> list[RunMetrics]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        check_query(agent, version)
        if limit <= 0 or tenant is not None and not valid_document_id(tenant):
            return []
        query: Any = (self._tenant(tenant).collection(self._run_metrics) if tenant is not None
                      else self._client.collection_group(self._run_metrics))
        if agent is not None:
            query = query.where(filter=FieldFilter("agent", "==", agent))
        if version is not None:
            query = query.where(filter=FieldFilter("agent_version", "==", version))
        query = (query.where(filter=FieldFilter("ended_at", ">=", utc(ended_from)))
                 .where(filter=FieldFilter("ended_at", "<", utc(ended_to)))
                 .order_by("ended_at").limit(limit))
        return [RunMetrics.model_validate(d) for d in self._query(query, "querying runs' metrics")]

    # --- agent versions --------------------------------------------------------------------------------

    def register_version(self, version: AgentVersion) -> AgentVersion:
        ref = self._version_ref(version.agent, version.version)
        seen = AgentVersion.model_validate(utc_all(version.model_dump()))

        def attempt() -> AgentVersion:
            snap = ref.get()
            stored = AgentVersion.model_validate(native(snap.to_dict())) if snap.exists else None
            new = merge_version(stored, seen)
            if new is None:
                assert stored is not None
                return stored
            if stored is None:
                self._create(ref, new.model_dump(mode="python"))
            else:
                self._update(ref, snap, {"mismatches": new.mismatches})
            return new

        return self._retrying(attempt, f"registering version {version.version} of agent {version.agent}")

    def list_versions(self, agent: str) -> list[AgentVersion]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._client.collection(self._versions).where(filter=FieldFilter("agent", "==", agent))
        # an agent has few versions: sorted here rather than by an index on (agent, first_seen)
        found = [AgentVersion.model_validate(d) for d in self._query(query, f"listing versions of agent {agent}")]
        return sorted(found, key=lambda v: (v.first_seen, v.version))

    # --- drift alerts ----------------------------------------------------------------------------------

    def claim_alert(self, alert: DriftAlert, owner: str, now: datetime, hold_s: float = 120.0) -> AlertClaim:
        ref = self._alert_ref(alert.alert_id)
        now = utc(now)

        def attempt() -> AlertClaim:
            snap = ref.get()
            if not snap.exists:
                self._create(ref, {
                    "alert_id": alert.alert_id, "agent": alert.agent, "version": alert.version,
                    "metric": alert.metric, "detected_at": utc(alert.detected_at),
                    "alert_json": alert.model_dump_json(by_alias=True),
                    "claimed_by": owner, "claimed_at": now, "published_at": None, "published_by": None,
                })
                return AlertClaim.created
            doc = snap.to_dict() or {}
            state = claim_state(doc["claimed_at"], doc.get("published_at"), now, hold_s)
            if state is AlertClaim.reclaimed:
                self._update(ref, snap, {"claimed_by": owner, "claimed_at": now})
            return state

        return self._retrying(attempt, f"claiming alert {alert.alert_id}")

    def mark_published(self, alert_id: str, owner: str, now: datetime) -> None:
        if not valid_document_id(alert_id):
            raise NotFound(f"alert {alert_id} was never claimed")
        ref = self._alert_ref(alert_id)

        def attempt() -> None:
            snap = ref.get()
            if not snap.exists:
                raise NotFound(f"alert {alert_id} was never claimed")
            if (snap.to_dict() or {}).get("published_at") is None:  # the first mark stands
                self._update(ref, snap, {"published_at": utc(now), "published_by": owner})

        self._retrying(attempt, f"marking alert {alert_id} published")

    def list_alerts(self, *, agent: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> list[StoredAlert]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        if limit <= 0:
            return []
        query: Any = self._client.collection(self._alerts)
        if agent is not None:
            query = query.where(filter=FieldFilter("agent", "==", agent))
        if since is not None:
            query = query.where(filter=FieldFilter("detected_at", ">=", utc(since)))
        query = query.order_by("detected_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [StoredAlert(DriftAlert.model_validate_json(d["alert_json"]), d.get("published_at"))
                for d in self._query(query, "listing drift alerts")]

    # --- the drift function's state ----------------------------------------------------------------------

    def get_state(self, key: str) -> dict[str, Any] | None:
        if not valid_document_id(key):
            return None
        with calling(f"reading state {key}"):
            snap = self._client.collection(self._state).document(key).get()
        return native((snap.to_dict() or {}).get("value")) if snap.exists else None

    def put_state(self, key: str, value: dict[str, Any]) -> None:
        check_id("state key", key)
        ref = self._client.collection(self._state).document(key)
        doc = {"value": utc_all(value)}
        check_size(ref.path, doc)
        with calling(f"writing state {key}"):
            ref.set(doc)

    # --- evaluation results ----------------------------------------------------------------------------

    def put_eval(self, tenant: str, result: dict[str, Any]) -> None:
        check_eval(result)
        ref = self._tenant(tenant).collection(self._evals).document(result["eval_id"])
        # the free-form result (any JSON: arrays in arrays, any keys) as one string, which Firestore stores as
        # it is; beside it, the fields the listing filters and orders on
        doc = {k: utc_all(result[k]) for k in _EVAL_FIELDS if k in result}
        doc["result_json"] = json.dumps(result, default=_iso, ensure_ascii=True)
        check_size(ref.path, doc)
        with calling(f"storing evaluation {result['eval_id']}"):
            ref.set(doc)

    def list_evals(self, tenant: str, agent: str, *, version: str | None = None, accepted: bool | None = None,
                   limit: int = 20) -> list[dict[str, Any]]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        if limit <= 0 or not valid_document_id(tenant):
            return []
        query: Any = self._tenant(tenant).collection(self._evals).where(filter=FieldFilter("agent", "==", agent))
        if version is not None:
            query = query.where(filter=FieldFilter("version", "==", version))
        if accepted is not None:
            query = query.where(filter=FieldFilter("accepted", "==", accepted))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [{**json.loads(d["result_json"]), **{k: d[k] for k in _EVAL_FIELDS if k in d}}
                for d in self._query(query, f"listing evaluations of agent {agent}")]

    # --- calls ------------------------------------------------------------------------------------------

    def _query(self, query: Any, what: str) -> list[dict[str, Any]]:
        with calling(what):
            return [native(snap.to_dict()) for snap in query.stream()]

    def _create(self, ref: firestore.DocumentReference, doc: dict[str, Any]) -> None:
        from google.api_core import exceptions as gexc

        try:
            ref.create(doc)
        except gexc.Conflict as e:
            raise _Retry from e

    def _update(self, ref: firestore.DocumentReference, snap: Any, fields: dict[str, Any]) -> None:
        from google.api_core import exceptions as gexc

        try:
            ref.update(fields, option=self._client.write_option(last_update_time=snap.update_time))
        except (gexc.FailedPrecondition, gexc.NotFound) as e:
            raise _Retry from e

    def _retrying(self, attempt: Callable[[], T], what: str) -> T:
        """Read, decide and write conditionally until the write lands on the version read."""
        with calling(what):
            for _ in range(self._max_attempts):
                try:
                    return attempt()
                except _Retry:
                    continue
        raise TransientError(f"{what}: too much contention, gave up after {self._max_attempts} attempts")




_EVAL_FIELDS = ("eval_id", "agent", "version", "accepted", "created_at")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return utc(value).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in an evaluation result")
