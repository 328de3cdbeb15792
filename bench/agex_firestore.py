"""Part 1: the per-step cost of one long run of Agent Executor on Firestore (the emulator).

The real ``StepRunner`` and ``RunService`` run in this process over ``FirestoreCheckpointStore``; the task
queue and the event bus are the in-memory ones (as in ``agex.testing.InMemoryRuntime``), the model is a
zero-latency ``FunctionModel`` and the tool is the ticker agent's ``tick``. Each delivery is one step:
claim, model response (+ intent), tool result, commit. The store's ``stats`` counters, read around each
delivery, give that step's Firestore operations and bytes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import (
    STEPS,
    final_text,
    firestore_emulator,
    in_process_runtime,
    tick_args,
    trend,
    window_means,
)

STAT_KEYS = ("reads", "writes", "bytes_written", "bytes_head", "bytes_events", "commits", "queries", "retries")


def script(steps: int, seen: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """The fake model: tick ``n`` where ``n`` follows the last tick result it can see, then answer.

    The model sees only the input and the last ``context_window_steps`` steps, so the count comes from
    the conversation (the tool echoes ``n``), not from the number of messages."""

    def answer(request: Any) -> Any:
        last = 0
        for message in reversed(request.messages):
            responses = [p.function_response for p in message.parts if p.function_response]
            if responses:
                last = int(responses[-1].response.get("n", 0))
                break
        seen.append({"messages": len(request.messages),
                     "bytes": len(json.dumps([m.model_dump(mode="json") for m in request.messages]))})
        n = last + 1
        return final_text(steps) if n > steps else [("tick", tick_args(n))]

    return answer


def run_inmemory(steps: int = STEPS) -> dict[str, Any]:
    """The same run on ``InMemoryRuntime`` (in-memory store, queue and bus): the engine's own CPU time per
    step, without any storage latency. For the decomposition of the stack's time per step."""
    from agex.testing import FunctionModel
    from agex.testing.harness import InMemoryRuntime
    from examples.ticker_agent import agent as ticker

    def once(n_steps: int) -> list[dict[str, Any]]:
        rt = InMemoryRuntime([ticker], FunctionModel(script(n_steps, [])))
        rt.start(ticker.name, f"tick {n_steps} padded")
        rows: list[dict[str, Any]] = []

        def handle(task: Any, attempt: int) -> bool:
            t = time.perf_counter()
            rt.deliver(task, attempt)
            rows.append({"step": task.step, "wall_ms": (time.perf_counter() - t) * 1000})
            return True

        while rt.queue.pending():
            rt.queue.deliver_due(rt.clock.now(), handle)
        return rows

    once(20)  # warm-up
    rows = [r for r in once(steps) if r["step"] <= steps]
    return {"store": "InMemoryCheckpointStore", "steps": steps,
            "summary": window_means(rows, ("wall_ms",), steps),
            "mean_wall_ms_all_steps": sum(r["wall_ms"] for r in rows) / len(rows)}


