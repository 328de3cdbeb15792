"""``agex eval`` on the local stack: the sample eval set runs through the real functions and emulators (the
approvals decided by the lead, not the runs' starter), passes, and is stored as the reference; a version that
then fails a case the reference passed fails the gate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agex.cli.main import main
from agex.dev.stack import REPO

from .conftest import E2E
from .test_support_agent import refunds_of

SAMPLE = REPO / "examples" / "evals" / "support.yaml"


def agex_eval(e2e: E2E, path: Path, *flags: str) -> int:
    return main(["--api", e2e.stack.api_url, "--token", "dev-token", "eval", "support", str(path),
                 "--approver-token", "manager-token", "--judge-url", e2e.stack.gemini_url, *flags])


def test_the_sample_eval_set_passes_on_the_local_stack_and_becomes_the_reference(
        e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    eval_id = f"e2e-{uuid.uuid4().hex[:12]}"
    code = agex_eval(e2e, SAMPLE, "--accept", "--json", "--eval-id", eval_id)
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 0, captured.err
    assert result["stored"] and result["eval_id"] == eval_id and result["passed"] and result["accepted"]
    assert result["version"] == "1" and result["fingerprint"].startswith("sha256:")
    summary = result["summary"]
    assert summary["pass_rate"] == 1.0 and summary["passed"] == summary["cases"] == 8 and summary["cost_usd"] > 0
    assert summary["judge"]["calls"] == 4 and summary["gate"] == {"passed": True, "reasons": []}
    cases: dict[str, dict[str, Any]] = {c["id"]: c for c in result["cases"]}
    assert {c["status"] for c in cases.values()} == {"succeeded"}
    assert [s["score"] for s in cases["refund-rejected"]["scores"]] == [0.9]

    # the runs were real: what the ledger paid, and who decided
    paid = {case: [r["amount_usd"] for r in refunds_of(e2e, cases[case]["run_id"])] for case in cases}
    assert paid == {"refund-small": [24.0], "refund-approved": [89.0], "refund-rejected": [], "refund-edited": [12.0],
                    "final-sale": [], "out-of-window": [], "question-delivery": [], "question-return-window": []}
    decided = [e["data"] for e in e2e.events(cases["refund-edited"]["run_id"]) if e["kind"] == "approval_decided"]
    assert [(d["decision"], d["by"], d["arguments"]["amount_usd"]) for d in decided] == [
        ("approved", "manager@example.com", 12.0)]
    run = e2e.client.run(cases["refund-approved"]["run_id"])
    assert run["metadata"] == {"eval": "support-golden", "eval_case": "refund-approved", "eval_id": eval_id}

    stored = e2e.client.evals("support", accepted="true")
    assert [e["eval_id"] for e in stored if e["evalset"] == "support-golden"][0] == eval_id


def test_a_version_failing_a_case_its_reference_passed_fails_the_gate(
        e2e: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evalset = f"regress-{uuid.uuid4().hex[:8]}"
    # the reference: an earlier version, accepted, with both cases passing
    e2e.client.put_eval("support", {
        "eval_id": f"{evalset}-v0", "version": "0", "evalset": evalset, "passed": True, "accepted": True,
        "summary": {"pass_rate": 1.0},
        "cases": [{"id": "small", "passed": True}, {"id": "final-sale", "passed": True}]})
    path = tmp_path / "regress.yaml"
    path.write_text(f"""
name: {evalset}
thresholds: {{pass_rate: 0.5}}
cases:
  - id: small
    input: "Hi, I'd like a refund for order A-1187: the socks arrived with a hole."
    expect: {{answer: [{{contains: "$25.00"}}]}}
  - id: final-sale
    input: "Please refund order A-2077, it doesn't fit."
    expect: {{trajectory: {{forbid: [issue_refund]}}}}
""")
    assert agex_eval(e2e, path, "--no-store") == 1
    out = capsys.readouterr().out
    assert "FAIL  small" in out and "answer check 1 (contains): does not contain '$25.00'" in out
    assert "compared with version 0" in out and "regressions since version 0: small" in out and "gate: FAILED" in out
    # within the pass rate, and the regression reported but allowed
    assert agex_eval(e2e, path, "--allow-regressions", "--accept") == 0
    out = capsys.readouterr().out
    assert "1 regression(s) small" in out and "gate: passed" in out and "(accepted: the new reference)" in out
    [latest] = [e for e in e2e.client.evals("support", version="1", accepted="true") if e["evalset"] == evalset]
    assert latest["summary"]["pass_rate"] == 0.5 and latest["principal"] == "dev@example.com"
