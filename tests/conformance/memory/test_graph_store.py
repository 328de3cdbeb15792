"""Conformance of GraphStore implementations: entities, relations over time, the neighbourhood walk, erasure."""

from __future__ import annotations

import pytest

from agex.core.errors import NotFound
from agex.core.memory import MemorySource, Scope
from agex.ports.memory import GraphStore, Neighbourhood

from .conftest import at, entity, relation, source


def names(found: Neighbourhood) -> tuple[list[str], list[str]]:
    return [e.id for e in found.entities], [r.id for r in found.relations]


def small_world(graph: GraphStore, scope: Scope) -> None:
    """alice works_at acme, knows bob; bob lives_in lyon; acme is located_in paris; carol manages alice."""
    for name in ("alice", "acme", "bob", "lyon", "paris", "carol"):
        graph.upsert_entity(entity(scope, name))
    for rid, s, p, o in (("r1", "alice", "works_at", "acme"), ("r2", "alice", "knows", "bob"),
                         ("r3", "bob", "lives_in", "lyon"), ("r4", "acme", "located_in", "paris"),
                         ("r5", "carol", "manages", "alice")):
        graph.add_relation(relation(scope, rid, s, p, o))


def test_entities_round_trip_and_upsert_replaces(graph_store: GraphStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, agent="support", user="alice")
    full = entity(scope, "acme", name="ACME Corp", type="organization", aliases=["Acme", "ACME Inc."],
                  source=MemorySource(run_id="run_3", thread_id=None, events=[12], user="alice", trusted=False),
                  confidence=0.5, metadata={"country": "FR", "size": 120, "listed": False},
                  expire_at=at(60 * 24 * 30))
    assert graph_store.upsert_entity(full) == full
    assert graph_store.upsert_entity(full) == full
    assert graph_store.get_entity(tenant, "acme") == full
    renamed = full.model_copy(update={"name": "ACME", "updated_at": at(5)})
    graph_store.upsert_entity(renamed)
    assert graph_store.get_entity(tenant, "acme") == renamed
    assert graph_store.get_entity(tenant + "-other", "acme") is None
    assert graph_store.get_entity(tenant, "missing") is None


def test_relations_keep_provenance_and_need_their_entities(graph_store: GraphStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, user="alice")
    graph_store.upsert_entity(entity(scope, "alice"))
    graph_store.upsert_entity(entity(scope, "acme"))
    graph_store.upsert_entity(entity(Scope(tenant=tenant + "-other"), "bob"))
    r = relation(scope, "r1", "alice", "works_at", "acme", confidence=0.8, metadata={"role": "engineer"},
                 source=MemorySource(run_id="run_7", thread_id="thr_7", events=[2, 3], user="alice", trusted=True))
    assert graph_store.add_relation(r) == r
    assert graph_store.add_relation(r) == r  # idempotent
    found = graph_store.neighbours([scope], "alice")
    assert found.relations == [r]
    with pytest.raises(NotFound, match="bob"):
        graph_store.add_relation(relation(scope, "r2", "alice", "knows", "bob"))  # bob is another tenant's
    with pytest.raises(NotFound, match="nobody"):
        graph_store.add_relation(relation(scope, "r3", "nobody", "knows", "alice"))
    assert names(graph_store.neighbours([scope], "alice")) == (["alice", "acme"], ["r1"])


