"""Long-term memory on the local stack, through the HTTP API only: the real functions learn after each run in the
memory task (Cloud Tasks, the step function's /memory), keep memories in the Firestore emulator's vector search,
embed with the offline model, and ask the Gemini emulator both the agent's questions and the extraction
(examples/scenarios/concierge-*.yaml and memory-*.yaml; docs/memory.md).

Each test has users of its own (``metadata.user``), so they share the stack without seeing each other's memories;
the runs that do not depend on each other go at the same time, to keep the file short."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agex.cli.client import Client

from .agents import PARCEL_INJECTION
from .conftest import E2E

LEARN_TIMEOUT_S = 30.0
RECALLED_ANSWER = "I'll let you know by {}, as you asked."
UNKNOWN_ANSWER = "How would you like me to contact you: email, phone or post?"


def someone(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def start(e2e: E2E, agent: str, text: str, user: str, client: Client | None = None) -> str:
    run = (client or e2e.client).start_run(agent, text, metadata={"user": user})
    return str(run["run_id"])


def answer(e2e: E2E, run_id: str, client: Client | None = None) -> str:
    run = e2e.wait(run_id, timeout=60, client=client)  # the first runs of a fresh stack load its models
    assert run["status"] == "succeeded", run
    return str(run["result"])


def events(client: Client, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.events(run_id) if e["kind"] == kind]


def learned(e2e: E2E, run_id: str, client: Client | None = None) -> dict[str, Any]:
    """The ``memory_learned`` event's data, once the run's memory task wrote it."""
    client = client or e2e.client
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    while True:
        found = events(client, run_id, "memory_learned")
        if found:
            assert len(found) == 1, found
            return found[0]["data"]
        assert time.monotonic() < deadline, (
            f"run {run_id} learned nothing in {LEARN_TIMEOUT_S} s: {client.run(run_id)['status']}; see the step log")
        time.sleep(0.2)


def remembered(client: Client, user: str, agent: str | None = None) -> list[dict[str, Any]]:
    """GET /v1/memory: what is remembered about ``user`` in every scope (or the one of ``agent``)."""
    params = {"user": user, **({"agent": agent} if agent is not None else {})}
    answered = client.typed.request("GET", "/v1/memory", params=params)
    assert answered["user"] == user
    return [m for scope in answered["scopes"] for m in scope["memories"]]


def until(client: Client, user: str, done: Callable[[list[dict[str, Any]]], bool],
          agent: str | None = None) -> list[dict[str, Any]]:
    """What is remembered about ``user`` once ``done`` holds of it. The memory task records ``memory_learned`` on
    the run first, then keeps the facts (a redelivery finds the record and only keeps them): the memories show
    shortly after the event."""
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    while not done(found := remembered(client, user, agent)):
        assert time.monotonic() < deadline, f"what is remembered about {user} did not settle: {found}"
        time.sleep(0.2)
    return found


def kept_from(client: Client, user: str, run_id: str, agent: str | None = None) -> list[dict[str, Any]]:
    """What is remembered about ``user`` once what ``run_id`` taught is stored."""
    return until(client, user, lambda found: any(m["run_id"] == run_id for m in found), agent)


def values(memories: list[dict[str, Any]], status: str) -> list[str]:
    return sorted(m["value"] for m in memories if m["status"] == status)


def test_a_preference_stated_in_the_first_run_is_used_in_the_fifth(e2e: E2E) -> None:
    user = someone("ann")
    first = start(e2e, "concierge", "Hello! Please contact me by email from now on.", user)
    # the user goes on with other things meanwhile (both step workers busy at once: the file stays short)
    others = [start(e2e, "concierge", q, user) for q in
              ("What are your opening hours?", "Do you ship abroad?", "Can I change my password?")]
    assert answer(e2e, first) == "Noted, happy to help."
    (fact,) = learned(e2e, first)["facts"]
    assert fact["key"] == "contact_channel" and fact["value"] == "email" and fact["trusted"] is True
    kept_from(e2e.client, user, first)
    assert [answer(e2e, r) for r in others] == ["Noted, happy to help."] * 3

    fifth = start(e2e, "concierge", "How will you contact me about my refund?", user)
    # the scenario answers so only when the recalled memory was in the model's context (context_regex)
    assert answer(e2e, fifth) == RECALLED_ANSWER.format("email")
    (recalled,) = events(e2e.client, fifth, "memory_recalled")
    (memory,) = [m for m in recalled["data"]["memories"] if "contacted by email" in m["text"]]
    assert memory["trusted"] is True and memory["kind"] == "preference"

    (kept,) = remembered(e2e.client, user)
    assert (kept["key"], kept["value"], kept["status"], kept["run_id"]) == ("contact_channel", "email", "active", first)
    for run_id in others:  # each later run was learned from too, and found nothing worth keeping
        assert learned(e2e, run_id)["facts"] == []


# --- contradictions: one agent per strategy, each with a user stating one thing, then another --------------------

@dataclass
class Contradiction:
    agent: str
    user: str
    first: str
    second: str
    outcome: dict[str, Any]
    """What the second run's learning recorded (``memory_learned``)."""


