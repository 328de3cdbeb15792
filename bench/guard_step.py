"""What the default guardrail chain adds to a step, side by side with the same agent unguarded, in one run.

    .venv/bin/python -m bench.guard_step [--steps 50] [--runs 5]

The same agent on the in-memory runtime (no I/O: what is left is the engine and the guards) does ``steps``
steps of one tool call each, whose output is a 2 KB JSON document with an email address and a phone number
in it (so the PII redactor has work), then answers. Reported: milliseconds per step, median of ``runs``
runs, with the default chain and with ``guards=()``, after a warm-up run of each (first-use loading of
Presidio, spaCy and the detector is a cold-start cost, reported by ``bench.guard_scan`` and
docs/performance.md, not here).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.guard import DEFAULT_GUARDS
from agex.core.messages import ModelRequest
from agex.core.run import Limits
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import FunctionModel
from agex.tools import ToolContext, tool

_ROWS = [{"order_id": f"A-{1000 + i}", "item": "Trailrunner 3 hiking boots", "amount_usd": 89.0 + i,
          "delivered_on": "2026-11-12", "status": "delivered",
          "note": "Customer prefers delivery after 5 pm; leave at the back door if nobody answers."}
         for i in range(9)]


class Page(BaseModel):
    page: int


@tool
def orders(args: Page, ctx: ToolContext) -> dict[str, Any]:
    """A page of the customer's orders."""
    return {"customer": "Dana Whitfield", "email": "dana.whitfield@example.com", "phone": "+1 415 555 0132",
            "page": args.page, "orders": _ROWS}


def _agent(guarded: bool, steps: int) -> Agent:
    return Agent(name="bench", instructions="List the customer's orders.", tools=(orders,),
                 guards=DEFAULT_GUARDS if guarded else (), context_window_steps=4,
                 limits=Limits(max_steps=steps + 1, max_tokens=10**9, max_cost_usd=1000,
                                     max_steps_per_minute=100_000))


def per_step_ms(guarded: bool, steps: int) -> float:
    calls = {"n": 0}

    def answer(request: ModelRequest) -> Any:
        # the bounded window hides early turns: count the calls made instead
        calls["n"] += 1
        return [("orders", {"page": calls["n"]})] if calls["n"] <= steps else "All orders listed."

    rt = InMemoryRuntime([_agent(guarded, steps)], FunctionModel(answer))
    started = time.perf_counter()
    head = rt.run("bench", "Please list my orders.")
    elapsed = time.perf_counter() - started
    assert head.status.value == "succeeded", head.error
    return elapsed * 1000 / (steps + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for guarded in (False, True):
        per_step_ms(guarded, 3)  # warm-up: first-use loading is not a per-step cost
        results[guarded] = statistics.median(per_step_ms(guarded, args.steps) for _ in range(args.runs))
    print(f"in-memory runtime, {args.steps} steps of one 2 KB tool output each, median of {args.runs} runs")
    print(f"  guards=()          {results[False]:7.2f} ms/step")
    print(f"  default chain      {results[True]:7.2f} ms/step")
    print(f"  added by the chain {results[True] - results[False]:7.2f} ms/step")


if __name__ == "__main__":
    main()
