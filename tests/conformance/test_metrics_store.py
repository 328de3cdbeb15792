"""The metrics store port, the same tests over memory and Firestore (emulator): records written once,
queries across one tenant or all, versions with their fingerprint mismatches, alerts claimed and
published exactly once, the drift function's state, evaluation results."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agex.adapters.inmemory.metrics_store import InMemoryMetricsStore
from agex.core.errors import NotFound
from agex.core.metrics import AgentVersion, DriftAlert, ModelUsage, RunMetrics, Summary
from agex.ports.metrics_rules import MAX_MISMATCHES
from agex.ports.metrics_store import AlertClaim, MetricsStore
from tests.conformance.conftest import unique

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "firestore"])
def metrics_store(request: pytest.FixtureRequest) -> MetricsStore:
    """Each Firestore store gets a unique collection prefix: its own empty database."""
    if request.param == "memory":
        return InMemoryMetricsStore()
    from agex.adapters.gcp.firestore_metrics import FirestoreMetricsStore

    return FirestoreMetricsStore(request.getfixturevalue("firestore_client"), prefix=unique("m") + "_")


def metrics(run_id: str, *, tenant: str = "acme", agent: str = "support", version: str = "v1",
            ended: float = 0.0, **fields: Any) -> RunMetrics:
    ended_at = T0 + timedelta(seconds=ended)
    return RunMetrics(
        run_id=run_id, tenant=tenant, agent=agent, agent_version=version, principal="user:ann",
        status="succeeded", created_at=ended_at - timedelta(seconds=30), ended_at=ended_at,
        recorded_at=ended_at + timedelta(seconds=1), expire_at=ended_at + timedelta(days=400), **fields)


def alert(alert_id: str, *, agent: str = "support", detected: float = 0.0) -> DriftAlert:
    return DriftAlert(
        alert_id=alert_id, agent=agent, version="v2", metric="tool_calls", kind="categorical", test="chi2",
        statistic=12.5, p_value=0.0004, threshold=0.001, baseline=Summary(n=200, counts={"lookup": 180, "": 20}),
        current=Summary(n=50, counts={"lookup": 20, "refund": 30}), baseline_version="v1",
        baseline_window={"id": "w1", "from": "2025-02-01T00:00:00Z", "to": "2025-02-08T00:00:00Z"},
        window={"id": "w2", "from": "2025-03-01T00:00:00Z", "to": "2025-03-01T01:00:00Z"},
        examples=[{"tenant": "acme", "run_id": "r1"}], detected_at=T0 + timedelta(seconds=detected))


def version(v: str = "v1", fingerprint: str = "sha256:aaaa", *, agent: str = "support", seen: float = 0.0,
            **parts: str) -> AgentVersion:
    return AgentVersion(agent=agent, version=v, fingerprint=fingerprint,
                        parts={"instructions": "i1", "model": "m1", "tools": "t1", **parts},
                        first_seen=T0 + timedelta(seconds=seen))


def ids(records: list[RunMetrics]) -> list[str]:
    return [r.run_id for r in records]


# --- runs' metrics ---------------------------------------------------------------------------------------


def test_a_record_is_written_once(metrics_store: MetricsStore) -> None:
    first = metrics("r1", steps=3, cost_usd=0.25, watched={"issue_refund.amount_usd": [12.5, 40.0]},
                    models={"gemini-2.5-flash": ModelUsage(calls=3, input_tokens=900, cost_usd=0.25)},
                    tool_calls={"lookup_order": 2}, guard_verdicts={"pii:redact": 1}, scores={"helpful": 0.8})
    assert metrics_store.put_run_metrics(first) is True
    assert metrics_store.put_run_metrics(metrics("r1", steps=9, recorded_by="collector")) is False
    stored = metrics_store.query_run_metrics(ended_from=T0, ended_to=T0 + timedelta(seconds=1))
    assert stored == [first]
    assert stored[0].ended_at.tzinfo is not None and stored[0].ended_at.utcoffset() == timedelta(0)
    # the same run id in another tenant is another run
    assert metrics_store.put_run_metrics(metrics("r1", tenant="globex")) is True


def test_recorded(metrics_store: MetricsStore) -> None:
    for run_id, tenant in [("r1", "acme"), ("r2", "acme"), ("r1", "globex")]:
        metrics_store.put_run_metrics(metrics(run_id, tenant=tenant))
    asked = [("acme", "r1"), ("acme", "r2"), ("acme", "r3"), ("globex", "r2"), ("globex", "r1"),
             ("acme", "r1"), ("acme", "a/b"), ("", "r1")]
    assert metrics_store.recorded(asked) == {("acme", "r1"), ("acme", "r2"), ("globex", "r1")}
    assert metrics_store.recorded([]) == set()
    assert metrics_store.recorded(iter([("acme", "r2")])) == {("acme", "r2")}


def test_query_filters_bounds_order_and_limit(metrics_store: MetricsStore) -> None:
    rows = [
        metrics("a1", ended=10), metrics("a2", ended=30, version="v2"), metrics("a3", ended=20),
        metrics("b1", tenant="globex", ended=15), metrics("b2", tenant="globex", ended=25, version="v2"),
        metrics("c1", agent="billing", ended=12), metrics("early", ended=-1), metrics("late", ended=40),
    ]
    for r in rows:
        assert metrics_store.put_run_metrics(r)
    span: dict[str, Any] = {"ended_from": T0, "ended_to": T0 + timedelta(seconds=40)}  # "late" ends at `to`

    def q(**kw: Any) -> list[str]:
        return ids(metrics_store.query_run_metrics(**{**span, **kw}))

    assert q() == ["a1", "c1", "b1", "a3", "b2", "a2"]
    assert q(tenant="acme") == ["a1", "c1", "a3", "a2"]
    assert q(tenant="globex") == ["b1", "b2"]
    assert q(tenant="initech") == []
    assert q(agent="support") == ["a1", "b1", "a3", "b2", "a2"]
    assert q(agent="support", version="v2") == ["b2", "a2"]
    assert q(agent="support", version="v2", tenant="acme") == ["a2"]
    assert q(agent="support", tenant="globex", version="v1") == ["b1"]
    assert q(agent="billing") == ["c1"]
    assert q(agent="support", limit=2) == ["a1", "b1"]
    assert q(limit=0) == []
    assert ids(metrics_store.query_run_metrics(ended_from=T0 - timedelta(seconds=1), ended_to=T0)) == ["early"]
    assert ids(metrics_store.query_run_metrics(ended_from=T0 + timedelta(seconds=40),
                                               ended_to=T0 + timedelta(seconds=41))) == ["late"]
    # bounds in another time zone mean the same instants
    plus2 = timezone(timedelta(hours=2))
    assert ids(metrics_store.query_run_metrics(ended_from=(T0 + timedelta(seconds=20)).astimezone(plus2),
                                               ended_to=(T0 + timedelta(seconds=26)).astimezone(plus2))) == ["a3", "b2"]
    with pytest.raises(ValueError):
        metrics_store.query_run_metrics(**span, version="v1")


def test_equal_end_times_are_ordered_by_tenant_then_run(metrics_store: MetricsStore) -> None:
    for run_id, tenant in [("r2", "b"), ("r1", "b"), ("r9", "a")]:
        metrics_store.put_run_metrics(metrics(run_id, tenant=tenant, ended=5))
    found = metrics_store.query_run_metrics(ended_from=T0, ended_to=T0 + timedelta(seconds=10))
    assert [(r.tenant, r.run_id) for r in found] == [("a", "r9"), ("b", "r1"), ("b", "r2")]


# --- agent versions --------------------------------------------------------------------------------------


def test_version_registered_once_and_mismatches_noted(metrics_store: MetricsStore) -> None:
    first = version("v1", "sha256:aaaa")
    assert metrics_store.register_version(first) == first
    # the same fingerprint seen later: nothing changes, the first sighting stands
    assert metrics_store.register_version(version("v1", "sha256:aaaa", seen=60)) == first

    changed = metrics_store.register_version(version("v1", "sha256:bbbb", seen=120, model="m2", tools="t2"))
    assert changed.fingerprint == "sha256:aaaa" and changed.first_seen == first.first_seen
    assert changed.mismatches == [{"fingerprint": "sha256:bbbb", "seen_at": T0 + timedelta(seconds=120),
                                   "changed": ["model", "tools"]}]
    # noted once per fingerprint
    assert metrics_store.register_version(version("v1", "sha256:bbbb", seen=180, model="m2", tools="t2")) == changed
    assert metrics_store.register_version(version("v1", "sha256:aaaa", seen=240)) == changed

    for i in range(MAX_MISMATCHES + 5):
        stored = metrics_store.register_version(version("v1", f"sha256:c{i:03d}", seen=300 + i))
    assert len(stored.mismatches) == MAX_MISMATCHES
    assert [m["fingerprint"] for m in stored.mismatches][:2] == ["sha256:bbbb", "sha256:c000"]
    assert metrics_store.list_versions("support") == [stored]


def test_list_versions_in_order_first_seen(metrics_store: MetricsStore) -> None:
    metrics_store.register_version(version("v10", seen=30))
    metrics_store.register_version(version("v2", seen=10))
    metrics_store.register_version(version("v3", seen=20))
    metrics_store.register_version(version("v1", agent="billing"))
    assert [v.version for v in metrics_store.list_versions("support")] == ["v2", "v3", "v10"]
    assert [v.version for v in metrics_store.list_versions("billing")] == ["v1"]
    assert metrics_store.list_versions("nobody") == []


# --- drift alerts ----------------------------------------------------------------------------------------


def test_alert_claims(metrics_store: MetricsStore) -> None:
    a = alert("al-1")
    assert metrics_store.claim_alert(a, "fn-1", T0) is AlertClaim.created
    assert metrics_store.claim_alert(a, "fn-2", T0 + timedelta(seconds=5)) is AlertClaim.held
    assert metrics_store.claim_alert(a, "fn-1", T0 + timedelta(seconds=5)) is AlertClaim.held
    assert metrics_store.claim_alert(a, "fn-2", T0 + timedelta(seconds=200), hold_s=300) is AlertClaim.held
    # fn-1 died unpublished: its claim lapses
    assert metrics_store.claim_alert(a, "fn-2", T0 + timedelta(seconds=130)) is AlertClaim.reclaimed
    # the reclaim is a claim of its own, held for hold_s from then
    assert metrics_store.claim_alert(a, "fn-3", T0 + timedelta(seconds=200)) is AlertClaim.held
    assert metrics_store.claim_alert(a, "fn-3", T0 + timedelta(seconds=260), hold_s=60) is AlertClaim.reclaimed
    [stored] = metrics_store.list_alerts()
    assert stored.alert == a and stored.published_at is None

    metrics_store.mark_published("al-1", "fn-3", T0 + timedelta(seconds=261))
    for owner in ("fn-1", "fn-3", "fn-4"):
        assert metrics_store.claim_alert(a, owner, T0 + timedelta(days=1)) is AlertClaim.published
    # idempotent: a late mark (the first owner did publish before dying) keeps the first time
    metrics_store.mark_published("al-1", "fn-1", T0 + timedelta(seconds=500))
    [stored] = metrics_store.list_alerts()
    assert stored.published_at == T0 + timedelta(seconds=261)

    with pytest.raises(NotFound):
        metrics_store.mark_published("never-claimed", "fn-1", T0)


def test_a_lapsed_claims_owner_may_still_mark_it_published(metrics_store: MetricsStore) -> None:
    a = alert("al-2")
    assert metrics_store.claim_alert(a, "fn-1", T0) is AlertClaim.created
    assert metrics_store.claim_alert(a, "fn-2", T0 + timedelta(seconds=121)) is AlertClaim.reclaimed
    metrics_store.mark_published("al-2", "fn-1", T0 + timedelta(seconds=122))  # it did go out
    assert metrics_store.claim_alert(a, "fn-2", T0 + timedelta(seconds=123)) is AlertClaim.published


def claim_together(store: MetricsStore, a: DriftAlert, n: int, now: datetime = T0) -> list[AlertClaim]:
    """``n`` threads claim ``a`` at once (released by a barrier); their answers."""
    barrier = threading.Barrier(n)
    results: list[AlertClaim] = []
    errors: list[BaseException] = []

    def claim(owner: str) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(store.claim_alert(a, owner, now))
        except BaseException as e:  # surfaced below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=claim, args=(f"fn-{i}",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    return results


def test_concurrent_claims_one_creates(metrics_store: MetricsStore) -> None:
    for i in range(3):
        results = claim_together(metrics_store, alert(f"race-{i}"), 4)
        assert sorted(results) == sorted([AlertClaim.created] + [AlertClaim.held] * 3)
        # its claim lapsed: again exactly one takes it over
        results = claim_together(metrics_store, alert(f"race-{i}"), 4, now=T0 + timedelta(seconds=121))
        assert sorted(results) == sorted([AlertClaim.reclaimed] + [AlertClaim.held] * 3)


def test_list_alerts_newest_first(metrics_store: MetricsStore) -> None:
    for alert_id, agent, detected in [("x1", "support", 10), ("x2", "billing", 20), ("x3", "support", 30),
                                      ("x4", "support", 5)]:
        assert metrics_store.claim_alert(alert(alert_id, agent=agent, detected=detected), "fn", T0) is AlertClaim.created
    metrics_store.mark_published("x3", "fn", T0 + timedelta(seconds=31))

    def listed(**kw: Any) -> list[str]:
        return [s.alert.alert_id for s in metrics_store.list_alerts(**kw)]

    assert listed() == ["x3", "x2", "x1", "x4"]
    assert listed(agent="support") == ["x3", "x1", "x4"]
    assert listed(agent="support", since=T0 + timedelta(seconds=10)) == ["x3", "x1"]
    assert listed(since=T0 + timedelta(seconds=11)) == ["x3", "x2"]
    assert listed(limit=2) == ["x3", "x2"]
    assert listed(agent="nobody") == []
    published = {s.alert.alert_id: s.published_at for s in metrics_store.list_alerts()}
    assert published == {"x1": None, "x2": None, "x3": T0 + timedelta(seconds=31), "x4": None}


# --- state -----------------------------------------------------------------------------------------------


def test_state(metrics_store: MetricsStore) -> None:
    assert metrics_store.get_state("drift") is None
    value = {"cursor": T0, "windows": {"support~v2": {"checks": 3, "alerted": ["tool_calls"]}},
             "seen": [1, 2.5, "x", None, True]}
    metrics_store.put_state("drift", value)
    assert metrics_store.get_state("drift") == value
    metrics_store.put_state("drift", {"cursor": T0 + timedelta(hours=1)})
    assert metrics_store.get_state("drift") == {"cursor": T0 + timedelta(hours=1)}
    assert metrics_store.get_state("other") is None


# --- evaluation results -----------------------------------------------------------------------------------


def evaluation(eval_id: str, *, agent: str = "support", v: str = "v2", accepted: bool = True,
               at: float = 0.0) -> dict[str, Any]:
    return {"eval_id": eval_id, "agent": agent, "version": v, "accepted": accepted,
            "created_at": T0 + timedelta(seconds=at), "baseline_version": "v1",
            "metrics": {"cost_usd": {"p_value": 0.2, "ok": True}}, "reasons": []}


def test_evals(metrics_store: MetricsStore) -> None:
    rows = [evaluation("e1", at=10), evaluation("e2", at=20, accepted=False), evaluation("e3", at=30, v="v3"),
            evaluation("e4", at=40, v="v3", accepted=False), evaluation("e5", at=50, agent="billing")]
    for r in rows:
        metrics_store.put_eval("acme", r)
    metrics_store.put_eval("globex", evaluation("g1", at=60))

    def listed(tenant: str = "acme", agent: str = "support", **kw: Any) -> list[str]:
        return [r["eval_id"] for r in metrics_store.list_evals(tenant, agent, **kw)]

    assert metrics_store.list_evals("acme", "support", limit=1) == [rows[3]]
    assert listed() == ["e4", "e3", "e2", "e1"]
    assert listed(version="v2") == ["e2", "e1"]
    assert listed(accepted=True) == ["e3", "e1"]
    assert listed(accepted=False, version="v3") == ["e4"]
    assert listed(limit=2) == ["e4", "e3"]
    assert listed(agent="billing") == ["e5"]
    assert listed(tenant="globex") == ["g1"]
    assert listed(tenant="initech") == []

    # a result is free-form JSON: arrays in arrays and any keys come back as they went in
    odd = {**evaluation("e6", at=70, agent="odd"), "summary": {"\u00e9 x": [True, [""]], "__x__": {"0/0": []}},
           "cases": [[1, [2, [3]]], {"k": None}]}
    metrics_store.put_eval("acme", odd)
    assert metrics_store.list_evals("acme", "odd") == [odd]

    replaced = {**evaluation("e1", at=10), "accepted": False}
    metrics_store.put_eval("acme", replaced)
    assert listed(accepted=False) == ["e4", "e2", "e1"]
    assert metrics_store.list_evals("acme", "support", version="v2")[1] == replaced

    with pytest.raises(ValueError):
        metrics_store.put_eval("acme", {"eval_id": "bad", "agent": "support", "version": "v1"})
