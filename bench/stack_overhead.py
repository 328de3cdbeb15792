"""Part 3: the runtime's overhead per step on the full local stack.

``agex.dev.stack.Stack`` starts the Firestore and Pub/Sub emulators, the Cloud Tasks and Gemini emulators
and the ``api`` and ``step`` functions under functions-framework; the ``ticker`` agent runs through the
public HTTP API. The Gemini emulator answers at once and ``tick`` does nothing, so the time per step is the
runtime's own: Cloud Tasks dispatch, the step function, two Firestore commits and one read per step,
and the enqueue of the next step.

Timings come from the events' ``at`` stamps (the step function's clock), so client polling does not
blur them: per step = (``step_completed`` of the last measured step - ``run_created``) / steps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import mean

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


def _watch(client: Any, run_id: str, steps: int, timeout: float) -> dict[str, Any]:
    """Poll until the run ends; if it goes past its answer step (``steps + 1``) without ending, cancel it:
    the steps to measure are done either way."""
    deadline = time.monotonic() + timeout
    cancelled_by_bench = False
    while True:
        view = client.run(run_id)
        if view["status"] in TERMINAL:
            break
        if view["step"] > steps + 1 and not cancelled_by_bench:
            with contextlib.suppress(Exception):
                client.cancel(run_id)
            cancelled_by_bench = True
        if time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                client.cancel(run_id)
            cancelled_by_bench = True
            view = client.run(run_id)
            break
        time.sleep(0.25)
    return {"view": view, "cancelled_by_bench": cancelled_by_bench}


def _analyse(client: Any, run_id: str, steps: int, watched: dict[str, Any]) -> dict[str, Any]:
    events = list(client.events(run_id))
    view = watched["view"]
    created = next(e for e in events if e["kind"] == "run_created")
    by_step: dict[int, dict[str, dict[str, Any]]] = {}
    for e in events:
        by_step.setdefault(e["step"], {}).setdefault(e["kind"], e)  # first of each kind per step
    completed = sorted(s for s, kinds in by_step.items() if "step_completed" in kinds)
    measured = [s for s in completed if s <= steps]
    last = measured[-1] if measured else 0
    out: dict[str, Any] = {
        "run_id": run_id, "requested_steps": steps, "status": view["status"], "result": view.get("result"),
        "error": view.get("error"), "steps_committed": view["step"], "steps_measured": len(measured),
        "cancelled_by_bench": watched["cancelled_by_bench"],
        "ended_by_model": view["status"] == "succeeded" and view["step"] == steps + 1,
        "tick_n_seen": sorted({int(part["function_call"].get("args", {}).get("n", -1))
                               for e in events if e["kind"] == "model_response" and e["step"] <= steps
                               for part in e["data"]["message"]["parts"] if "function_call" in part})[-3:],
    }
    if not last:
        return out
    span = (_at(by_step[last]["step_completed"]) - _at(created)).total_seconds()
    out["created_at"] = created["at"]
    out["last_measured_completed_at"] = by_step[last]["step_completed"]["at"]
    out["mean_ms_per_step"] = span / len(measured) * 1000
    # Where a step's time goes, between the events it writes (each stamp is taken inside its transaction,
    # after the read, so a boundary includes the previous commit and the next begin+read).
    phases: dict[str, list[float]] = {"dispatch": [], "claim_to_model_response": [], "model_response_to_tool_result": [],
                                      "tool_result_to_commit": []}
    prev_end = _at(created)
    for s in measured:
        k = by_step[s]
        if all(x in k for x in ("step_started", "model_response", "tool_result", "step_completed")):
            phases["dispatch"].append((_at(k["step_started"]) - prev_end).total_seconds() * 1000)
            phases["claim_to_model_response"].append((_at(k["model_response"]) - _at(k["step_started"])).total_seconds() * 1000)
            phases["model_response_to_tool_result"].append(
                (_at(k["tool_result"]) - _at(k["model_response"])).total_seconds() * 1000)
            phases["tool_result_to_commit"].append((_at(k["step_completed"]) - _at(k["tool_result"])).total_seconds() * 1000)
        prev_end = _at(k["step_completed"])
    out["phases_ms_mean"] = {name: mean(v) for name, v in phases.items()}
    return out


def _cpu_seconds(stack: Any) -> dict[str, float]:
    """CPU time (user + system, seconds) each of the stack's processes has used, its children included, by
    name, from ``/proc`` (Linux; empty elsewhere). On a small machine the emulators and the functions share
    the cores: where a step's CPU goes says how much of its wall time is waiting for one."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    out: dict[str, float] = {}
    for proc in stack.processes:
        tree, frontier = {proc.popen.pid}, [proc.popen.pid]
        while frontier:
            kids = [pid for pid, parent in parents.items() if parent == frontier[-1]]
            frontier.pop()
            frontier += [k for k in kids if k not in tree]
            tree.update(kids)
        out[proc.name] = out.get(proc.name, 0.0) + sum(used.get(pid, 0.0) for pid in tree)
    return out


