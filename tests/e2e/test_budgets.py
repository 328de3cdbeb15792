"""Budgets on the local stack (docs/budgets.md): 200 runs at once against budgets at each level (a user, an
agent, a tenant, the deployment; tests/e2e/fleet.yaml), each spent by its own copy of the ticker. Together the
runs of a budget would spend about twice its cap: every one of them is stopped before a model call once it is
reached, the spend is over the cap by no more than the model calls already under way, new runs are refused
with 429, and each budget alerts at 50%, 80% and 100% once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agex.cli.client import ApiError
from tests.e2e.conftest import E2E

CAP = 30_000
BUDGETS = {"spender-user": "e2e-user", "spender-agent": "e2e-agent", "spender-tenant": "e2e-tenant",
           "spender-all": "e2e-all"}
RUNS_EACH = 50
STEP_SLOTS = 2 * 8
"""Model calls the local stack's step function can have under way at once: 2 workers of 8 threads (the
Functions Framework's default of 4 threads a core, on 2 cores)."""


def _start(e2e: E2E, agent: str, i: int) -> dict[str, Any]:
    try:
        return e2e.client.start_run(agent, "tick 6", metadata={"i": str(i)})
    except ApiError as e:
        return {"refused": e.status, "code": e.code}


def test_two_hundred_runs_against_budgets_at_each_level_stop_near_the_cap(e2e: E2E) -> None:
    jobs = [(agent, i) for i in range(RUNS_EACH) for agent in BUDGETS]
    with ThreadPoolExecutor(max_workers=20) as pool:
        started = list(pool.map(lambda job: (job[0], _start(e2e, *job)), jobs))
        runs = [(agent, r) for agent, r in started if "run_id" in r]
        finals = list(pool.map(lambda ar: (ar[0], e2e.wait(ar[1]["run_id"], timeout=600)), runs))
    for agent, budget in BUDGETS.items():
        mine = [f for a, f in finals if a == agent]
        refused = [r for a, r in started if a == agent and "refused" in r]
        assert all(r == {"refused": 429, "code": "budget_exceeded"} for r in refused), refused
        stopped = [f for f in mine if f["status"] == "failed"]
        assert all(f["error"]["code"] == "budget_exceeded" and budget in f["error"]["message"] for f in stopped)
        assert {f["status"] for f in mine} <= {"succeeded", "failed"}
        assert stopped, f"{agent}: the budget was never reached"
        spent = sum(f["usage"]["input_tokens"] + f["usage"]["output_tokens"] for f in mine)
        per_call = max((f["usage"]["input_tokens"] + f["usage"]["output_tokens"]) / max(f["usage"]["model_calls"], 1)
                       for f in mine)
        over_calls = max(spent - CAP, 0) / per_call
        print(f"{agent}: {len(mine)} ran, {len(refused)} refused at start, {len(stopped)} stopped; spent {spent} "
              f"tokens of {CAP}: over by {over_calls:.1f} calls")
        assert spent <= CAP + STEP_SLOTS * per_call, f"{agent} overshot its budget: {spent} of {CAP}"
        # now spent: a new run is refused at the door, saying when the window frees up
        try:
            e2e.client.start_run(agent, "tick 1")
            raise AssertionError(f"{agent}: a run started over a spent budget")
        except ApiError as e:
            assert e.status == 429 and e.code == "budget_exceeded" and budget in e.message
    # another tenant's user has a budget of their own, and is not refused
    other = e2e.acme.start_run("spender-user", "tick 1")
    assert e2e.wait(other["run_id"], client=e2e.acme)["status"] == "succeeded"
    alerts = e2e.pull("agex-budget-alerts-local", lambda found: len({
        (a["budget"], a["threshold"]) for a in found if a["budget"] in BUDGETS.values()}) >= 12)
    ours = [a for a in alerts if a["budget"] in BUDGETS.values()]
    assert sorted((a["budget"], a["threshold"]) for a in ours) == sorted(
        (b, t) for b in BUDGETS.values() for t in (0.5, 0.8, 1.0)), "each threshold once per budget"
