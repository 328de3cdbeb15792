"""``agex eval``: eval files refused with errors naming the case and field, argument matchers, trajectories read
from a run's events, the rubric judge's verdicts, and the comparison with the last accepted version that gates
a release. Then the runner against the system in this process (the memory backend): approvals decided by
another principal, and what fails a case."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agex.cli.client import Client
from agex.cli.main import main
from agex.core.errors import TransientError
from agex.core.messages import ModelRequest
from agex.dev import evaluation as ev
from agex.dev.embedded import Embedded, EmbeddedConfig
from agex.dev.stack import REPO
from agex.testing.models import FunctionModel

SAMPLE = REPO / "examples" / "evals" / "support.yaml"


def write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ev.EvalFileError) as e:
        ev.load_evalset(write(tmp_path, text))
    return str(e.value)


# --- the file ------------------------------------------------------------------------------------------

def test_the_sample_eval_set_loads() -> None:
    evalset = ev.load_evalset(SAMPLE)
    assert evalset.name == "support-golden" and evalset.agent == "support"
    assert len(evalset.cases) == 8 and evalset.needs_judge and evalset.needs_approver
    assert {d.decision for c in evalset.cases for d in c.approvals} == {"approve", "reject", "edit"}
    assert evalset.digest.startswith("sha256:")
    # a case without its own budget takes the set's
    assert evalset.budget(evalset.cases[0]) == ev.Budget(max_steps=6, max_cost_usd=0.02)
    assert evalset.budget(next(c for c in evalset.cases if c.id == "question-delivery")).max_steps == 3


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("cases:\n  - id: one\n    input: \"hi\n",
                 "not valid YAML (line 4, column 1): found unexpected end of stream, while scanning a quoted scalar at "
                 "line 3", id="yaml-syntax"),
    pytest.param("cases:\n  - id: one\n   input: hi\n", "not valid YAML (line 3, column 4)", id="yaml-indent"),
    pytest.param("- a\n- b\n", "holds a mapping with name, cases", id="not-a-mapping"),
    pytest.param("", "got nothing", id="empty"),
    pytest.param("name: x\n", "cases: a non-empty list of cases is required", id="no-cases"),
    pytest.param("cases: [hello]\n", "cases[0]: a case is a mapping", id="case-not-a-mapping"),
    pytest.param("cases:\n  - input: hi\n", "cases[0]: id: Field required", id="no-id"),
    pytest.param("cases:\n  - {id: a, input: hi}\n  - {id: a, input: ho}\n",
                 "case 'a' (cases[1]): id 'a' is also the id of cases[0]", id="duplicate-id"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {trajectory: {calls: [{tool: x, argz: {}}]}}}\n",
                 "case 'a' (cases[0]): expect.trajectory.calls[0].argz: unknown field; allowed: tool, args, "
                 "outcome, approval", id="unknown-nested-field"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {trajectory: {order: sorted}}}\n",
                 "case 'a' (cases[0]): expect.trajectory.order: Input should be 'exact', 'in_order' or 'any_order'",
                 id="bad-order"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {answer: [{contains: x, regex: y}]}}\n",
                 "expect.answer[0]: an answer check has exactly one of contains, not_contains, regex or rubric "
                 "(this one has contains, regex)", id="two-checks-in-one"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {answer: [{regex: '(unclosed'}]}}\n",
                 "expect.answer[0]: regex '(unclosed' does not compile", id="bad-regex"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {answer: [{contains: x, min_score: 0.5}]}}\n",
                 "min_score is for rubric checks", id="min-score-without-rubric"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {trajectory: {calls: [{tool: t, args: {n: {gt: '5'}}}]}}}\n",
                 "expect.trajectory.calls[0].args: n: gt needs a number, not \"5\"", id="bad-matcher"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {trajectory: {forbid: [{tool: t, args: {n: {absent: true, "
                 "eq: 1}}}]}}}\n", "forbid[0].args: n: absent cannot be combined", id="absent-and-more"),
    pytest.param("cases:\n  - {id: a, input: hi, approvals: [{decision: edit}]}\n",
                 "case 'a' (cases[0]): approvals[0]: an edit needs args", id="edit-without-args"),
    pytest.param("cases:\n  - {id: a, input: hi, approvals: [{decision: reject}]}\n",
                 "approvals[0]: a reject needs a comment", id="reject-without-reason"),
    pytest.param("cases:\n  - {id: a, input: hi, approvals: [{decision: approve, args: {x: 1}}]}\n",
                 "approvals[0]: args are for edit decisions, not approve", id="approve-with-args"),
    pytest.param("cases:\n  - {id: a, input: hi, approvals: [{decision: maybe}]}\n",
                 "approvals[0].decision: Input should be 'approve', 'reject' or 'edit'", id="bad-decision"),
    pytest.param("cases:\n  - {id: a, input: hi, expect: {status: succeeded, error_code: max_steps}}\n",
                 "expect: error_code needs status: failed", id="error-code-on-success"),
    pytest.param("cases:\n  - {id: a, input: ''}\n", "case 'a' (cases[0]): input: String should have at least 1",
                 id="empty-input"),
    pytest.param("thresholds: {pass_rate: 1.5, bogus: 1}\ncases:\n  - {id: a, input: hi}\n",
                 "thresholds.pass_rate: Input should be less than or equal to 1; thresholds.bogus: unknown field; "
                 "allowed: max_steps, max_cost_usd, pass_rate, max_pass_rate_drop", id="bad-thresholds"),
    pytest.param("nmae: x\ncases:\n  - {id: a, input: hi}\n", "nmae: unknown field", id="unknown-top-field"),
])
def test_a_bad_eval_file_is_refused_naming_the_case_and_field(tmp_path: Path, text: str, expected: str) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(str(tmp_path / "set.yaml")) and expected in message, message


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ev.EvalFileError, match="cannot read the eval file"):
        ev.load_evalset(tmp_path / "missing.yaml")


def test_the_cli_refuses_a_bad_file_with_exit_2_before_calling_the_api(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "cases:\n  - {id: refund, input: hi, approvals: [{decision: reject}]}\n")
    # nothing listens there: a bad file must be reported without reaching for the API
    assert main(["--api", "http://127.0.0.1:9", "eval", "support", str(path)]) == 2
    assert "case 'refund' (cases[0]): approvals[0]: a reject needs a comment" in capsys.readouterr().err
    other = write(tmp_path, "agent: ticker\ncases:\n  - {id: a, input: hi}\n", "other.yaml")
    assert main(["--api", "http://127.0.0.1:9", "eval", "support", str(other)]) == 2
    assert "eval set of agent 'ticker', not 'support'" in capsys.readouterr().err
    assert main(["--api", "http://127.0.0.1:9", "eval", "support", str(SAMPLE), "--eval-id", "a b"]) == 2
    assert "--eval-id must be 1 to 128 letters" in capsys.readouterr().err


# --- matchers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expected", "actual", "ok"), [
    (89, 89.0, True), (89, 89.5, False), (True, 1, False), (1, True, False), ("A-1", "A-1", True),
    ({"order_id": "A-1"}, {"order_id": "A-1", "amount": 5}, True),  # a subset
    ({"order": {"id": "A-1"}}, {"order": {"id": "A-1", "x": 1}}, True),
    ({"order_id": "A-1"}, {"amount": 5}, False), ([1, 2], [1, 2], True), ([1, 2], [2, 1], False),
    ({"gt": 0, "lte": 24}, 24, True), ({"gt": 0, "lte": 24}, 24.01, False), ({"lt": 5}, "4", False),
    ({"gte": 1}, True, False), ({"regex": "^A-\\d{4}$"}, "A-1042", True), ({"regex": "^A-"}, 5, False),
    ({"contains": "SPLIT sole"}, "Boots arrived with a split sole", True), ({"contains": 2}, [1, 2, 3], True),
    ({"contains": {"sku": "B"}}, [{"sku": "A"}, {"sku": "B", "n": 1}], True), ({"contains": "x"}, 5, False),
    ({"in": ["a", "b"]}, "b", True), ({"in": [1, 2]}, 3, False), ({"ne": 1}, 2, True), ({"ne": 1}, 1.0, False),
    ({"eq": {"gt": 1}}, {"gt": 1}, True),  # an object whose keys look like operators, matched literally
    ({"eq": {"a": 1}}, {"a": 1, "b": 2}, False),  # exactly, not as a subset
    ({"any": True}, None, True),
])
def test_matchers(expected: Any, actual: Any, ok: bool) -> None:
    ev.check_matcher(expected)
    assert (ev.match(expected, actual) is None) is ok, ev.match(expected, actual)


def test_present_absent_and_why_not() -> None:
    args = {"order_id": "A-1042", "amount_usd": 89.0}
    assert ev.match({"note": {"absent": True}, "order_id": {"any": True}}, args) is None
    assert ev.match({"amount_usd": {"absent": True}}, args) == "amount_usd: present (89.0), expected absent"
    assert ev.match({"note": {"any": True}}, args) == "note: missing (expected any true)"
    assert ev.match({"amount_usd": {"lte": 50}}, args) == "amount_usd: 89.0 is not <= 50"
    assert ev.match({"order_id": "A-1187"}, args) == 'order_id: expected "A-1187", got "A-1042"'
    assert ev.match({"reason": "x"}, args) == 'reason: missing (expected "x")'


# --- trajectories --------------------------------------------------------------------------------------

def model_calls(step: int, *calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "model_response", "step": step, "data": {"message": {"role": "model", "parts": [
        {"function_call": {"id": cid, "name": name, "args": args}} for cid, name, args in calls]}}}


def result(step: int, cid: str, ok: bool = True) -> dict[str, Any]:
    return {"kind": "tool_result", "step": step, "data": {"call_id": cid, "ok": ok, "output": {}}}


def approval(step: int, cid: str, decision: str | None,
             arguments: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    asked = {"kind": "approval_requested", "step": step,
             "data": {"approval_id": f"apr_{cid}", "kind": "approval", "call_id": cid, "name": "issue_refund"}}
    if decision is None:
        return [asked]
    return [asked, {"kind": "approval_decided", "step": step, "data": {
        "approval_id": f"apr_{cid}", "kind": "approval", "call_id": cid, "decision": decision, "by": "lead",
        "arguments": arguments}}]


REFUND = {"order_id": "A-1042", "amount_usd": 89.0, "reason": "split sole"}
# as the API returns them: the lead edited the refund down to 12
EVENTS = [{"kind": "run_created", "step": 0, "data": {}},
          model_calls(1, ("c1", "lookup_order", {"order_id": "A-1042"})), result(1, "c1"),
          model_calls(2, ("c2", "check_refund_policy", {"order_id": "A-1042"})), result(2, "c2"),
          model_calls(3, ("c3", "issue_refund", REFUND)),
          *approval(3, "c3", "approved", {**REFUND, "amount_usd": 12.0}), result(3, "c3"),
          {"kind": "model_response", "step": 4, "data": {"message": {"role": "model", "parts": [{"text": "done"}]}}}]


def test_calls_are_read_from_the_events_with_what_became_of_them() -> None:
    calls = ev.calls_of(EVENTS)
    assert [(c.tool, c.outcome, c.approval) for c in calls] == [
        ("lookup_order", "ok", "none"), ("check_refund_policy", "ok", "none"), ("issue_refund", "ok", "edited")]
    assert calls[2].args["amount_usd"] == 12.0 and calls[2].requested_args["amount_usd"] == 89.0
    rejected = ev.calls_of([model_calls(1, ("c", "issue_refund", REFUND)), *approval(1, "c", "rejected"),
                            result(1, "c", ok=False)])
    assert [(c.outcome, c.approval) for c in rejected] == [("rejected", "rejected")]
    waiting = ev.calls_of([model_calls(1, ("c", "issue_refund", REFUND)), *approval(1, "c", None)])
    assert [(c.outcome, c.approval) for c in waiting] == [("not_run", "pending")]
    failed = ev.calls_of([model_calls(1, ("c", "lookup_order", {}), ("d", "lookup_order", {})), result(1, "c", False)])
    assert [c.outcome for c in failed] == ["error", "not_run"]


def trajectory(**spec: Any) -> ev.Trajectory:
    return ev.Trajectory.model_validate(spec)


def test_trajectory_orders() -> None:
    calls = ev.calls_of(EVENTS)
    refund = {"tool": "issue_refund", "args": {"amount_usd": {"lte": 20}}, "approval": "edited", "outcome": "ok"}
    assert ev.check_trajectory(trajectory(order="exact", calls=["lookup_order", "check_refund_policy", refund]),
                               calls) == []
    [wrong] = ev.check_trajectory(trajectory(order="exact", calls=["lookup_order", refund]), calls)
    assert wrong.startswith("expected exactly 2 call(s) (lookup_order, issue_refund), the run made 3: lookup_order(")
    swapped = ev.check_trajectory(trajectory(order="exact", calls=["check_refund_policy", "lookup_order", refund]),
                                  calls)
    assert swapped == ["call 1: tool lookup_order, expected check_refund_policy",
                       "call 2: tool check_refund_policy, expected lookup_order"]
    assert ev.check_trajectory(trajectory(calls=["lookup_order", refund]), calls) == []  # in order, others between
    [late] = ev.check_trajectory(trajectory(calls=[refund, "lookup_order"]), calls)
    assert late.startswith("no call lookup_order() after issue_refund(amount_usd={\"lte\": 20}, outcome: ok, "
                           "approval: edited); calls made:")
    assert ev.check_trajectory(trajectory(order="any_order", calls=[refund, "lookup_order"]), calls) == []
    [unmet] = ev.check_trajectory(trajectory(order="any_order", calls=["lookup_order", "lookup_order"]), calls)
    assert unmet.startswith("no call lookup_order()")
    [bad_args] = ev.check_trajectory(trajectory(calls=[{"tool": "issue_refund", "args": {"amount_usd": 89}}]), calls)
    assert bad_args.startswith("no call issue_refund(amount_usd=89)")


def test_any_order_finds_a_matching_a_greedy_pass_would_miss() -> None:
    calls = [ev.Call("lookup_order", {"order_id": "A-1"}, "ok"), ev.Call("lookup_order", {"order_id": "A-2"}, "ok")]
    # the first spec fits both calls, the second only the first call
    spec = trajectory(order="any_order", calls=[{"tool": "lookup_order", "args": {"order_id": {"regex": "^A-"}}},
                                                {"tool": "lookup_order", "args": {"order_id": "A-1"}}])
    assert ev.check_trajectory(spec, calls) == []


def test_forbidden_calls() -> None:
    calls = ev.calls_of(EVENTS)
    [hit] = ev.check_trajectory(trajectory(forbid=["issue_refund"]), calls)
    assert hit.startswith("forbidden call made: issue_refund(order_id=\"A-1042\", amount_usd=12.0")
    # an edited refund of 12 is not one over 12
    assert ev.check_trajectory(trajectory(forbid=[{"tool": "issue_refund", "args": {"amount_usd": {"gt": 12}}}]),
                               calls) == []


# --- the judge -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "score"), [
    ('{"score": 0.8, "reason": "ok"}', 0.8), ('```json\n{"score": 1, "reason": "fine"}\n```', 1.0),
    ('Verdict: {"score": 0, "reason": "no"} (done)', 0.0)])
def test_verdicts_are_read(text: str, score: float) -> None:
    assert ev.parse_verdict(text).score == score


@pytest.mark.parametrize(("text", "problem"), [
    ("looks good to me", "no JSON object"), ('{"score": 1.5, "reason": "x"}', "a number from 0 to 1"),
    ('{"score": "high"}', "a number from 0 to 1"), ("{score: 1}", "not valid JSON")])
def test_unreadable_verdicts_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ev.parse_verdict(text)


def test_the_judge_is_asked_through_the_model_port_and_retries_transient_failures() -> None:
    seen: list[ModelRequest] = []

    def judge(request: ModelRequest) -> str:
        seen.append(request)
        if len(seen) == 1:
            raise TransientError("429")
        return '{"score": 0.75, "reason": "polite, names the amount"}'

    rubric = ev.RubricJudge(FunctionModel(judge), "judge-model", backoff_s=0.0)
    verdict = rubric.judge("Names the amount.", "refund A-1042", ev.calls_of(EVENTS), "Refunded $12.00.")
    assert verdict == ev.Verdict(0.75, "polite, names the amount") and rubric.calls == 1
    request = seen[-1]
    assert request.model == "judge-model" and request.system == ev.JUDGE_INSTRUCTIONS and not request.tools
    prompt = request.messages[0].parts[0].text or ""
    assert "Names the amount." in prompt and "Refunded $12.00." in prompt and "issue_refund(" in prompt


# --- comparison and the gate ---------------------------------------------------------------------------

def results(**passed: bool) -> list[ev.CaseResult]:
    return [ev.CaseResult(id=k, passed=v, failures=[] if v else ["x"]) for k, v in passed.items()]


def stored(version: str, accepted: bool = True, evalset: str = "golden", **passed: bool) -> dict[str, Any]:
    rate = sum(passed.values()) / len(passed)
    return {"eval_id": f"ev-{version}", "version": version, "evalset": evalset, "accepted": accepted,
            "summary": {"pass_rate": rate}, "cases": [{"id": k, "passed": v} for k, v in passed.items()]}


def evalset(**thresholds: Any) -> ev.EvalSet:
    return ev.EvalSet(name="golden", thresholds=ev.Thresholds(**thresholds), cases=[ev.Case(id="a", input="x")])


def test_the_reference_is_the_newest_accepted_result_of_another_version_of_the_same_set() -> None:
    newest_first = [stored("3", a=True), stored("2", accepted=False, a=True), stored("2", evalset="other", a=True),
                    stored("2", a=True, b=False), stored("1", a=True)]
    reference = ev.reference_of(newest_first, "golden", "3")
    assert reference is not None and reference["eval_id"] == "ev-2" and reference["cases"][1]["id"] == "b"
    assert ev.reference_of([stored("3", a=True)], "golden", "3") is None


def test_regressions_fixes_and_new_cases() -> None:
    now = results(a=False, b=True, c=True, d=False)
    comparison = ev.compare(now, stored("1", a=True, b=False, c=True))
    assert comparison.regressions == ("a",) and comparison.fixed == ("b",) and comparison.new == ("d",)
    assert comparison.pass_rate_drop == round(2 / 3 - 0.5, 4)
    assert comparison.reference is not None and comparison.reference["version"] == "1"
    assert ev.compare(now, None) == ev.Comparison(reference=None)


def test_the_gate() -> None:
    all_pass = results(a=True, b=True)
    assert ev.gate(evalset(), all_pass, ev.Comparison(reference=None)) == ev.Gate(True, ())
    one_fails = results(a=True, b=False)
    [reason] = ev.gate(evalset(), one_fails, ev.Comparison(reference=None)).reasons
    assert reason == "pass rate 50.00% is under 100.00% (failed: b)"
    assert ev.gate(evalset(pass_rate=0.5), one_fails, ev.Comparison(reference=None)).passed
    # a regression fails the gate even within the pass rate, unless allowed
    comparison = ev.compare(one_fails, stored("1", a=True, b=True))
    verdict = ev.gate(evalset(pass_rate=0.5), one_fails, comparison)
    assert verdict.reasons == ("regressions since version 1: b",
                               "pass rate dropped by 50.00% from version 1 (allowed 0.00%)")
    assert ev.gate(evalset(pass_rate=0.5), one_fails, comparison, allow_regressions=True).passed
    # a drop without a regression (a new case failing) within the allowed drop
    renamed = ev.compare(results(a=True, c=False), stored("1", a=True, b=True))
    assert not renamed.regressions and renamed.pass_rate_drop == 0.5
    assert ev.gate(evalset(pass_rate=0.5, max_pass_rate_drop=0.5), results(a=True, c=False), renamed).passed
    # a budget missed fails the gate whatever the pass rate
    over = [ev.CaseResult(id="a", passed=False, threshold_misses=["7 steps, over max_steps 6"]), *results(b=True)]
    assert "budgets missed by a" in ev.gate(evalset(pass_rate=0.5), over, ev.Comparison(reference=None)).reasons
    # skipped cases count neither way; none run is a failure
    skipped = [ev.CaseResult(id="a", skipped="decides approvals"), *results(b=True)]
    assert ev.pass_rate(skipped) == 1.0 and ev.gate(evalset(), skipped, ev.Comparison(reference=None)).passed
    assert ev.gate(evalset(), skipped[:1], ev.Comparison(reference=None)).reasons == ("no case ran",)


def test_a_large_result_is_shrunk_to_fit_the_api() -> None:
    many = [ev.CaseResult(id=f"c{i}", passed=True, answer="x" * 2000, calls=ev.calls_of(EVENTS)) for i in range(40)]
    verdict = ev.Gate(True, ())
    body = ev.record(evalset(), {"version": "1"}, many, {}, verdict, eval_id="ev-1", accept=True)
    assert body["accepted"] and body["version"] == "1" and len(body["cases"]) == 40
    assert "answer" not in body["cases"][0] and body["cases"][0]["trajectory"]
    small = ev.record(evalset(), {"version": "1"}, many[:2], {}, ev.Gate(False, ("x",)), eval_id="ev-1", accept=True)
    assert small["cases"][0]["answer"] and not small["accepted"] and not small["passed"]


# --- the runner, against the system in this process ----------------------------------------------------

@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    scenarios = tmp_path_factory.mktemp("scenarios")
    for source in (REPO / "examples" / "scenarios").glob("*.yaml"):
        shutil.copy(source, scenarios / source.name)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AGEX_EXAMPLE_LEDGER", str(tmp_path_factory.mktemp("ledger") / "refunds.sqlite"))
        config = EmbeddedConfig(api_port=0, fleet_file=None, scenarios=scenarios, agents="examples.support_agent:agent")
        with Embedded(config) as system:
            yield system


def runner(system: Embedded, text: str, tmp_path: Path, **kw: Any) -> ev.Runner:
    return ev.Runner(client=Client(system.api_url, "dev-token"), approver=Client(system.api_url, "manager-token"),
                     agent="support", evalset=ev.load_evalset(write(tmp_path, text)), eval_id=ev.new_eval_id(),
                     poll_s=0.05, **kw)


BOOTS = "Hi, I'd like a refund for order A-1042: the boots arrived with a split sole."


def test_a_case_passes_and_a_run_asking_for_an_undecided_approval_is_failed_and_cancelled(
        system: Embedded, tmp_path: Path) -> None:
    run = runner(system, f"""
