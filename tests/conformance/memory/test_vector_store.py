"""Conformance of VectorStore implementations: scopes and tenants, ranking, filters, validity, erasure, paging."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from agex.core.errors import ConfigurationError, Conflict, DocumentTooLarge, NotFound, RequestError
from agex.core.memory import MemoryKind, MemorySource, MemoryStatus, Scope, visible_scopes
from agex.ports.memory import MemoryFilter, ScoredRecord, VectorStore

from .conftest import DIMS, MODEL, T0, at, record, source, vec


def ids(results: list[ScoredRecord]) -> list[str]:
    return [r.record.id for r in results]


def test_upsert_then_get_round_trips_every_field(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, agent="support", user="alice")
    full = record(scope, "m1", vec(0.25, -1.5, 3, 0, 0, 0, 0, 1e-3), text="Alice prefers email « é »",
                  kind=MemoryKind.preference, confidence=0.75,
                  source=MemorySource(run_id="run_9", thread_id="thr_2", events=[5, 7, 9], user="alice",
                                      trusted=False),
                  status=MemoryStatus.flagged, valid_from=at(-60), valid_to=at(30),
                  metadata={"topic": "contact", "priority": 2, "weight": 0.5, "verified": True},
                  expire_at=at(60 * 24 * 365), embedding_model="text-embedding-005")
    vector_store.upsert([full])
    assert vector_store.get(tenant, "m1") == full
    assert vector_store.get(tenant, "missing") is None
    assert vector_store.get("other-tenant", "m1") is None


def test_search_ranks_by_cosine_with_exact_scores(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    vector_store.upsert([
        record(scope, "same", vec(2)),            # cos 1
        record(scope, "close", vec(3, 1)),        # 3/sqrt(10)
        record(scope, "diagonal", vec(1, 1)),     # 1/sqrt(2)
        record(scope, "orthogonal", vec(0, 1)),   # 0
        record(scope, "opposite", vec(-1)),       # -1
    ])
    found = vector_store.search([scope], vec(1), k=10)
    assert ids(found) == ["same", "close", "diagonal", "orthogonal", "opposite"]
    assert [r.score for r in found] == pytest.approx([1, 3 / math.sqrt(10), 1 / math.sqrt(2), 0, -1], abs=1e-9)
    assert ids(vector_store.search([scope], vec(1), k=2)) == ["same", "close"]
    assert ids(vector_store.search([scope], vec(0, 1), k=1)) == ["orthogonal"]


def test_search_arguments_are_checked(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    vector_store.upsert([record(scope, "m", vec(1))])
    for k in (0, 1001):
        with pytest.raises(ValueError, match="k must be"):
            vector_store.search([scope], vec(1), k=k)
    with pytest.raises(ValueError, match="zeros"):
        vector_store.search([scope], vec(), k=1)
    with pytest.raises(ValueError, match="not both"):
        vector_store.search([scope], vec(1), include_superseded=True, at=T0)
    with pytest.raises(ValueError, match="scopes"):
        vector_store.search([], vec(1))


def test_dimension_mismatch_is_refused(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    assert vector_store.dimensions == DIMS
    good = record(scope, "good", vec(1))
    short = record(scope, "short", [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ConfigurationError, match="4-dimension"):
        vector_store.upsert([good, short])
    assert vector_store.get(tenant, "good") is None  # all or none
    vector_store.upsert([good])
    with pytest.raises(ConfigurationError, match="query vector has 4 dimensions"):
        vector_store.search([scope], [1.0, 0.0, 0.0, 0.0])


def test_a_store_for_one_model_refuses_another(model_vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    assert model_vector_store.embedding_model == MODEL
    with pytest.raises(ConfigurationError, match="not comparable"):
        model_vector_store.upsert([record(scope, "ours", vec(1)), record(scope, "theirs", vec(1), embedding_model="x")])
    assert model_vector_store.get(tenant, "ours") is None
    model_vector_store.upsert([record(scope, "ours", vec(1))])
    assert ids(model_vector_store.search([scope], vec(1))) == ["ours"]


def test_oversized_record_is_refused_and_nothing_written(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    big = record(scope, "big", vec(1), text="x" * 50_000)
    with pytest.raises(DocumentTooLarge, match="limit of a memory"):
        vector_store.upsert([record(scope, "small", vec(1)), big])
    assert vector_store.get(tenant, "small") is None
    assert vector_store.get(tenant, "big") is None


def test_upsert_is_idempotent_and_replaces_by_id(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, agent="a")
    first = record(scope, "m", vec(1))
    vector_store.upsert([first])
    vector_store.upsert([first])
    assert ids(vector_store.search([scope], vec(1))) == ["m"]
    assert vector_store.list_records(scope).records == [first]
    changed = first.model_copy(update={"text": "corrected", "vector": vec(0, 1)})
    vector_store.upsert([changed])
    assert vector_store.get(tenant, "m") == changed
    assert vector_store.search([scope], vec(0, 1))[0].score == pytest.approx(1.0)


def test_search_reads_exactly_the_scopes_named(vector_store: VectorStore, tenant: str) -> None:
    mine = visible_scopes(tenant, "support", "alice")
    assert mine == [Scope(tenant=tenant, agent="support", user="alice"), Scope(tenant=tenant, user="alice"),
                    Scope(tenant=tenant, agent="support"), Scope(tenant=tenant)]
    others = [Scope(tenant=tenant, agent="support", user="bob"), Scope(tenant=tenant, agent="sales", user="alice"),
              Scope(tenant=tenant, agent="sales"), Scope(tenant=tenant, user="bob")]
    vector_store.upsert([record(s, f"mine{i}", vec(1, i)) for i, s in enumerate(mine)]
                        + [record(s, f"other{i}", vec(1, i)) for i, s in enumerate(others)])
    assert ids(vector_store.search(mine, vec(1), k=10)) == ["mine0", "mine1", "mine2", "mine3"]
    assert ids(vector_store.search([mine[1]], vec(1), k=10)) == ["mine1"]
    assert ids(vector_store.search([mine[3]], vec(1), k=10)) == ["mine3"]  # the tenant's: not everything in it


def test_nothing_crosses_tenants(vector_store: VectorStore, tenant: str) -> None:
    other = tenant + "-other"
    vector_store.upsert([record(Scope(tenant=tenant), "same-id", vec(1), text="ours")])
    vector_store.upsert([record(Scope(tenant=other), "same-id", vec(1), text="theirs")])
    assert [r.record.text for r in vector_store.search([Scope(tenant=tenant)], vec(1))] == ["ours"]
    theirs = vector_store.get(other, "same-id")
    assert theirs is not None and theirs.text == "theirs"
    with pytest.raises(ValueError, match="tenant"):
        vector_store.search([Scope(tenant=tenant), Scope(tenant=other)], vec(1))
    assert vector_store.delete(Scope(tenant=other), ["same-id"]) == 1
    assert vector_store.get(tenant, "same-id") is not None


def test_filters_are_equalities_on_kind_status_model_and_metadata(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    vector_store.upsert([
        record(scope, "fact", vec(1, 0.1), metadata={"topic": "billing", "n": 1}),
        record(scope, "pref", vec(1, 0.2), kind=MemoryKind.preference, metadata={"topic": "billing", "n": 1.0}),
        record(scope, "flag", vec(1, 0.3), status=MemoryStatus.flagged, metadata={"n": True}),
        record(scope, "other-model", vec(1, 0.4), embedding_model="other", metadata={"topic": "shipping"}),
    ])

    def search(**filters: Any) -> list[str]:
        return ids(vector_store.search([scope], vec(1), k=10, filters=MemoryFilter(**filters)))

    assert search() == ["fact", "pref", "flag", "other-model"]
    assert search(kind="preference") == ["pref"]
    assert search(status="active") == ["fact", "pref", "other-model"]
    assert search(status="flagged") == ["flag"]
    assert search(embedding_model="other") == ["other-model"]
    assert search(metadata={"topic": "billing"}) == ["fact", "pref"]
    assert search(metadata={"n": 1}) == ["fact", "pref"]  # 1 == 1.0, but not True
    assert search(metadata={"n": True}) == ["flag"]
    assert search(metadata={"topic": "billing", "n": 1}, kind="fact") == ["fact"]
    assert search(metadata={"absent": "x"}) == []


def test_a_selective_filter_still_finds_k_beyond_the_nearest(vector_store: VectorStore, tenant: str) -> None:
    """Sixty nearer records fail the filter: a backend that filters after its search must look further."""
    scope = Scope(tenant=tenant)
    near = [record(scope, f"note{i:02d}", vec(1, i / 1000), kind=MemoryKind.note) for i in range(60)]
    for start in range(0, 60, 30):
        vector_store.upsert(near[start:start + 30])
    vector_store.upsert([record(scope, "far-fact", vec(0, 1, 1)), record(scope, "farther-fact", vec(0, 0, 1))])
    found = vector_store.search([scope], vec(1), k=2, filters=MemoryFilter(kind=MemoryKind.fact))
    assert ids(found) == ["far-fact", "farther-fact"]
    assert ids(vector_store.search([scope], vec(1), k=3)) == ["note00", "note01", "note02"]


def test_supersede_ends_validity_and_time_travel_sees_it(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, user="alice")
    old = record(scope, "lives-paris", vec(1, 0.1), text="Alice lives in Paris", valid_from=at(0))
    new = record(scope, "lives-lyon", vec(1, 0.2), text="Alice lives in Lyon", created_at=at(10), valid_from=at(10))
    vector_store.upsert([old, new])
    stored = vector_store.supersede(tenant, "lives-paris", by="lives-lyon", at=at(10))
    assert (stored.status, stored.superseded_by, stored.valid_to) == (MemoryStatus.superseded, "lives-lyon", at(10))
    assert vector_store.get(tenant, "lives-paris") == stored

    assert ids(vector_store.search([scope], vec(1))) == ["lives-lyon"]
    assert ids(vector_store.search([scope], vec(1), include_superseded=True)) == ["lives-paris", "lives-lyon"]
    assert ids(vector_store.search([scope], vec(1), at=at(5))) == ["lives-paris"]
    assert ids(vector_store.search([scope], vec(1), at=at(10))) == ["lives-lyon"]  # valid_to is exclusive
    assert ids(vector_store.search([scope], vec(1), at=at(-1))) == []
    with_status = MemoryFilter(status=MemoryStatus.superseded)
    assert ids(vector_store.search([scope], vec(1), at=at(5), filters=with_status)) == ["lives-paris"]


def test_supersede_is_idempotent_and_refuses_contradictions(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    vector_store.upsert([record(scope, "a", vec(1), valid_from=at(5)), record(scope, "ended", vec(1), valid_to=at(1))])
    first = vector_store.supersede(tenant, "a", by="b", at=at(10))
    assert vector_store.supersede(tenant, "a", by="b", at=at(20)) == first  # a redelivery: nothing changes
    with pytest.raises(Conflict, match="superseded by b"):
        vector_store.supersede(tenant, "a", by="c", at=at(10))
    with pytest.raises(Conflict, match="stopped being valid"):
        vector_store.supersede(tenant, "ended", by="b", at=at(10))
    with pytest.raises(NotFound):
        vector_store.supersede(tenant, "missing", by="b", at=at(10))
    vector_store.upsert([record(scope, "late", vec(1), valid_from=at(30))])
    with pytest.raises(ValueError, match="valid from"):
        vector_store.supersede(tenant, "late", by="b", at=at(10))
    late = vector_store.get(tenant, "late")
    assert late is not None and late.status is MemoryStatus.active


def test_a_retried_upsert_does_not_undo_a_supersession(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    original = record(scope, "a", vec(1))
    vector_store.upsert([original])
    superseded = vector_store.supersede(tenant, "a", by="b", at=at(10))
    vector_store.upsert([original])
    assert vector_store.get(tenant, "a") == superseded
    assert vector_store.search([scope], vec(1)) == []


def test_delete_removes_only_the_scopes_records(vector_store: VectorStore, tenant: str) -> None:
    alice, bob = Scope(tenant=tenant, user="alice"), Scope(tenant=tenant, user="bob")
    vector_store.upsert([record(alice, "a1", vec(1)), record(alice, "a2", vec(1, 1)), record(bob, "b1", vec(1))])
    assert vector_store.delete(alice, ["a1", "b1", "missing", "a1"]) == 1
    assert vector_store.get(tenant, "a1") is None
    assert vector_store.get(tenant, "b1") is not None  # another scope's: left alone
    assert ids(vector_store.search([alice, bob], vec(1))) == ["b1", "a2"]
    assert vector_store.delete(alice, []) == 0


def test_forget_user_erases_them_in_every_agent_scope(vector_store: VectorStore, tenant: str) -> None:
    alice = [Scope(tenant=tenant, agent="support", user="alice"), Scope(tenant=tenant, agent="sales", user="alice"),
             Scope(tenant=tenant, user="alice")]
    kept = [Scope(tenant=tenant, agent="support", user="bob"), Scope(tenant=tenant, agent="support")]
    vector_store.upsert([record(s, f"alice{i}", vec(1)) for i, s in enumerate(alice)]
                        + [record(s, f"kept{i}", vec(1)) for i, s in enumerate(kept)]
                        + [record(kept[1], "learned-from-alice", vec(1), source=source("alice", trusted=False))])
    vector_store.upsert([record(Scope(tenant=tenant + "-other", user="alice"), "elsewhere", vec(1))])
    assert vector_store.forget_user(tenant, "alice") == 4
    assert ids(vector_store.search([*alice, *kept], vec(1))) == ["kept0", "kept1"]
    assert vector_store.get(tenant + "-other", "elsewhere") is not None  # another tenant's alice
    assert vector_store.forget_user(tenant, "alice") == 0


def test_list_records_pages_newest_first_through_everything(vector_store: VectorStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, agent="support", user="alice")
    made = [record(scope, f"m{i}", vec(1, i), created_at=T0 + timedelta(seconds=i // 2)) for i in range(7)]
    vector_store.upsert(made)
    vector_store.upsert([record(Scope(tenant=tenant, user="alice"), "elsewhere", vec(1))])
    vector_store.supersede(tenant, "m0", by="m1", at=at(1))
    pages, cursor = [], None
    while True:
        page = vector_store.list_records(scope, page_size=3, cursor=cursor)
        pages.append([r.id for r in page.records])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"]]  # same created_at: by id, descending
    assert vector_store.list_records(scope, page_size=7).next_cursor is None
    assert vector_store.list_records(scope, page_size=1).records[0] == made[6]
    with pytest.raises(RequestError, match="cursor"):
        vector_store.list_records(scope, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="page_size"):
        vector_store.list_records(scope, page_size=0)
    assert vector_store.list_records(Scope(tenant=tenant, agent="nobody")).records == []


def test_about_finds_a_scopes_current_records_of_one_key_newest_first(vector_store: VectorStore, tenant: str) -> None:
    alice = Scope(tenant=tenant, agent="support", user="alice")
    bob = Scope(tenant=tenant, agent="support", user="bob")
    vector_store.upsert([
        record(alice, "old", vec(1), metadata={"key": "contact_channel", "value": "phone"}),
        record(alice, "new", vec(0, 1), metadata={"key": "contact_channel", "value": "email"}, created_at=at(5),
               valid_from=at(5)),
        record(alice, "flag", vec(0, 0, 1), metadata={"key": "contact_channel", "value": "fax"}, created_at=at(9),
               valid_from=at(9), status=MemoryStatus.flagged),
        record(alice, "other", vec(0, 0, 0, 1), metadata={"key": "address"}),
        record(bob, "bobs", vec(1), metadata={"key": "contact_channel"}),
    ])
    vector_store.supersede(tenant, "old", by="new", at=at(5))
    assert [r.id for r in vector_store.about(alice, "contact_channel")] == ["flag", "new"]
    assert [r.id for r in vector_store.about(alice, "contact_channel", limit=1)] == ["flag"]
    assert [r.id for r in vector_store.about(bob, "contact_channel")] == ["bobs"]
    assert vector_store.about(alice, "nothing") == []
    assert vector_store.about(Scope(tenant="other-tenant", agent="support", user="alice"), "contact_channel") == []
