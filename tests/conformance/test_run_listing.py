"""Conformance of ``CheckpointStore.list_runs``: a tenant's runs filtered by agent, status, principal and
creation time, newest first, in pages that neither skip nor repeat a run; never another tenant's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agex.core.run import RunHead, RunStatus
from agex.ports.checkpoint_store import CheckpointStore, Mutation, RunFilter

from .conftest import CHECKPOINT_STORES, checkpoint_store, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(params=CHECKPOINT_STORES)
def store(request: pytest.FixtureRequest) -> CheckpointStore:
    return checkpoint_store(request)


def _run(store: CheckpointStore, tenant: str, i: int, *, agent: str = "support", principal: str = "alice",
         status: RunStatus = RunStatus.queued, at: datetime | None = None) -> RunHead:
    created = at or T0 + timedelta(minutes=i)
    head = RunHead(run_id=f"run_{i:04d}", tenant=tenant, agent=agent, agent_version="1", principal=principal,
                   input="hi", created_at=created, updated_at=created, expire_at=created + timedelta(days=7))
    store.create_run(head, [])
    if status != RunStatus.queued:
        store.update_run(tenant, head.run_id, lambda h: Mutation(h.model_copy(update={"status": status})))
    return head


def _ids(runs: list[RunHead]) -> list[str]:
    return [r.run_id for r in runs]


def test_filters_and_newest_first(store: CheckpointStore) -> None:
    tenant, other = unique("acme"), unique("globex")
    _run(store, tenant, 1)
    _run(store, tenant, 2, agent="billing")
    _run(store, tenant, 3, principal="bob", status=RunStatus.succeeded)
    _run(store, tenant, 4, status=RunStatus.failed)
    _run(store, other, 5)
    assert _ids(store.list_runs(tenant, RunFilter())) == ["run_0004", "run_0003", "run_0002", "run_0001"]
    assert _ids(store.list_runs(tenant, RunFilter(agent="support"))) == ["run_0004", "run_0003", "run_0001"]
    assert _ids(store.list_runs(tenant, RunFilter(status=RunStatus.failed))) == ["run_0004"]
    assert _ids(store.list_runs(tenant, RunFilter(principal="bob"))) == ["run_0003"]
    assert _ids(store.list_runs(tenant, RunFilter(agent="support", principal="alice"))) == ["run_0004", "run_0001"]
    assert _ids(store.list_runs(tenant, RunFilter(agent="support", status=RunStatus.succeeded,
                                                  principal="bob"))) == ["run_0003"]
    window = RunFilter(created_after=T0 + timedelta(minutes=2), created_before=T0 + timedelta(minutes=4))
    assert _ids(store.list_runs(tenant, window)) == ["run_0003", "run_0002"]
    assert _ids(store.list_runs(other, RunFilter())) == ["run_0005"]
    assert store.list_runs(unique("nobody"), RunFilter()) == []


def test_pages_neither_skip_nor_repeat_even_with_equal_creation_times(store: CheckpointStore) -> None:
    tenant = unique("acme")
    for i in range(7):
        _run(store, tenant, i, at=T0 if i % 2 else T0 + timedelta(seconds=i))
    seen: list[str] = []
    after = None
    while True:
        page = store.list_runs(tenant, RunFilter(), limit=3, after=after)
        seen += _ids(page)
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].run_id)
    assert sorted(seen) == [f"run_{i:04d}" for i in range(7)] and len(seen) == 7
    everything = _ids(store.list_runs(tenant, RunFilter(), limit=100))
    assert seen == everything


def test_unfinished_versions_count_runs_that_have_not_ended(store: CheckpointStore) -> None:
    tenant, other, agent = unique("acme"), unique("globex"), unique("support")
    for i, (version, status) in enumerate([("1", RunStatus.waiting_approval), ("1", RunStatus.running),
                                           ("2", RunStatus.queued), ("1", RunStatus.succeeded),
                                           ("3", RunStatus.cancelled)]):
        head = _run(store, tenant, 100 + i, agent=agent, status=status)
        store.update_run(tenant, head.run_id, lambda h, v=version: Mutation(h.model_copy(update={"agent_version": v})))
    _run(store, other, 200, agent=agent, status=RunStatus.waiting_timer)
    _run(store, tenant, 201, agent=unique("billing"))
    assert store.unfinished_versions(tenant=tenant, agent=agent) == {(agent, "1"): 2, (agent, "2"): 1}
    everywhere = store.unfinished_versions(agent=agent)
    assert everywhere == {(agent, "1"): 3, (agent, "2"): 1}
    assert (agent, "1") in store.unfinished_versions() and store.unfinished_versions(tenant="no/such") == {}