STRATEGIES = {
    # strategy: (agent, first statement, second statement)
    "newest": ("concierge", "Please contact me by email.", "Please contact me by sms from now on."),
    "confidence": ("concierge-confidence", "Please contact me by email.", "Maybe contact me by sms instead."),
    "keep_both": ("concierge-keep-both", "Please contact me by email.", "Please contact me by phone from now on."),
    "ask": ("concierge-ask", "Please contact me by email.", "Please contact me by post from now on."),
}


@pytest.fixture(scope="module")
def contradictions(e2e: E2E) -> dict[str, Contradiction]:
    """Each strategy's two runs, the second started once the first was learned; the strategies side by side."""
    users = {s: someone(s.replace("_", "-")) for s in STRATEGIES}
    firsts = {s: start(e2e, agent, said, users[s]) for s, (agent, said, _) in STRATEGIES.items()}
    for s, run_id in firsts.items():
        assert [f["value"] for f in learned(e2e, run_id)["facts"]] == ["email"], s
        kept_from(e2e.client, users[s], run_id)
    seconds = {s: start(e2e, agent, said, users[s]) for s, (agent, _, said) in STRATEGIES.items()}
    outcomes = {s: learned(e2e, run_id) for s, run_id in seconds.items()}
    for s, run_id in seconds.items():
        kept_from(e2e.client, users[s], run_id)
    return {s: Contradiction(agent=STRATEGIES[s][0], user=users[s], first=firsts[s], second=seconds[s],
                            outcome=outcomes[s]) for s in STRATEGIES}


def by_value(memories: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["value"]: m for m in memories}


def test_newest_a_newer_fact_replaces_the_older_which_is_kept_as_superseded(
        e2e: E2E, contradictions: dict[str, Contradiction]) -> None:
    c = contradictions["newest"]
    # the new fact is stored, then the old one superseded
    kept = by_value(until(e2e.client, c.user, lambda found: values(found, "superseded") == ["email"], c.agent))
    assert kept["sms"]["status"] == "active" and kept["sms"]["run_id"] == c.second
    assert kept["email"]["status"] == "superseded" and kept["email"]["superseded_by"] == kept["sms"]["memory_id"]
    assert kept["email"]["valid_to"] is not None
    asked = start(e2e, c.agent, "How will you reach me next time?", c.user)
    assert answer(e2e, asked) == RECALLED_ANSWER.format("sms")


def test_confidence_the_more_confident_fact_stands(e2e: E2E, contradictions: dict[str, Contradiction]) -> None:
    c = contradictions["confidence"]
    (hedged,) = c.outcome["facts"]
    assert hedged["value"] == "sms" and hedged["confidence"] == 0.6
    kept = by_value(remembered(e2e.client, c.user, c.agent))
    assert kept["email"]["status"] == "active" and kept["email"]["confidence"] == 0.9
    # the less confident fact is kept as outvoted: superseded by the one that stands
    assert kept["sms"]["status"] == "superseded" and kept["sms"]["superseded_by"] == kept["email"]["memory_id"]


def test_keep_both_flags_both_and_recall_leaves_them_out(e2e: E2E, contradictions: dict[str, Contradiction]) -> None:
    c = contradictions["keep_both"]
    kept = remembered(e2e.client, c.user, c.agent)
    assert values(kept, "flagged") == ["email", "phone"] and values(kept, "active") == []
    asked = start(e2e, c.agent, "How do you reach me?", c.user)
    assert answer(e2e, asked) == UNKNOWN_ANSWER
    assert events(e2e.client, asked, "memory_recalled") == []


