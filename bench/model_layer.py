"""Part 5: what the model layer adds to a step: routing with circuit breakers, and budgets over the spend ledger.

    python -m bench.model_layer [--steps 200] [--warmup 20] [--no-save]

The loop of part 1 (the real ``StepRunner`` in process over ``FirestoreCheckpointStore`` on a Firestore
emulator, the ``ticker`` agent, a zero-latency scripted model) in five variants, each with a store of its own
(its own collection prefix, so its own ledger):

- ``no_ledger``: the spend entry left out of the model response's commit, as the store wrote before budgets:
  the reference for the ledger's write;
- ``plain``: ``ticker`` as declared: no fallbacks, no rules, no budgets (the entry is written, nothing reads it);
- ``routed``: ``ticker`` with two fallbacks and the rules ``small_input`` (evaluated, not matching past the first
  steps) and ``asks`` (matching: every step is routed to its model and the decision recorded), with
  ``FirestoreBreakers`` as the runtime wires them when an agent has fallbacks; every model answers;
- ``budgets``: ``plain`` with four ``refuse`` budgets (user/day, agent/day, tenant/month, deployment/month; caps
  never reached) over ``FirestoreSpendLedger``, reads reused for 5 s (the default ``budget_cache_seconds``);
- ``budgets_nocache``: the same, ``budget_cache_seconds=0``: every step reads every budget.

The variants run interleaved, one step of each in turn (the order rotating), so the load of a shared machine
falls on all of them alike. Per step: wall time, the store's ``stats`` (documents read and written, commits,
queries) and the requests of the breakers and the ledger, counted by a wrapper of their Firestore client
(``bench.common.counting``). An aggregation query is billed one read per 1,000 index entries it covers (at
least one); every query here covers the variant's whole ledger (one tenant, user and agent). The same variants
run on in-memory ports first: the engine's own CPU time, without storage latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.agex_firestore import script  # noqa: E402
from bench.common import Tally, counting, firestore_emulator, in_process_runtime, mean, percentile  # noqa: E402

STEPS = 200
WARMUP = 20
RESULTS = Path(__file__).resolve().parent / "results"
READ_USD_PER_100K = 0.06
WRITE_USD_PER_100K = 0.18
"""Firestore (Standard edition) list prices per 100,000 document reads and writes, multi-region, 2026-11."""
VARIANTS = ("no_ledger", "plain", "routed", "budgets", "budgets_nocache")
FALLBACKS = ("gemini-2.0-flash-lite", "gemini-2.5-flash")
BREAKER_GET, AGGREGATE_GET = "DocumentReference.get", "AggregationQuery.get"
STEP_KEYS = ("wall_ms", "reads", "writes", "bytes_written", "commits", "queries", "retries", "breaker_reads",
             "breaker_ms", "aggregation_queries", "aggregation_ms", "aggregation_billed_reads", "billed_reads",
             "doc_writes")


@dataclasses.dataclass
class _Variant:
    name: str
    runtime: Any
    store: Any
    tally: Tally
    model: Any
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    head: Any = None
    created: dict[str, Any] = dataclasses.field(default_factory=dict)


def _budgets() -> list[Any]:
    from agex.core.spend import Budget

    return [Budget.model_validate({"name": f"{scope}-{window}", "scope": scope, "window": window,
                                   "max_cost_usd": 1_000_000.0, "max_tokens": 10**12})
            for scope, window in (("user", "day"), ("agent", "day"), ("tenant", "month"), ("deployment", "month"))]


def _given(port: Any) -> Callable[[], Any]:
    return lambda: port


def _routed(agent: Any) -> Any:
    from agex.core.agent import Agent, ModelRule

    return Agent.model_validate({**dict(agent), "fallbacks": FALLBACKS, "model_rules": (
        ModelRule(when="small_input", model="gemini-2.0-flash-lite", max_input_tokens=500),
        ModelRule(when="asks", model="gemini-2.0-flash", pattern=r"\btick\b"))})


def _variants(client: Any | None) -> list[_Variant]:
    """The five variants over the Firestore ``client``, or on in-memory ports when it is None (the engine's own
    CPU time, without storage latency)."""
    from agex.adapters.inmemory.breakers import InMemoryBreakers
    from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
    from agex.adapters.inmemory.spend_ledger import InMemorySpendLedger
    from agex.core.clock import SystemClock
    from agex.testing import FunctionModel
    from examples.ticker_agent import agent as ticker

    store_cls: type[Any] = InMemoryCheckpointStore
    if client is not None:
        from agex.adapters.gcp.firestore_breakers import FirestoreBreakers
        from agex.adapters.gcp.firestore_spend import FirestoreSpendLedger
        from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

        store_cls = FirestoreCheckpointStore

    class NoLedgerStore(store_cls):  # type: ignore[valid-type,misc]
        """The store as it was before budgets: the model response's commit without its spend entry."""

        def update_run(self, tenant: str, run_id: str, mutate: Any) -> Any:
            return super().update_run(tenant, run_id, lambda h: dataclasses.replace(mutate(h), spend=()))

    clock = SystemClock()
    out = []
    for name in VARIANTS:
        prefix = f"m{uuid.uuid4().hex[:8]}_"
        cls = NoLedgerStore if name == "no_ledger" else store_cls
        store = cls(client, prefix=prefix) if client is not None else cls()
        tally = Tally()
        ports: dict[str, Callable[[], Any]]
        if client is not None:
            counted = counting(client, tally)
            ports = {"breakers": functools.partial(FirestoreBreakers, counted, prefix=prefix),
                     "spend": functools.partial(FirestoreSpendLedger, counted, prefix=prefix)}
        else:
            ports = {"breakers": _given(InMemoryBreakers()), "spend": _given(InMemorySpendLedger(store))}
        model = FunctionModel(script(0, []))  # each run sets its own script
        settings: dict[str, Any] = {}
        if name.startswith("budgets"):
            settings = {"budgets": _budgets(), "budget_cache_seconds": 0.0 if name == "budgets_nocache" else 5.0}
        agent = _routed(ticker) if name == "routed" else ticker
        runtime = in_process_runtime([agent], model, store, clock=clock, settings=settings, **ports)
        out.append(_Variant(name, runtime, store, tally, model))
    return out