def run(steps: int = STEPS, *, warmup_steps: int = 50, progress: Callable[[str], None] = print) -> dict[str, Any]:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore
    from agex.core.clock import SystemClock
    from agex.engine.decisions import Delivery
    from agex.engine.runs import CreateRunRequest
    from agex.engine.stepper import Outcome
    from agex.ports.auth import Caller
    from agex.testing import FunctionModel
    from examples.ticker_agent import agent as ticker

    t_start = time.perf_counter()
    with firestore_emulator(progress) as client:
        store = FirestoreCheckpointStore(client, prefix=f"b{uuid.uuid4().hex[:8]}_")
        clock, caller = SystemClock(), Caller("bench", "bench@example.com")

        def one_run(n_steps: int, label: str) -> dict[str, Any]:
            seen: list[dict[str, Any]] = []
            model = FunctionModel(script(n_steps, seen))
            # the composition root on the in-memory backends, with the Firestore store under test
            runtime = in_process_runtime([ticker], model, store, clock=clock)
            queue, runner, service = runtime.queue, runtime.runner, runtime.service
            store.reset_stats()
            head = service.start(caller, ticker.name, CreateRunRequest(input=f"tick {n_steps} padded")).run
            created = store.reset_stats()
            rows: list[dict[str, Any]] = []
            failures: list[str] = []
            t0 = time.perf_counter()

            def handle(task: Any, attempt: int) -> bool:
                before_seen = len(seen)
                store.reset_stats()
                t = time.perf_counter()
                try:
                    result = runner.run(Delivery.of(task, attempt, "bench"))
                except Exception as e:  # a retried delivery would be a different measurement: note it
                    failures.append(f"step {task.step} attempt {attempt}: {type(e).__name__}: {e}")
                    return attempt >= 3
                wall = time.perf_counter() - t
                delta = store.reset_stats()
                prompt = seen[before_seen] if len(seen) > before_seen else {"messages": 0, "bytes": 0}
                rows.append({"step": task.step, "wall_ms": wall * 1000, **{k: delta[k] for k in STAT_KEYS},
                             "doc_ops": delta["reads"] + delta["writes"], "outcome": result.outcome.value,
                             # what Cloud Tasks holds for the step: its task's body, the carried window included
                             "task_bytes": len(json.dumps(task.body())),
                             "model_input_messages": prompt["messages"], "model_input_bytes": prompt["bytes"]})
                if len(rows) % 100 == 0:
                    progress(f"  {label}: {len(rows)} steps, {time.perf_counter() - t0:.1f}s")
                return True

            while queue.pending():
                queue.deliver_due(datetime.now(UTC), handle)
            elapsed = time.perf_counter() - t0
            final = store.get_run(head.tenant, head.run_id)
            assert final is not None
            events = store.list_events(head.tenant, head.run_id, limit=100_000)
            if rows and rows[-1]["outcome"] != Outcome.finished.value:
                failures.append(f"last delivery outcome {rows[-1]['outcome']}")
            return {"run_id": head.run_id, "status": final.status.value, "result": final.result,
                    "error": final.error.model_dump() if final.error else None, "steps_committed": final.step,
                    "events_stored": len(events), "create_run": created, "seconds": elapsed,
                    "failures": failures, "per_step": rows}

        progress(f"  warm-up run ({warmup_steps} steps: gRPC channel, the emulator's JIT)")
        warm = one_run(warmup_steps, "warm-up")
        progress(f"  measured run: {steps} tool steps + 1 answer step")
        measured = one_run(steps, "agex")

    tool_steps = [r for r in measured["per_step"] if r["step"] <= steps]
    keys = ("wall_ms", "bytes_written", "bytes_head", "bytes_events", "doc_ops", "reads", "writes", "commits", "queries", "retries",
            "model_input_messages", "model_input_bytes", "task_bytes")
    summary = window_means(tool_steps, keys, steps)
    # Steps 1-10 run with a context window still filling (step k reads the events of steps 1..k-1);
    # from step w+1 on it holds w whole steps. Compare the last steps with the first full-window ones too.
    w = ticker.context_window_steps
    steady = window_means(tool_steps, keys, steps, baseline=range(w + 1, w + 11))
    totals = {k: sum(r[k] for r in measured["per_step"]) for k in (*STAT_KEYS, "doc_ops")}
    return {
        "system": "agent-executor",
        "store": "FirestoreCheckpointStore on the Firestore emulator (gRPC, 127.0.0.1)",
        "agent": f"{ticker.name} (context_window_steps={ticker.context_window_steps})",
        "steps": steps,
        "pad_chars": len(tick_args(0)["pad"]),
        "operations_definition": "doc_ops = documents read + documents written (Firestore's billed units); "
                                 "commits and queries are listed separately",
        "warmup": {k: warm[k] for k in ("status", "steps_committed", "seconds", "failures")},
        "run": {k: v for k, v in measured.items() if k != "per_step"},
        "totals": totals,
        "mean_wall_ms_all_steps": sum(r["wall_ms"] for r in tool_steps) / len(tool_steps),
        "engine_alone": run_inmemory(steps),
        "summary": summary,
        "summary_full_window": steady,
        "wall_trend": trend(tool_steps, "wall_ms"),
        "per_step": measured["per_step"],
        "seconds_total": time.perf_counter() - t_start,
    }