def test_neighbourhood_depth_one_and_two_both_directions(graph_store: GraphStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    small_world(graph_store, scope)
    assert names(graph_store.neighbours([scope], "alice")) == (["alice", "acme", "bob", "carol"], ["r1", "r2", "r5"])
    assert names(graph_store.neighbours([scope], "alice", depth=2)) == (
        ["alice", "acme", "bob", "carol", "lyon", "paris"], ["r1", "r2", "r3", "r4", "r5"])
    assert names(graph_store.neighbours([scope], "lyon", depth=2)) == (["lyon", "alice", "bob"], ["r2", "r3"])
    found = graph_store.neighbours([scope], "alice", depth=2)
    assert found.entities[0] == entity(scope, "alice")
    with pytest.raises(ValueError, match="depth"):
        graph_store.neighbours([scope], "alice", depth=3)
    with pytest.raises(NotFound):
        graph_store.neighbours([scope], "missing")


def test_predicates_restrict_the_walk(graph_store: GraphStore, tenant: str) -> None:
    scope = Scope(tenant=tenant)
    small_world(graph_store, scope)
    assert names(graph_store.neighbours([scope], "alice", depth=2, predicates=["knows", "lives_in"])) == (
        ["alice", "bob", "lyon"], ["r2", "r3"])
    assert names(graph_store.neighbours([scope], "alice", predicates=[])) == (["alice"], [])


def test_relations_current_at_a_time(graph_store: GraphStore, tenant: str) -> None:
    scope = Scope(tenant=tenant, user="alice")
    for name in ("alice", "acme", "globex"):
        graph_store.upsert_entity(entity(scope, name))
    graph_store.add_relation(relation(scope, "old-job", "alice", "works_at", "acme", valid_from=at(0)))
    closed = graph_store.close_relation(tenant, "old-job", at(10))
    assert closed.valid_to == at(10)
    graph_store.add_relation(relation(scope, "new-job", "alice", "works_at", "globex", valid_from=at(10)))

    assert names(graph_store.neighbours([scope], "alice")) == (["alice", "globex"], ["new-job"])
    assert names(graph_store.neighbours([scope], "alice", at=at(5))) == (["alice", "acme"], ["old-job"])
    assert names(graph_store.neighbours([scope], "alice", at=at(10))) == (["alice", "globex"], ["new-job"])
    assert names(graph_store.neighbours([scope], "alice", at=at(-1))) == (["alice"], [])

    assert graph_store.close_relation(tenant, "old-job", at(20)) == closed  # the first close stands
    assert graph_store.add_relation(relation(scope, "old-job", "alice", "works_at", "acme")) == closed  # retried add
    with pytest.raises(NotFound):
        graph_store.close_relation(tenant, "missing", at(1))
    with pytest.raises(ValueError, match="valid from"):
        graph_store.close_relation(tenant, "new-job", at(5))


def test_the_walk_sees_only_the_scopes_named(graph_store: GraphStore, tenant: str) -> None:
    shared, alice, bob = Scope(tenant=tenant, agent="support"), Scope(tenant=tenant, user="alice"), \
        Scope(tenant=tenant, user="bob")
    graph_store.upsert_entity(entity(shared, "acme"))
    graph_store.upsert_entity(entity(alice, "alice"))
    graph_store.upsert_entity(entity(bob, "bob"))
    graph_store.add_relation(relation(alice, "a-works", "alice", "works_at", "acme"))
    graph_store.add_relation(relation(bob, "b-works", "bob", "works_at", "acme"))
    graph_store.add_relation(relation(shared, "s-knows", "alice", "knows", "bob"))

    assert names(graph_store.neighbours([alice, shared], "acme", depth=2)) == (["acme", "alice"], ["a-works"])
    assert names(graph_store.neighbours([shared], "acme")) == (["acme"], [])
    assert names(graph_store.neighbours([alice, bob, shared], "alice")) == (
        ["alice", "acme", "bob"], ["a-works", "s-knows"])
    with pytest.raises(NotFound):
        graph_store.neighbours([bob, shared], "alice")
    with pytest.raises(NotFound):
        graph_store.neighbours([Scope(tenant=tenant + "-other")], "acme")
    with pytest.raises(ValueError, match="tenant"):
        graph_store.neighbours([shared, Scope(tenant=tenant + "-other")], "acme")


def test_forget_user_erases_their_graph_and_what_touches_it(graph_store: GraphStore, tenant: str) -> None:
    shared = Scope(tenant=tenant, agent="support")
    alice_support, alice_sales = Scope(tenant=tenant, agent="support", user="alice"), \
        Scope(tenant=tenant, agent="sales", user="alice")
    graph_store.upsert_entity(entity(shared, "acme"))
    graph_store.upsert_entity(entity(shared, "globex"))
    graph_store.upsert_entity(entity(shared, "alices-boss", source=source("alice")))  # learned from alice
    graph_store.upsert_entity(entity(alice_support, "alice"))
    graph_store.upsert_entity(entity(alice_sales, "alice-deal"))
    graph_store.upsert_entity(entity(Scope(tenant=tenant, user="bob"), "bob"))
    graph_store.add_relation(relation(shared, "acme-globex", "acme", "partners_with", "globex"))
    graph_store.add_relation(relation(shared, "alice-acme", "alice", "works_at", "acme"))  # touches alice
    graph_store.add_relation(relation(shared, "boss-acme", "alices-boss", "works_at", "acme"))
    graph_store.add_relation(relation(shared, "bob-acme", "bob", "works_at", "acme", source=source("alice")))
    graph_store.add_relation(relation(alice_sales, "deal-globex", "alice-deal", "with", "globex"))
    graph_store.upsert_entity(entity(Scope(tenant=tenant + "-other", user="alice"), "alice"))

    assert graph_store.forget_user(tenant, "alice") == 3 + 4
    everyone = [shared, alice_support, alice_sales, Scope(tenant=tenant, user="bob")]
    assert names(graph_store.neighbours(everyone, "acme", depth=2)) == (["acme", "globex"], ["acme-globex"])
    assert graph_store.get_entity(tenant, "alice") is None
    assert graph_store.get_entity(tenant, "bob") is not None
    assert graph_store.get_entity(tenant + "-other", "alice") is not None
    assert graph_store.forget_user(tenant, "alice") == 0
    assert graph_store.get_entity(tenant, "acme") == entity(shared, "acme")