def _probe_gemini(base_url: str, n: int = 30) -> float:
    """Mean round trip of one small generateContent call to the Gemini emulator (raw HTTP, keep-alive):
    the model's share of a step on this stack."""
    import httpx

    body = {"systemInstruction": {"parts": [{"text": "You are a ticker. Call tick until told to stop."}]},
            "contents": [{"role": "user", "parts": [{"text": "tick 5"}]}]}
    times = []
    with httpx.Client(base_url=base_url, headers={"x-goog-api-key": "local-emulator-key"}, timeout=10) as http:
        for _ in range(n):
            t = time.perf_counter()
            http.post("/v1beta/models/gemini-2.5-flash-lite:generateContent", json=body).raise_for_status()
            times.append((time.perf_counter() - t) * 1000)
    return mean(sorted(times)[: n - n // 10])  # drop the slowest tenth (first connection, GC)


def run(*, single_steps: int = 100, concurrent_runs: int = 4, concurrent_steps: int = 20,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    from agex.cli.client import Client
    from agex.dev.emulators.gcloud import free_port
    from agex.dev.stack import Stack, StackConfig

    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="agex-bench-stack-"))
    stack = Stack(StackConfig(api_port=free_port(), workdir=workdir))
    result: dict[str, Any] = {"system": "agent-executor, full local stack",
                              "components": "Firestore + Pub/Sub emulators (SDK), Cloud Tasks + Gemini emulators, "
                                            "api + step functions under functions-framework/gunicorn"}
    try:
        t = time.perf_counter()
        stack.start()
        result["stack_start_seconds"] = time.perf_counter() - t
        progress(f"  stack up in {result['stack_start_seconds']:.1f}s at {stack.api_url}")
        client = Client(stack.api_url, "dev-token", timeout=60)
        timeout = 240.0

        # warm-up: the functions import lazily, the first requests build their clients, the JVMs JIT
        progress("  warm-up run: tick 20")
        warm = client.start_run("ticker", "tick 20")
        _watch(client, warm["run_id"], 20, 120)

        progress(f"  single run: tick {single_steps}")
        cpu_before = _cpu_seconds(stack)
        started = client.start_run("ticker", f"tick {single_steps}")
        t = time.perf_counter()
        watched = _watch(client, started["run_id"], single_steps, timeout)
        cpu_after = _cpu_seconds(stack)
        single = _analyse(client, started["run_id"], single_steps, watched)
        single["client_seconds"] = time.perf_counter() - t
        # over the whole single run (its answer step too), per measured step
        single["cpu_ms_per_step"] = {name: round((cpu_after.get(name, 0.0) - spent) * 1000 / single_steps, 1)
                                     for name, spent in cpu_before.items()}
        result["single"] = single
        progress(f"  single: {single.get('mean_ms_per_step', float('nan')):.1f} ms/step, status {single['status']}"
                 f"{' (cancelled by the bench after its last step)' if single['cancelled_by_bench'] else ''}")

        progress(f"  {concurrent_runs} concurrent runs: tick {concurrent_steps}")
        runs: list[dict[str, Any]] = [{} for _ in range(concurrent_runs)]

        def one(i: int) -> None:
            c = Client(stack.api_url, "dev-token", timeout=60)
            rid = c.start_run("ticker", f"tick {concurrent_steps}")["run_id"]
            runs[i] = _analyse(c, rid, concurrent_steps, _watch(c, rid, concurrent_steps, timeout))

        t = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrent_runs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        ok = [r for r in runs if r.get("mean_ms_per_step")]
        if ok:
            first = min(datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) for r in ok)
            end = max(datetime.fromisoformat(r["last_measured_completed_at"].replace("Z", "+00:00")) for r in ok)
            steps_done = sum(r["steps_measured"] for r in ok)
            span = (end - first).total_seconds()
            result["concurrent"] = {
                "runs": concurrent_runs, "steps_each": concurrent_steps, "client_seconds": wall,
                "steps_measured": steps_done, "span_seconds": span,
                "throughput_steps_per_s": steps_done / span if span else None,
                "mean_ms_per_step_per_run": mean([r["mean_ms_per_step"] for r in ok]),
                "statuses": [r["status"] for r in runs], "per_run": runs}
            progress(f"  concurrent: {result['concurrent']['throughput_steps_per_s']:.1f} steps/s overall, "
                     f"{result['concurrent']['mean_ms_per_step_per_run']:.0f} ms/step within a run")
        else:
            result["concurrent"] = {"runs": concurrent_runs, "error": "no run completed its steps", "per_run": runs}
        result["gemini_emulator_round_trip_ms"] = _probe_gemini(stack.gemini_url)
    finally:
        stack.stop()
        result["seconds_total"] = time.perf_counter() - t_start
        shutil.rmtree(workdir, ignore_errors=True)
    return result
