"""The output guard: secrets the step's tools used, and leaks of the agent's system instructions."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from agex.core.errors import ConfigurationError
from agex.core.guard import Action, Channel, Content, GuardContext, GuardSpec, Verdict, text_of
from agex.guards import output

INSTRUCTIONS = (
    "You are the support agent of Acme Outdoor. Answer questions about orders, shipping and returns, "
    "using the order tools. Never reveal discount codes; the staff code is for employees only. Escalate "
    "refunds above 200 dollars to a human and tell the customer a person will follow up within a day. "
    "Keep answers under 120 words, be friendly, and always sign as Acme Support.")
SECRET = "sk-live-4f9a8b7c6d5e3f2a"
CTX = GuardContext(agent="support", instructions=INSTRUCTIONS, secrets=(SECRET,))
GUARD = output.from_spec(GuardSpec(use="output"))


def check(value: object, guard: output.OutputGuard = GUARD, ctx: GuardContext = CTX) -> Verdict:
    return guard.check(Content(Channel.model_output, value, text_of(value), ctx))


@pytest.mark.parametrize("leaked", [
    SECRET,
    base64.b64encode(SECRET.encode()).decode(),
    base64.b64encode(f"user:{SECRET}".encode()).decode(),  # inside a longer base64 string
    SECRET.encode().hex(),
    quote(SECRET, safe=""),
])
def test_a_secret_in_any_form_the_scrubber_knows_is_redacted(leaked: str) -> None:
    verdict = check(f"Here you go: {leaked} (keep it safe)")
    assert (verdict.action, verdict.guard, verdict.findings) == (Action.redact, "output", ("secret",))
    assert SECRET not in verdict.redacted and leaked not in verdict.redacted
    assert "[secret:1]" in verdict.redacted and verdict.redacted.startswith("Here you go: ")


def test_secrets_are_redacted_in_structured_output_too() -> None:
    verdict = check({"answer": "done", "debug": {"token": SECRET}})
    assert verdict.action == Action.redact
    assert verdict.redacted == {"answer": "done", "debug": {"token": "[secret:1]"}}


def test_an_answer_that_recites_the_instructions_is_quarantined() -> None:
    answer = f"Sure! My instructions are:\n\n> {INSTRUCTIONS.upper()}\n\nAnything else?"
    verdict = check(answer)
    assert verdict.action == Action.quarantine and verdict.findings == ("system_instructions",)
    assert verdict.redacted is None and verdict.score == 1.0
    assert verdict.reason.startswith("the system instructions reproduced")


def test_a_reformatted_half_of_the_instructions_is_a_leak() -> None:
    sentences = INSTRUCTIONS.split(". ")
    answer = "My rules:\n" + "\n".join(f"- **{s.strip('.')}**" for s in sentences[2:])
    assert check(answer).action == Action.quarantine


@pytest.mark.parametrize("answer", [
    "Your order A-1042 shipped on 2024-05-12; a person will follow up.",
    "I can answer questions about orders, shipping and returns.",  # five words in common, then more
    "I'm the support agent of Acme Outdoor; refunds above 200 dollars go to a human. -- Acme Support",
    "Never reveal discount codes is a rule of mine, so I cannot share one.",
])
def test_an_answer_using_a_few_words_of_the_instructions_is_fine(answer: str) -> None:
    assert check(answer).action == Action.allow


def test_short_instructions_are_not_checked() -> None:
    ctx = GuardContext(agent="a", instructions="Be brief and always polite to users.")
    assert check("Be brief and always polite to users.", ctx=ctx).action == Action.allow


def test_short_instructions_repeated_whole_are_a_leak() -> None:
    short = "You are a terse assistant; never discuss pricing with anyone at all."
    ctx = GuardContext(agent="a", instructions=short)
    assert check(f"Sure, my prompt says: {short}", ctx=ctx).action == Action.quarantine


def test_redact_withholds_the_leaked_passage_and_the_secret() -> None:
    guard = output.from_spec(GuardSpec(use="output", action=Action.redact))
    verdict = check(f"Hello! {INSTRUCTIONS} Also the key is {SECRET}.", guard=guard)
    assert verdict.action == Action.redact and verdict.findings == ("secret", "system_instructions")
    assert verdict.redacted == f"Hello! {output.WITHHELD}. Also the key is [secret:1]."


def test_the_most_severe_of_both_findings_wins() -> None:
    verdict = check(f"{INSTRUCTIONS} and {SECRET}")
    assert verdict.action == Action.quarantine and verdict.findings == ("secret", "system_instructions")


def test_options_change_what_counts_as_a_leak() -> None:
    strict = output.from_spec(GuardSpec(use="output", action=Action.block, options={"min_leak_chars": 60}))
    answer = "As told: answer questions about orders, shipping and returns, using the order tools."
    assert check(answer).action == Action.allow
    assert check(answer, guard=strict).action == Action.block


@pytest.mark.parametrize(("spec", "message"), [
    (GuardSpec(use="output", channels=(Channel.tool_output,)), "model's output only"),
    (GuardSpec(use="output", action=Action.approve), "approve is not possible"),
    (GuardSpec(use="output", options={"min_leak": 10}), "unknown option(s) ['min_leak']"),
    (GuardSpec(use="output", options={"min_leak_chars": 5}), "min_leak_chars must be an integer"),
    (GuardSpec(use="output", options={"min_leak_fraction": 1.5}), "min_leak_fraction must be a number"),
    (GuardSpec(use="output", threshold=0.5), "no threshold"),
])
def test_from_spec_refuses_what_cannot_work(spec: GuardSpec, message: str) -> None:
    with pytest.raises(ConfigurationError, match="guard output") as e:
        output.from_spec(spec)
    assert message in str(e.value)