def test_ask_the_manager_settles_a_contradiction_through_an_approval(
        e2e: E2E, contradictions: dict[str, Contradiction]) -> None:
    c = contradictions["ask"]
    (approval,) = [a for a in e2e.manager.approvals("pending") if a["run_id"] == c.second]
    assert approval["kind"] == "memory" and approval["tool"] == "memory:contact_channel"
    assert approval["arguments"]["remembered"].endswith("email.") and approval["arguments"]["learned"].endswith("post.")
    # until someone decides, the remembered fact stands and the new one is held back from recall
    kept = remembered(e2e.client, c.user, c.agent)
    assert values(kept, "active") == ["email"] and values(kept, "flagged") == ["post"]

    e2e.manager.decide(approval["approval_id"], "approve", comment="she wrote to us by post")
    # the decision goes through Pub/Sub to the approvals function, which makes the new fact current, then
    # supersedes the old one
    kept = until(e2e.client, c.user, lambda found: values(found, "superseded") == ["email"], c.agent)
    assert values(kept, "active") == ["post"]
    assert by_value(kept)["email"]["superseded_by"] == by_value(kept)["post"]["memory_id"]
    assert e2e.manager.approval(approval["approval_id"])["status"] == "approved"


# --- an injected instruction -------------------------------------------------------------------------------------

def test_an_instruction_injected_in_a_tool_output_never_becomes_a_memory(e2e: E2E) -> None:
    user, parcel = someone("ivy"), f"P-{uuid.uuid4().int % 10**8}"
    run_id = start(e2e, "concierge", f"Where is my parcel {parcel}?", user)
    assert answer(e2e, run_id) == f"Your parcel {parcel} is out for delivery."

    outcome = learned(e2e, run_id)

    # the guardrails quarantined the courier's output: the model, and so the transcript, saw only the notice
    verdicts = [e["data"] for e in events(e2e.client, run_id, "guard_verdict")]
    assert ("tool_output", "quarantine") in [(v["channel"], v["action"]) for v in verdicts], verdicts
    extraction = [json.loads(r["body"]) for r in e2e.model_requests()
                  if r.get("scenario") == "memory-extract-parcel" and "body" in r]
    (transcript,) = [t for body in extraction for c in body["contents"] for p in c["parts"]
                     if (t := p.get("text", "")).startswith("[event ") and parcel in t]
    assert "999-ATTACKER" not in transcript and "quarantined" in transcript, transcript

    # the model was fooled all the same (as the scenarios script it): the remember tool refused what it asked ...
    (remember,) = [e["data"] for e in events(e2e.client, run_id, "tool_result") if e["data"].get("name") == "remember"]
    assert "not remembered" in json.dumps(remember["output"]) and "injected instruction" in json.dumps(remember["output"])
    # ... and the fact the extraction proposed, citing the quarantined output, was screened out
    assert outcome["facts"] == []
    (left_out,) = outcome["left_out"]
    assert left_out["key"] == "refund_account" and left_out["trusted"] is False
    assert "injection detector" in left_out["reason"] and left_out["injection_score"] >= 0.5

    kept = remembered(e2e.client, user)
    shown = json.dumps(kept).lower()
    assert kept == [] and "999-attacker" not in shown and PARCEL_INJECTION[:40].lower() not in shown


# --- erasure -----------------------------------------------------------------------------------------------------

def test_erasing_a_user_leaves_other_users_and_other_tenants_alone(e2e: E2E) -> None:
    alice, bob = someone("alice"), someone("bob")
    runs = [(e2e.client, start(e2e, "concierge", "Please contact me by email.", alice)),
            (e2e.client, start(e2e, "concierge", "Please contact me by phone.", bob)),
            # the same user name in another tenant is another person
            (e2e.acme, start(e2e, "concierge", "Please contact me by post.", alice, client=e2e.acme))]
    for (client, run_id), user in zip(runs, (alice, bob, alice), strict=True):
        assert len(learned(e2e, run_id, client=client)["facts"]) == 1
        kept_from(client, user, run_id)

    assert values(remembered(e2e.acme, alice), "active") == ["post"]  # acme sees its own, never dev's
    assert remembered(e2e.acme, bob) == []

    erased = e2e.client.typed.request("DELETE", "/v1/memory", params={"user": alice})
    assert erased["user"] == alice and erased["deleted"]["memories"] == 1, erased
    assert remembered(e2e.client, alice) == []
    again = e2e.client.typed.request("DELETE", "/v1/memory", params={"user": alice})
    assert again["deleted"]["memories"] == 0

    assert values(remembered(e2e.client, bob), "active") == ["phone"]
    assert values(remembered(e2e.acme, alice), "active") == ["post"]