_NO_STATS = {"reads": 0, "writes": 0, "bytes_written": 0, "commits": 0, "queries": 0, "retries": 0}


def _stats(store: Any) -> dict[str, int]:
    """The store's counters since the last call (the in-memory store has none)."""
    reset = getattr(store, "reset_stats", None)
    return reset() if reset is not None else dict(_NO_STATS)


def _interleaved(variants: list[_Variant], steps: int, label: str, progress: Callable[[str], None]) -> float:
    """One run of ``steps`` tool steps (and the answer) in each variant, one step of each in turn; returns the
    seconds the loop took."""
    from agex.engine.decisions import Delivery
    from agex.engine.runs import CreateRunRequest
    from agex.ports.auth import Caller

    caller = Caller("bench", "bench@example.com")
    for v in variants:
        seen: list[dict[str, Any]] = []
        v.model.fn = script(steps, seen)
        v.rows, v.failures = [], []
        _stats(v.store)
        v.tally.reset()
        t = time.perf_counter()
        v.head = v.runtime.service.start(caller, "ticker", CreateRunRequest(input=f"tick {steps} padded")).run
        calls, ms = v.tally.reset()
        v.created = {**_stats(v.store), "wall_ms": (time.perf_counter() - t) * 1000,
                     "aggregation_queries": calls[AGGREGATE_GET], "firestore_calls": dict(calls)}

    def handler(v: _Variant) -> Callable[[Any, int], bool]:
        def handle(task: Any, attempt: int) -> bool:
            entries = v.model.calls  # the ledger's entries so far: each model call wrote one
            _stats(v.store)
            v.tally.reset()
            t = time.perf_counter()
            try:
                result = v.runtime.runner.run(Delivery.of(task, attempt, "bench"))
            except Exception as e:  # a retried delivery would be a different measurement: note it
                v.failures.append(f"step {task.step} attempt {attempt}: {type(e).__name__}: {e}")
                return attempt >= 3
            wall = (time.perf_counter() - t) * 1000
            st = _stats(v.store)
            calls, ms = v.tally.reset()
            aggregations = calls[AGGREGATE_GET]
            billed = aggregations * max(1, math.ceil(entries / 1000))
            other_writes = sum(n for k, n in calls.items() if k.rsplit(".", 1)[1] in ("create", "update", "set"))
            v.rows.append({"step": task.step, "outcome": result.outcome.value, "wall_ms": wall,
                           **{k: st[k] for k in ("reads", "writes", "bytes_written", "commits", "queries", "retries")},
                           "breaker_reads": calls[BREAKER_GET], "breaker_ms": ms[BREAKER_GET],
                           "aggregation_queries": aggregations, "aggregation_ms": ms[AGGREGATE_GET],
                           "aggregation_billed_reads": billed,
                           "billed_reads": st["reads"] + calls[BREAKER_GET] + billed,
                           "doc_writes": st["writes"] + other_writes,
                           "other_calls": {k: n for k, n in calls.items() if k not in (BREAKER_GET, AGGREGATE_GET)}})
            return True
        return handle

    handlers = {v.name: handler(v) for v in variants}
    t0 = time.perf_counter()
    turn = 0
    while True:
        busy = [v for v in variants if v.runtime.queue.pending()]
        if not busy:
            break
        k = turn % len(busy)
        for v in busy[k:] + busy[:k]:
            v.runtime.queue.deliver_due(datetime.now(UTC), handlers[v.name])
        turn += 1
        if turn % 50 == 0:
            progress(f"  {label}: {turn} steps of each, {time.perf_counter() - t0:.1f}s")
    return time.perf_counter() - t0


