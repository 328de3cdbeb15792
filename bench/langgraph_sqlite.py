"""Part 2: the same loop on LangGraph with its SQLite checkpointer.

A ``StateGraph`` over ``messages: Annotated[list, add_messages]`` with a ``model`` node (the same
zero-latency script: an ``AIMessage`` with one ``tick`` call carrying the same 1000-character pad, or the
final answer after the last step) and a ``tools`` node that runs the ticker agent's own ``tick`` tool and
returns its output as a ``ToolMessage``. ``SqliteSaver`` on a file in a temporary directory;
``durability="sync"`` so each step is on disk before the next starts, as in Agent Executor.

Per step (``model`` superstep + ``tools`` superstep): wall time between the ends of consecutive ``tools``
supersteps, and the bytes and rows the checkpointer added, read back from the ``checkpoints`` and
``writes`` tables after the run (each row carries its checkpoint id, whose metadata names its superstep),
so the measuring does not disturb the timing.
"""

# No ``from __future__ import annotations`` here: StateGraph evaluates the hints of the local ``State``.

import contextlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from bench.common import STEPS, final_text, tick_args, trend, window_means
from bench.langgraph_postgres import ticker_graph


def run(steps: int = STEPS, *, warmup_steps: int = 5, delta: bool = False,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``delta=True``: the messages channel is LangGraph's (beta) ``DeltaChannel`` over ``add_messages``,
    which stores each update and a full snapshot every 100 updates instead of the whole list each time."""
    import functools

    import langgraph
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph.message import add_messages

    if delta:
        from langgraph.channels.delta import DeltaChannel

        def fold(state: list, writes: list) -> list:
            merge: Any = add_messages
            return functools.reduce(merge, writes, state or [])

        class DeltaState(TypedDict):
            messages: Annotated[list, DeltaChannel(fold)]

        State: Any = DeltaState
    else:
        class PlainState(TypedDict):
            messages: Annotated[list, add_messages]

        State = PlainState

    builder, target = ticker_graph(State)
    target["steps"] = steps

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agex-bench-lg-") as tmp:
        # warm-up: first compile/stream costs, on a database of its own
        progress(f"  warm-up run ({warmup_steps} steps)")
        target["steps"] = warmup_steps
        with contextlib.closing(sqlite3.connect(os.path.join(tmp, "warmup.sqlite"), check_same_thread=False)) as wc:
            warm_saver = SqliteSaver(wc)
            warm_saver.setup()
            for _ in builder.compile(checkpointer=warm_saver).stream(
                    {"messages": [HumanMessage(content=f"tick {warmup_steps} padded")]},
                    {"configurable": {"thread_id": "warmup"}, "recursion_limit": 2 * warmup_steps + 10},
                    stream_mode="updates", durability="sync"):
                pass
        target["steps"] = steps
        progress(f"  measured run: {steps} tool steps + 1 answer step")
        path = os.path.join(tmp, "checkpoints.sqlite")
        conn = sqlite3.connect(path, check_same_thread=False)
        saver = SqliteSaver(conn)
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": 2 * steps + 10}
        file_before = os.path.getsize(path)

        tool_ends: list[float] = []
        model_count = 0
        t0 = time.perf_counter()
        started = t0
        for chunk in graph.stream({"messages": [HumanMessage(content=f"tick {steps} padded")]}, config,
                                  stream_mode="updates", durability="sync"):
            now = time.perf_counter()
            if "tools" in chunk:
                tool_ends.append(now)
                if len(tool_ends) % 100 == 0:
                    progress(f"  langgraph: {len(tool_ends)} steps, {now - t0:.1f}s")
            elif "model" in chunk:
                model_count += 1
        elapsed = time.perf_counter() - t0
        state = graph.get_state(config).values

        # Which superstep wrote what: checkpoint metadata carries "step" (-1 = the input, then one per
        # superstep); pending writes belong to the checkpoint they were made from.
        cur = conn.cursor()
        checkpoints = cur.execute(
            "SELECT checkpoint_id, length(checkpoint), length(metadata), metadata FROM checkpoints").fetchall()
        superstep_of = {}
        cp_bytes: dict[int, int] = {}
        cp_rows: dict[int, int] = {}
        for cid, lc, lm, meta in checkpoints:
            s = int(json.loads(meta)["step"])
            superstep_of[cid] = s
            cp_bytes[s] = cp_bytes.get(s, 0) + lc + lm
            cp_rows[s] = cp_rows.get(s, 0) + 1
        w_bytes: dict[int, int] = {}
        w_rows: dict[int, int] = {}
        for cid, lv in cur.execute("SELECT checkpoint_id, length(value) FROM writes").fetchall():
            # a write made while running superstep s+1 is stored against the checkpoint of superstep s
            s = superstep_of[cid] + 1
            w_bytes[s] = w_bytes.get(s, 0) + lv
            w_rows[s] = w_rows.get(s, 0) + 1
        supersteps_seen = sorted(cp_rows)
        totals = {"checkpoint_rows": len(checkpoints), "checkpoint_bytes": sum(cp_bytes.values()),
                  "write_rows": sum(w_rows.values()), "write_bytes": sum(w_bytes.values())}
        conn.close()  # folds the WAL into the file
        file_after = os.path.getsize(path)

    # Supersteps: -1 the input, 0 the START node, then model (2k-1) and tools (2k) of agent step k.
    rows = []
    for k in range(1, len(tool_ends) + 1):
        supersteps = (2 * k - 1, 2 * k)
        b = sum(cp_bytes.get(s, 0) + w_bytes.get(s, 0) for s in supersteps)
        r = sum(cp_rows.get(s, 0) + w_rows.get(s, 0) for s in supersteps)
        prev = tool_ends[k - 2] if k > 1 else started
        rows.append({"step": k, "wall_ms": (tool_ends[k - 1] - prev) * 1000, "bytes_written": b, "rows_written": r,
                     "checkpoint_bytes": sum(cp_bytes.get(s, 0) for s in supersteps),
                     "write_bytes": sum(w_bytes.get(s, 0) for s in supersteps)})
    keys = ("wall_ms", "bytes_written", "rows_written", "checkpoint_bytes", "write_bytes")
    summary = window_means([r for r in rows if r["step"] <= steps], keys, steps)
    steady = window_means([r for r in rows if r["step"] <= steps], keys, steps, baseline=range(11, 21))
    messages = state["messages"]
    return {
        "system": "langgraph",
        "version": getattr(langgraph, "__version__", None) or _dist_version("langgraph"),
        "checkpointer": f"SqliteSaver (langgraph-checkpoint-sqlite {_dist_version('langgraph-checkpoint-sqlite')}) "
                        "on a file in a temp dir, durability='sync'",
        "state": "messages: Annotated[list, DeltaChannel(add_messages folded)] (beta)" if delta
                 else "messages: Annotated[list, add_messages]",
        "steps": steps,
        "pad_chars": len(tick_args(0)["pad"]),
        "operations_definition": "rows_written = rows added to the checkpoints and writes tables",
        "superstep_layout_ok": supersteps_seen == list(range(-1, 2 * steps + 2)),
        "run": {"status": "succeeded" if messages and messages[-1].content == final_text(steps) else "unexpected",
                "result": messages[-1].content if messages else None, "model_steps": model_count,
                "tool_steps": len(tool_ends), "messages_in_state": len(messages), "seconds": elapsed,
                "db_file_bytes": file_after - file_before},
        "totals": totals,
        "summary": summary,
        "summary_full_window": steady,
        "wall_trend": trend([r for r in rows if r["step"] <= steps], "wall_ms"),
        "per_step": rows,
        "seconds_total": time.perf_counter() - t_start,
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