cases:
  - id: approved
    input: "{BOOTS}"
    approvals: [{{decision: approve, tool: issue_refund}}]
    expect:
      trajectory: {{calls: [{{tool: issue_refund, approval: approved, outcome: ok}}]}}
      answer: [{{contains: $89}}]
  - id: undecided
    input: "{BOOTS}"
  - id: wrong-tool
    input: "{BOOTS}"
    approvals: [{{decision: approve, tool: lookup_order}}]
  - id: two-decisions
    input: "Hi, I'd like a refund for order A-1187: the socks arrived with a hole."
    approvals: [{{decision: approve}}]
    expect: {{answer: [{{contains: "$25.00"}}], trajectory: {{forbid: [check_refund_policy]}}}}
""", tmp_path)
    approved, undecided, wrong_tool, small = run.run(parallel=4)
    assert approved.passed and approved.status == "succeeded" and approved.steps == 4, approved.failures
    assert [c.approval for c in approved.calls] == ["none", "none", "approved"]
    assert undecided.failures == ["unexpected approval 1 for issue_refund: the case decides 0; run cancelled"]
    assert undecided.status == "cancelled" and not undecided.passed
    assert wrong_tool.failures == ["approval 1 is for issue_refund, the case decides one for lookup_order; run "
                                   "cancelled"]
    assert small.status == "succeeded" and small.failures == [
        "the case decides 1 approval(s); the run asked for 0",
        'forbidden call made: check_refund_policy(order_id="A-1187") [ok]',
        "answer check 1 (contains): does not contain '$25.00'"]


def test_a_case_over_its_budget_or_its_time_fails(system: Embedded, tmp_path: Path) -> None:
    run = runner(system, f"""