def _summary(v: _Variant, steps: int, seconds: float) -> dict[str, Any]:
    tool = [r for r in v.rows if r["step"] <= steps]
    wall = [r["wall_ms"] for r in tool]
    per_step = {k: mean([float(r[k]) for r in tool]) for k in STEP_KEYS}
    final = v.store.get_run(v.head.tenant, v.head.run_id)
    client = getattr(v.store, "client", None)
    entries = (client.collection(f"{v.store.prefix}spend").count().get()[0][0].value if client is not None
               else len(v.store.spend_entries()))
    aggregations = sum(r["aggregation_queries"] for r in v.rows)
    return {
        "steps_measured": len(tool), "status": final.status.value if final else None,
        "steps_committed": final.step if final else None, "failures": v.failures,
        "wall_ms": {"p50": percentile(wall, 50), "p95": percentile(wall, 95), "mean": mean(wall)},
        "per_step": per_step,
        "ms_per_aggregation_query": (sum(r["aggregation_ms"] for r in v.rows) / aggregations) if aggregations else None,
        "aggregation_queries_per_second": aggregations / seconds,
        "breaker_reads_per_second": sum(r["breaker_reads"] for r in v.rows) / seconds,
        "ledger_entries_after_both_runs": entries,
        "create_run": v.created,
        "rows": v.rows,
    }


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` minus ``b``: wall time (p50, p95, mean) and each per-step count."""
    return {**{f"wall_ms_{q}": a["wall_ms"][q] - b["wall_ms"][q] for q in ("p50", "p95", "mean")},
            **{k: a["per_step"][k] - b["per_step"][k] for k in STEP_KEYS if k != "wall_ms"}}


def _usd_per_1000_steps(reads: float, writes: float) -> float:
    return 1000 * (reads * READ_USD_PER_100K + writes * WRITE_USD_PER_100K) / 100_000


def run(steps: int = STEPS, *, warmup_steps: int = WARMUP, progress: Callable[[str], None] = print) -> dict[str, Any]:
    t_start = time.perf_counter()
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())}
    progress(f"  engine alone (in-memory ports): {warmup_steps} warm-up + {steps} steps of each variant")
    in_memory = _variants(None)
    _interleaved(in_memory, warmup_steps, "in memory, warm-up", progress)
    mem_seconds = _interleaved(in_memory, steps, "in memory", progress)
    mem = {v.name: {k: x for k, x in _summary(v, steps, mem_seconds).items()
                    if k in ("steps_measured", "status", "failures", "wall_ms", "ledger_entries_after_both_runs")}
           for v in in_memory}
    with firestore_emulator(progress) as client:
        variants = _variants(client)
        progress(f"  warm-up: {warmup_steps} steps of each variant (gRPC channel, the emulator's JIT, the guards)")
        _interleaved(variants, warmup_steps, "warm-up", progress)
        warm_failures = {v.name: v.failures for v in variants if v.failures}
        progress(f"  measured: {steps} steps of each of {len(variants)} variants, interleaved")
        seconds = _interleaved(variants, steps, "measured", progress)
        res = {v.name: _summary(v, steps, seconds) for v in variants}
    d = {"routing": _diff(res["routed"], res["plain"]),
         "ledger_write": _diff(res["plain"], res["no_ledger"]),
         "budgets": _diff(res["budgets"], res["plain"]),
         "budgets_vs_no_ledger": _diff(res["budgets"], res["no_ledger"]),
         "budgets_nocache": _diff(res["budgets_nocache"], res["plain"]),
         "cache_saves": _diff(res["budgets_nocache"], res["budgets"])}
    extra = d["budgets_vs_no_ledger"]
    cost = {name: _usd_per_1000_steps(d[name]["billed_reads"], d[name]["doc_writes"])
            for name in ("routing", "ledger_write", "budgets", "budgets_vs_no_ledger", "budgets_nocache")}
    base = res["no_ledger"]["per_step"]
    return {
        "store": "FirestoreCheckpointStore, FirestoreBreakers, FirestoreSpendLedger on the Firestore emulator "
                 "(gRPC, 127.0.0.1); zero-latency FunctionModel",
        "agent": "ticker (context_window_steps=10)", "steps": steps, "warmup_steps": warmup_steps,
        "variants": list(VARIANTS), "routed_agent": {"fallbacks": list(FALLBACKS), "model_rules": [
            "small_input <= 500 tokens -> gemini-2.0-flash-lite", r"asks \btick\b -> gemini-2.0-flash"]},
        "budgets": [b.model_dump() for b in _budgets()],
        "definitions": "per step: means over the measured tool steps; reads/writes/commits/queries: the checkpoint "
                       "store's; breaker_reads: circuit documents read; aggregation_billed_reads: 1 per 1,000 "
                       "ledger entries covered, at least 1, per query; billed_reads = reads + breaker_reads + "
                       "aggregation_billed_reads; doc_writes: every document written",
        "interleaved_loop_seconds": seconds,
        "warmup_failures": warm_failures,
        "results": res,
        "differences": d,
        "engine_alone": {"results": mem, "differences": {
            name: {f"wall_ms_{q}": mem[a]["wall_ms"][q] - mem[b]["wall_ms"][q] for q in ("p50", "p95", "mean")}
            for name, a, b in (("routing", "routed", "plain"), ("ledger_write", "plain", "no_ledger"),
                               ("budgets", "budgets", "plain"), ("budgets_nocache", "budgets_nocache", "plain"))}},
        "target": {"extra_document_writes_per_step": extra["doc_writes"], "extra_commits_per_step": extra["commits"],
                   "met": extra["doc_writes"] <= 1.0 and extra["commits"] <= 0.0},
        "prices": {"read_usd_per_100k": READ_USD_PER_100K, "write_usd_per_100k": WRITE_USD_PER_100K,
                   "as_of": "2026-11", "note": "Firestore Standard edition, multi-region list prices"},
        "usd_per_1000_steps_extra": cost,
        "usd_per_1000_steps_baseline": _usd_per_1000_steps(base["billed_reads"], base["doc_writes"]),
        "machine": {**machine, "load_avg_at_end": list(os.getloadavg())},
        "seconds_total": time.perf_counter() - t_start,
    }


def report(res: dict[str, Any]) -> str:
    if "results" not in res:
        return f"\nmodel_layer: FAILED: {res.get('error')}"
    r, d = res["results"], res["differences"]
    lines = [f"\nThe model layer: {res['steps']} steps of each variant, interleaved (ms and counts per step)",
             f"{'':18}{'p50':>8}{'p95':>8}{'reads':>8}{'writes':>8}{'commits':>8}{'bytes':>8}"
             f"{'breaker':>8}{'aggr q':>8}{'billed':>8}"]
    for name in VARIANTS:
        s, p = r[name], r[name]["per_step"]
        lines.append(f"{name:18}{s['wall_ms']['p50']:>8.1f}{s['wall_ms']['p95']:>8.1f}{p['reads']:>8.1f}"
                     f"{p['doc_writes']:>8.2f}{p['commits']:>8.2f}{p['bytes_written']:>8,.0f}{p['breaker_reads']:>8.3f}"
                     f"{p['aggregation_queries']:>8.3f}{p['billed_reads']:>8.2f}")
    for name, label in (("routing", "routed - plain"), ("ledger_write", "plain - no_ledger"),
                        ("budgets", "budgets - plain"), ("budgets_nocache", "budgets_nocache - plain"),
                        ("cache_saves", "budgets_nocache - budgets")):
        x = d[name]
        lines.append(f"  {label:28} p50 {x['wall_ms_p50']:+.1f} ms, p95 {x['wall_ms_p95']:+.1f} ms; "
                     f"{x['doc_writes']:+.2f} writes, {x['commits']:+.2f} commits, {x['billed_reads']:+.2f} billed reads")
    m = res["engine_alone"]["differences"]
    lines.append("  engine alone (in-memory ports), p50 difference: " + ", ".join(
        f"{name} {m[name]['wall_ms_p50']:+.2f} ms" for name in m)
                 + f" (plain: {res['engine_alone']['results']['plain']['wall_ms']['p50']:.2f} ms)")
    t = res["target"]
    lines.append(f"  budgets on vs the store without the ledger: {t['extra_document_writes_per_step']:+.2f} document "
                 f"writes, {t['extra_commits_per_step']:+.2f} commits per step: target (<= +1 write, no commit) "
                 f"{'met' if t['met'] else 'MISSED'}")
    b = r["budgets"]
    lines.append(f"  aggregation queries: {b['aggregation_queries_per_second']:.2f}/s with the 5 s cache, "
                 f"{r['budgets_nocache']['aggregation_queries_per_second']:.2f}/s without; "
                 f"{_f(r['budgets_nocache']['ms_per_aggregation_query'])} ms each on the emulator")
    failed = {f"{where}{k}": s["failures"] or s["status"]
              for where, part in (("", r), ("in memory: ", res["engine_alone"]["results"]))
              for k, s in part.items() if s["failures"] or s["status"] != "succeeded"}
    if failed:
        lines.append(f"  FAILURES: {failed}")
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def save(part: dict[str, Any]) -> list[Path]:
    """Write the part to ``results/model_layer.json`` and into ``results/latest.json`` (as its ``model_layer``,
    the other parts' results kept)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    whole = json.loads(latest.read_text()) if latest.exists() else {}
    whole["model_layer"] = part
    written = []
    for target, data in ((RESULTS / "model_layer.json", part), (latest, whole)):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS, help=f"measured steps of each variant (default {STEPS})")
    ap.add_argument("--warmup", type=int, default=WARMUP, help=f"warm-up steps of each variant (default {WARMUP})")
    ap.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = ap.parse_args(argv)
    started = datetime.now(UTC)
    part = {"started_at": started.isoformat(timespec="seconds"), **run(args.steps, warmup_steps=args.warmup,
                                                                       progress=lambda m: print(m, flush=True))}
    print(report(part))
    print(f"\ntotal {part['seconds_total']:.0f}s")
    if not args.no_save:
        print("wrote " + " and ".join(str(p) for p in save(part)))
    return 0 if ok(part) else 1


def ok(part: dict[str, Any]) -> bool:
    """Every run of every variant succeeded at its answer step, without a failed delivery."""
    parts = (part.get("results", {}), part.get("engine_alone", {}).get("results", {}))
    return "error" not in part and all(not s["failures"] and s["status"] == "succeeded"
                                       for p in parts for s in p.values())


if __name__ == "__main__":
    sys.exit(main())
