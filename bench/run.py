"""The benchmark of Agent Executor, in one run (see docs/performance.md).

    python -m bench.run            # or: python bench/run.py, or: make bench

1. per-step cost of one 500-step run on the Firestore emulator (the real StepRunner, in process);
2. the same loop on LangGraph with SqliteSaver;
3. the runtime's overhead per step on the full local stack (emulators + functions, over HTTP);
4. cold start of the function entry points;
5. the model layer: routing with circuit breakers, and budgets over the spend ledger, per step (Firestore emulator);
6. the peers on a real Postgres (a throwaway server the bench starts): the loop of part 2 on LangGraph with
   PostgresSaver, and as a DBOS durable workflow;
7. the platform floor: one hop of Cloud Tasks dispatch + one Firestore commit + one enqueue, on the emulators.

Prints a report and writes JSON to ``bench/results/<UTC timestamp>.json`` and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import STEPS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.2


def _say(msg: str) -> None:
    print(msg, flush=True)


def _part(name: str, fn: Any, results: dict[str, Any]) -> None:
    _say(f"\n== {name}")
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # one broken part must not lose the others' numbers
        traceback.print_exc()
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    _say(f"   ({time.perf_counter() - t:.1f}s)")


def _f(v: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _verdict(r: float | None) -> str:
    if r is None:
        return "n/a"
    return "flat" if r <= TARGET_RATIO else "GROWS"


def report(res: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    ag, lg = res.get("agex_firestore", {}), res.get("langgraph_sqlite", {})
    if "summary" in ag and "summary" in lg:
        steps = ag["steps"]
        add(f"\nPer-step cost of one {steps}-step run (each step: one tick call with a {ag['pad_chars']}-char pad, "
            f"echoed in its result; the same messages on both sides)")
        a, g = ag["summary"], lg["summary"]
        af, gf = ag["summary_full_window"], lg["summary_full_window"]
        head = f"{'':34}{'Agent Executor / Firestore emulator':>40}   {'LangGraph / SqliteSaver':>36}"
        add(head)
        add(f"{'':34}{'1-10':>12}{f'{steps - 9}-{steps}':>12}{'ratio':>16}   {'1-10':>10}{f'{steps - 9}-{steps}':>12}{'ratio':>14}")

        def row(label: str, ka: str, kg: str, fmt: str = ",.0f") -> None:
            ra, rg = a["ratio"].get(ka), g["ratio"].get(kg)
            add(f"{label:34}{_f(a['first'][ka], fmt):>12}{_f(a['last'][ka], fmt):>12}"
                f"{_f(ra, '.2f') + ' ' + _verdict(ra):>16}   {_f(g['first'][kg], fmt):>10}{_f(g['last'][kg], fmt):>12}"
                f"{_f(rg, '.2f') + ' ' + _verdict(rg):>14}")

        row("bytes written / step", "bytes_written", "bytes_written")
        row("operations / step (docs | rows)", "doc_ops", "rows_written", ",.1f")
        row("wall time / step (ms)", "wall_ms", "wall_ms", ",.1f")
        am, gm = a["ratio_median"]["wall_ms"], g["ratio_median"]["wall_ms"]
        add(f"{'  (medians)':34}{_f(a['first_median']['wall_ms'], '.1f'):>12}{_f(a['last_median']['wall_ms'], '.1f'):>12}"
            f"{_f(am, '.2f') + ' ' + _verdict(am):>16}   {_f(g['first_median']['wall_ms'], '.1f'):>10}"
            f"{_f(g['last_median']['wall_ms'], '.1f'):>12}{_f(gm, '.2f') + ' ' + _verdict(gm):>14}")
        for label, part in (("Agent Executor", ag), ("LangGraph", lg)):
            tr = part.get("wall_trend")
            if tr:
                add(f"  {label} wall ms/step, median per 50 steps: "
                    + " ".join(f"{b['median']:.1f}" for b in tr["bucket_medians"])
                    + f"; slope {tr['slope_per_100_steps']:+.2f} ms per 100 steps")
        add(f"  target: last/first <= {TARGET_RATIO}. Agent Executor operations = Firestore documents read + "
            f"written; LangGraph operations = rows added to checkpoints + writes.")
        add(f"  Agent Executor with steps 11-20 as baseline (context window full): bytes ratio "
            f"{_f(af['ratio']['bytes_written'], '.3f')}, operations ratio {_f(af['ratio']['doc_ops'], '.3f')}, "
            f"wall ratio {_f(af['ratio']['wall_ms'], '.2f')} (median {_f(af['ratio_median']['wall_ms'], '.2f')}); "
            f"LangGraph bytes ratio "
            f"{_f(gf['ratio']['bytes_written'], '.1f')}.")
        add(f"  Agent Executor per step at {steps - 9}-{steps}: {a['last']['reads']:.1f} reads, "
            f"{a['last']['writes']:.1f} writes, {a['last']['commits']:.1f} commits, {a['last']['queries']:.1f} queries; "
            f"model input {a['last']['model_input_messages']:.0f} messages / {a['last']['model_input_bytes']:,.0f} bytes. "
            f"LangGraph state at the end: {lg['run']['messages_in_state']} messages.")
        add(f"  Totals: Agent Executor {ag['totals']['bytes_written']:,} bytes in {ag['totals']['writes']:,} documents "
            f"({ag['run']['seconds']:.1f}s); LangGraph {lg['totals']['checkpoint_bytes'] + lg['totals']['write_bytes']:,} "
            f"bytes in {lg['totals']['checkpoint_rows'] + lg['totals']['write_rows']:,} rows, DB file "
            f"{lg['run']['db_file_bytes']:,} bytes ({lg['run']['seconds']:.1f}s).")
    ld = res.get("langgraph_sqlite_delta", {})
    if "summary" in ld:
        d = ld["summary"]
        rows = [r for r in ld["per_step"] if r["step"] <= ld["steps"]]
        peak = max(rows, key=lambda r: r["bytes_written"])
        last10 = sorted(r["bytes_written"] for r in rows[-10:])
        add(f"  LangGraph with its beta DeltaChannel for messages (not the default): {d['first']['bytes_written']:,.0f} "
            f"bytes/step at 1-10, {last10[len(last10) // 2]:,} (median) at {ld['steps'] - 9}-{ld['steps']}, plus a "
            f"snapshot of the whole history every 100 channel updates (50 steps): {peak['bytes_written']:,} bytes at "
            f"step {peak['step']}; mean at {ld['steps'] - 9}-{ld['steps']} {d['last']['bytes_written']:,.0f} "
            f"(ratio {_f(d['ratio']['bytes_written'], '.1f')}).")
    for key in ("agex_firestore", "langgraph_sqlite", "langgraph_sqlite_delta"):
        if "error" in res.get(key, {}):
            add(f"\n{key}: FAILED: {res[key]['error']}")
    add(peers_report(res))

    st = res.get("stack_overhead", {})
    if "single" in st:
        s = st["single"]
        add(f"\nFull local stack (ticker agent over HTTP; model emulator and tool ~0 ms): stack up in "
            f"{st['stack_start_seconds']:.1f}s")
        add(f"  one run, {s['steps_measured']} steps: {_f(s.get('mean_ms_per_step'), '.1f')} ms/step "
            f"(status {s['status']}{', cancelled by the bench after its last measured step' if s['cancelled_by_bench'] else ''})")
        if "phases_ms_mean" in s:
            p = s["phases_ms_mean"]
            add("  between events (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in p.items()))
        if s.get("cpu_ms_per_step"):
            cpu = sorted(s["cpu_ms_per_step"].items(), key=lambda kv: -kv[1])
            add(f"  CPU per step ({os.cpu_count()} cores, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in cpu if v >= 0.1)
                + f"; {sum(v for _, v in cpu):.1f} in all")
        c = st.get("concurrent", {})
        if "throughput_steps_per_s" in c:
            add(f"  {c['runs']} concurrent runs x {c['steps_each']} steps: {c['throughput_steps_per_s']:.1f} steps/s "
                f"overall, {c['mean_ms_per_step_per_run']:.1f} ms/step within a run")
        if "gemini_emulator_round_trip_ms" in st:
            add(f"  Gemini emulator raw round trip: {st['gemini_emulator_round_trip_ms']:.1f} ms")
        if ag.get("summary"):
            add(f"  for comparison, in process (part 1): {ag['mean_wall_ms_all_steps']:.1f} ms/step on the Firestore "
                f"emulator alone, {ag['engine_alone']['mean_wall_ms_all_steps']:.2f} ms/step on in-memory ports "
                f"(the engine's own CPU)")
        if not s.get("ended_by_model"):
            add(f"  NOTE: the Gemini emulator did not end the loop at step {s['requested_steps'] + 1} (last tick n seen "
                f"{s.get('tick_n_seen')}); the bench cancelled the run after measuring its steps")
    elif "error" in st:
        add(f"\nstack_overhead: FAILED: {st['error']}")

    if "model_layer" in res:
        from bench import model_layer

        add(model_layer.report(res["model_layer"]))

    cs = res.get("cold_start", {})
    if "results" in cs:
        add(f"\nCold start (fresh interpreter, best of {cs['repeat']}; ms)")
        add(f"{'':56}{'import':>9}{'handler':>9}{'process':>9}   google.genai loaded")
        for name, r in cs["results"].items():
            if "error" in r:
                add(f"{name:56}FAILED: {r['error'][-200:]}")
                continue
            genai = "yes" if r["genai_loaded_after_import"] else "no"
            if "genai_loaded_after_handler" in r:
                genai += f" (after handler built: {'yes' if r['genai_loaded_after_handler'] else 'no'})"
            add(f"{name:56}{r['import_ms_best']:>9.0f}{_f(r.get('handler_build_ms_best')):>9}"
                f"{r['process_ms_best']:>9.0f}   {genai}")
    return "\n".join(lines)


PEERS = (
    # (results key, label, key of the documents or rows it writes per step)
    ("agex_firestore", "Agent Executor / Firestore emulator", "writes"),
    ("langgraph_sqlite", "LangGraph / SqliteSaver", "rows_written"),
    ("langgraph_postgres", "LangGraph / PostgresSaver", "rows_written"),
    ("dbos_postgres", "DBOS workflow / Postgres", "rows_written"),
)


def peers_report(res: dict[str, Any]) -> str:
    """The same loop on each system side by side, per step at the first and the last 10 steps; and the floor of
    one serverless hop."""
    lines: list[str] = []
    add = lines.append
    have = [(k, label, ops) for k, label, ops in PEERS if "summary" in res.get(k, {})]
    if have and any(k in ("langgraph_postgres", "dbos_postgres") for k, *_ in have):
        steps = res[have[0][0]]["steps"]
        add(f"\nThe same {steps}-step loop on each system (per step; steps 1-10 -> {steps - 9}-{steps})")
        add(f"{'':38}{'bytes written':>24}{'rows | docs written':>22}{'wall ms, mean':>20}{'wall ms, median':>20}")
        for key, label, ops in have:
            sm = res[key]["summary"]
            f, la, fm, lm = sm["first"], sm["last"], sm["first_median"], sm["last_median"]
            add(f"{label:38}{_f(f['bytes_written']) + ' -> ' + _f(la['bytes_written']):>24}"
                f"{_f(f[ops], '.1f') + ' -> ' + _f(la[ops], '.1f'):>22}"
                f"{_f(f['wall_ms'], '.1f') + ' -> ' + _f(la['wall_ms'], '.1f'):>20}"
                f"{_f(fm['wall_ms'], '.1f') + ' -> ' + _f(lm['wall_ms'], '.1f'):>20}")
        add("  Written: Firestore documents (Agent Executor), rows added (the others). Bytes: the serialized "
            "payload each system sends (Firestore's document size formula; blob, JSON and text lengths on SQLite "
            "and Postgres).")
        if "summary" in res.get("agex_firestore", {}):
            a = res["agex_firestore"]["summary"]["last"]
            add(f"  Agent Executor also reads {a['reads']:.0f} documents per step (its context window) in "
                f"{a['commits']:.0f} commits and {a['queries']:.0f} query; the others read their state in process.")
        lp, dp = res.get("langgraph_postgres", {}), res.get("dbos_postgres", {})
        if "summary" in lp:
            s = lp["summary"]
            add(f"  LangGraph/Postgres stored after TOAST compression: {_f(s['first']['stored_bytes'])} -> "
                f"{_f(s['last']['stored_bytes'])} bytes/step; WAL {lp['run']['wal_bytes'] / max(lp['steps'], 1):,.0f} "
                f"bytes/step and {_f(lp['run'].get('transactions_per_step'), '.1f')} transactions/step over the run; "
                f"{lp['run']['seconds']:.1f}s, {lp['run']['messages_in_state']} messages in the state at the end")
        if "summary" in dp:
            s = dp["summary"]
            add(f"  DBOS: {s['last']['rows_written']:.0f} operation_outputs rows/step (model + tool), "
                f"{_f(s['last']['stored_bytes'])} bytes/step stored with keys; workflow status/input/output rows "
                f"once per run; WAL {dp['run']['wal_bytes'] / max(dp['steps'], 1):,.0f} bytes/step and "
                f"{_f(dp['run'].get('transactions_per_step'), '.1f')} transactions/step over the run (its background "
                f"polling taken out); {dp['run']['seconds']:.1f}s, status {dp['run']['status']}")
    fl = res.get("floor", {})
    if "per_hop_ms" in fl:
        h, c, r = fl["per_hop_ms"], fl["commit_ms"], fl["commit_to_next_ms"]
        add(f"\nPlatform floor, one serverless hop on the emulators ({fl['intervals']} hops: Cloud Tasks dispatch "
            f"-> function -> 1 Firestore commit -> enqueue the next)")
        add(f"  per hop: median {_f(h['median'], '.1f')} ms, p90 {_f(h['p90'], '.1f')} ms, mean {_f(h['mean'], '.1f')} "
            f"ms (commit median {_f(c['median'], '.1f')} ms; commit -> next hop's entry median {_f(r['median'], '.1f')}"
            f" ms, of which the enqueue's round trip {_f(fl['enqueue_ms']['median'], '.1f')} ms)")
        ag = res.get("agex_firestore", {})
        st = res.get("stack_overhead", {}).get("single", {})
        if ag.get("summary") and h["median"]:
            add(f"  for scale: an Agent Executor step is {ag['summary']['last_median']['wall_ms']:.1f} ms (median, "
                f"steps {ag['steps'] - 9}-{ag['steps']}) in process on the Firestore emulator"
                + (f", {st['mean_ms_per_step']:.1f} ms on the full stack" if st.get("mean_ms_per_step") else "")
                + f"; the in-process step is {ag['summary']['last_median']['wall_ms'] / h['median']:.1f}x the "
                  "floor's median hop")
        sh = fl.get("step_shaped", {}).get("per_hop_ms", {})
        if sh.get("median"):
            add(f"  a step's I/O alone (a read, two commits, a 37 KB task; nothing else): median "
                f"{_f(sh['median'], '.1f')} ms, {sh['median'] / h['median']:.2f}x the floor's hop: the least a step "
                "of this protocol costs here"
                + (f"; the full-stack step is {st['mean_ms_per_step'] / sh['median']:.1f}x that"
                   if st.get("mean_ms_per_step") else ""))
    for key in ("langgraph_postgres", "dbos_postgres", "floor"):
        if "error" in res.get(key, {}):
            add(f"\n{key}: FAILED: {res[key]['error']}")
    return "\n".join(lines)


def source_state() -> dict[str, Any]:
    """The commit the bench ran on and the tracked files that differed from it: results taken on a work tree
    with changes in progress say so."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20,
                              check=True).stdout.rstrip("\n")

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "modified": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS, help="steps of the long runs (default 500)")
    ap.add_argument("--stack-steps", type=int, default=100, help="steps of the single run on the stack")
    ap.add_argument("--concurrent", type=int, default=4, help="concurrent runs on the stack")
    ap.add_argument("--concurrent-steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="cold-start repetitions (best of)")
    ap.add_argument("--model-steps", type=int, default=200, help="steps of each variant of the model-layer part")
    ap.add_argument("--floor-hops", type=int, default=200, help="hops of the platform floor's chain")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["agex", "langgraph", "langgraph-postgres", "dbos", "floor", "stack", "model", "cold",
                             "memory-recall", "memory-cost"],
                    help="leave a part out (repeatable)")
    ap.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = ap.parse_args(argv)

    from bench import (
        agex_firestore,
        cold_start,
        dbos_postgres,
        floor,
        langgraph_postgres,
        langgraph_sqlite,
        model_layer,
        stack_overhead,
    )

    if args.steps < STEPS:
        _say(f"note: --steps {args.steps} is below {STEPS}; the results are not those of docs/performance.md")

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())},
        "source": source_state(),
        "parameters": {"steps": args.steps, "stack_steps": args.stack_steps, "concurrent": args.concurrent,
                       "concurrent_steps": args.concurrent_steps, "cold_start_repeat": args.repeat,
                       "model_layer_steps": args.model_steps, "floor_hops": args.floor_hops,
                       "target_ratio": TARGET_RATIO},
    }
    if "agex" not in args.skip:
        _part("agex_firestore", lambda: agex_firestore.run(args.steps, progress=_say), results)
    if "langgraph" not in args.skip:
        _part("langgraph_sqlite", lambda: langgraph_sqlite.run(args.steps, progress=_say), results)
        _part("langgraph_sqlite_delta", lambda: langgraph_sqlite.run(args.steps, delta=True, progress=_say), results)
    if "langgraph-postgres" not in args.skip:
        _part("langgraph_postgres", lambda: langgraph_postgres.run(args.steps, progress=_say), results)
    if "dbos" not in args.skip:
        _part("dbos_postgres", lambda: dbos_postgres.run(args.steps, progress=_say), results)
    if "floor" not in args.skip:
        _part("floor", lambda: floor.run(args.floor_hops, progress=_say), results)
    if "stack" not in args.skip:
        _part("stack_overhead", lambda: stack_overhead.run(
            single_steps=args.stack_steps, concurrent_runs=args.concurrent,
            concurrent_steps=args.concurrent_steps, progress=_say), results)
    if "model" not in args.skip:
        _part("model_layer", lambda: model_layer.run(args.model_steps, progress=_say), results)
    if "cold" not in args.skip:
        _part("cold_start", lambda: cold_start.run(args.repeat), results)
    if "memory-recall" not in args.skip:
        from bench import memory_recall

        _part("memory_recall", lambda: memory_recall.run(progress=_say), results)
        _say(memory_recall.report(results["memory_recall"]))
    if "memory-cost" not in args.skip:
        from bench import memory_cost

        _part("memory_cost", lambda: memory_cost.run(progress=_say), results)
        _say(memory_cost.report(results["memory_cost"]))
    results["seconds_total"] = time.perf_counter() - t0
    results["machine"]["load_avg_at_end"] = list(os.getloadavg())

    _say(report(results))
    _say(f"\ntotal {results['seconds_total']:.0f}s")
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = started.strftime("%Y%m%dT%H%M%SZ") + ".json"
        text = json.dumps(results, indent=1, default=str)
        for target in (RESULTS / name, RESULTS / "latest.json"):
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(text)
            tmp.replace(target)
        _say(f"wrote {RESULTS / name} and {RESULTS / 'latest.json'}")
    failed = [k for k in ("agex_firestore", "langgraph_sqlite", "langgraph_sqlite_delta", "langgraph_postgres",
                          "dbos_postgres", "floor", "stack_overhead", "model_layer", "cold_start", "memory_recall")
              if "error" in results.get(k, {})]
    if "model_layer" in results and not model_layer.ok(results["model_layer"]):
        failed.append("model_layer")
    if "memory_cost" in results and not memory_cost.ok(results["memory_cost"]):
        failed.append("memory_cost")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