thresholds: {{max_steps: 3, max_cost_usd: 0.0001}}
cases:
  - id: costly
    input: "Please refund order A-2077, it doesn't fit."
  - id: slow
    input: "{BOOTS}"
    approvals: [{{decision: approve}}]
""", tmp_path)
    costly = run.run_case(run.evalset.cases[0])
    assert costly.threshold_misses == [f"cost ${costly.cost_usd:.6f}, over max_cost_usd $0.0001"]
    assert not costly.passed and costly.failures == costly.threshold_misses
    slow = ev.Runner(**{**run.__dict__, "timeout_s": 0.01, "approver": None}).run_case(run.evalset.cases[1])
    still = r"the run was still (queued|running|waiting_approval) after 0.01 s; cancelled"
    assert re.fullmatch(still, slow.failures[0]), slow.failures
    assert slow.status == "cancelled" and not slow.passed


def test_the_cli_reports_an_unknown_agent_and_a_refused_approver_with_exit_2(
        system: Embedded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anyone = write(tmp_path, "cases:\n  - {id: a, input: hi}\n")
    assert main(["--api", system.api_url, "eval", "nobody", str(anyone)]) == 2
    assert "unknown agent 'nobody'; agents here: support" in capsys.readouterr().err
    assert main(["eval", "support", str(SAMPLE), "--api", system.api_url, "--approver-token", "wrong"]) == 2
    assert "the approver token was refused (401" in capsys.readouterr().err
