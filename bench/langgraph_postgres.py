"""LangGraph on Postgres: the loop of part 2 (``bench/langgraph_sqlite.py``) with ``PostgresSaver``.

The same ``StateGraph`` over ``messages: Annotated[list, add_messages]``: a ``model`` node (the zero-latency
script: an ``AIMessage`` with one ``tick`` call carrying the 1000-character pad, or the final answer) and a
``tools`` node running the ticker agent's own ``tick``. ``PostgresSaver`` (langgraph-checkpoint-postgres) on
a throwaway server (``bench.postgres``) over one connection, ``durability="sync"``.

``PostgresSaver`` keeps the checkpoint itself as JSONB in ``checkpoints`` and each channel's value, per
version, as a blob in ``checkpoint_blobs``: a superstep that changes ``messages`` writes the whole list
again. Per step (``model`` superstep + ``tools`` superstep): wall time between the ends of consecutive
``tools`` supersteps, and the rows and bytes added to the three tables, read back after the run:
- a checkpoint row belongs to the superstep in its metadata;
- a blob to the first checkpoint that lists its (channel, version) in ``channel_versions``;
- a pending write to the superstep after the checkpoint it was made from.

Bytes are counted two ways: ``bytes_written``, the serialized payload (``octet_length`` of the checkpoint and
metadata JSON and of the blobs: what the client sent, the same measure as part 2's SQLite blob lengths); and
``stored_bytes``, what those columns take in the table (``pg_column_size``: after Postgres's TOAST
compression of large values, which the repeated pad makes very effective). Over the whole measured run: the
WAL it wrote and the transactions Postgres counted (``pg_stat_database``), per step.
"""

# No ``from __future__ import annotations`` here: StateGraph evaluates the hints of the local ``State``.

import json
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from bench.common import STEPS, dist_version, final_text, tick_args, trend, window_means

KEYS = ("wall_ms", "bytes_written", "rows_written", "stored_bytes", "checkpoint_bytes", "blob_bytes",
        "write_bytes", "checkpoint_rows", "blob_rows", "write_rows")


def ticker_graph(state: Any = None) -> tuple[Any, dict[str, int]]:
    """The graph of part 2, uncompiled, and the dict whose ``"steps"`` says when the model answers. ``state``: the
    graph's state type (default: ``messages`` with ``add_messages``)."""
    from langchain_core.messages import AIMessage, ToolMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    from agex.tools import ToolContext
    from examples.ticker_agent import tick

    class State(TypedDict):
        messages: Annotated[list, add_messages]

    target = {"steps": STEPS}

    def model(state: Any) -> dict[str, Any]:
        steps = target["steps"]
        last = 0
        for message in reversed(state["messages"]):
            if isinstance(message, ToolMessage):
                last = int(json.loads(str(message.content))["n"])
                break
        n = last + 1
        if n > steps:
            return {"messages": [AIMessage(content=final_text(steps))]}
        return {"messages": [AIMessage(content="", tool_calls=[
            {"name": "tick", "args": tick_args(n), "id": f"call-{n}", "type": "tool_call"}])]}

    def tools(state: Any) -> dict[str, Any]:
        out = []
        for call in state["messages"][-1].tool_calls:
            step = int(call["args"]["n"])
            outcome = tick.call(call["args"], ToolContext(tenant="bench", run_id="lg", step=step, call_id=call["id"],
                                                          idempotency_key=f"lg:{step}:{call['id']}"))
            out.append(ToolMessage(content=json.dumps(outcome.output), tool_call_id=call["id"], name=call["name"]))
        return {"messages": out}

    def route(state: Any) -> str:
        return "tools" if state["messages"][-1].tool_calls else END

    builder = StateGraph(state or State)
    builder.add_node("model", model)
    builder.add_node("tools", tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder, target


def _stream(graph: Any, steps: int, thread: str, on_tools: Callable[[float], None] | None = None) -> int:
    """Run the graph to its answer; ``on_tools(t)`` at the end of each ``tools`` superstep. Returns the model
    supersteps seen."""
    from langchain_core.messages import HumanMessage

    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 2 * steps + 10}
    models = 0
    for chunk in graph.stream({"messages": [HumanMessage(content=f"tick {steps} padded")]}, config,
                              stream_mode="updates", durability="sync"):
        now = time.perf_counter()
        if "tools" in chunk and on_tools:
            on_tools(now)
        elif "model" in chunk:
            models += 1
    return models


def attribute(conn: Any, thread: str) -> dict[str, Any]:
    """Rows and bytes of ``thread`` in the three tables, by superstep (see the module's docstring)."""
    cps = conn.execute(
        "SELECT checkpoint_id, (metadata->>'step')::int, checkpoint->'channel_versions', "
        "octet_length(checkpoint::text) + octet_length(metadata::text), "
        "pg_column_size(checkpoint) + pg_column_size(metadata) "
        "FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''", (thread,)).fetchall()
    per: dict[int, dict[str, int]] = {}

    def add(step: int, **kv: int) -> None:
        d = per.setdefault(step, {})
        for k, v in kv.items():
            d[k] = d.get(k, 0) + v

    superstep_of: dict[str, int] = {}
    blob_owner: dict[tuple[str, str], int] = {}
    for cid, step, versions, nbytes, stored in sorted(cps, key=lambda r: (r[1], r[0])):
        superstep_of[cid] = step
        add(step, checkpoint_rows=1, checkpoint_bytes=nbytes, stored_bytes=stored)
        for channel, version in (versions or {}).items():
            blob_owner.setdefault((channel, str(version)), step)
    unattributed = 0
    for channel, version, nbytes, stored in conn.execute(
            "SELECT channel, version, coalesce(octet_length(blob), 0), coalesce(pg_column_size(blob), 0) "
            "FROM checkpoint_blobs WHERE thread_id = %s AND checkpoint_ns = ''", (thread,)).fetchall():
        step = blob_owner.get((channel, version))
        if step is None:
            unattributed += 1
            continue
        add(step, blob_rows=1, blob_bytes=nbytes, stored_bytes=stored)
    for cid, nbytes, stored in conn.execute(
            "SELECT checkpoint_id, octet_length(blob), pg_column_size(blob) FROM checkpoint_writes "
            "WHERE thread_id = %s AND checkpoint_ns = ''", (thread,)).fetchall():
        # a write made while running superstep s+1 is stored against the checkpoint of superstep s
        add(superstep_of[cid] + 1, write_rows=1, write_bytes=nbytes, stored_bytes=stored)
    totals: dict[str, int] = {}
    for d in per.values():
        for k, v in d.items():
            totals[k] = totals.get(k, 0) + v
    return {"by_superstep": per, "totals": totals, "unattributed_blobs": unattributed,
            "supersteps": sorted(s for s, d in per.items() if d.get("checkpoint_rows"))}


def run(steps: int = STEPS, *, warmup_steps: int = 5, progress: Callable[[str], None] = print) -> dict[str, Any]:
    import langgraph
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    from bench import postgres

    builder, target = ticker_graph()
    t_start = time.perf_counter()
    with postgres.postgres_server(progress) as pg:
        dsn = pg.create_database("langgraph")
        # as PostgresSaver.from_conn_string opens it: autocommit, no server-side prepares, dict rows
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=0, row_factory=dict_row) as conn:  # type: ignore[arg-type]
            saver = PostgresSaver(conn)
            saver.setup()
            graph = builder.compile(checkpointer=saver)
            progress(f"  warm-up run ({warmup_steps} steps)")
            target["steps"] = warmup_steps
            _stream(graph, warmup_steps, "warmup")
            target["steps"] = steps
            time.sleep(1.2)  # the checkpointer's backend reports its transactions a second after its last
            with psycopg.connect(dsn, autocommit=True) as probe:
                wal0, db0 = postgres.wal_bytes(probe), postgres.database_bytes(probe)
                xact0 = postgres.xact_commits(probe)
            progress(f"  measured run: {steps} tool steps + 1 answer step")
            tool_ends: list[float] = []

            def on_tools(now: float) -> None:
                tool_ends.append(now)
                if len(tool_ends) % 100 == 0:
                    progress(f"  langgraph/postgres: {len(tool_ends)} steps, {now - t0:.1f}s")

            t0 = time.perf_counter()
            model_steps = _stream(graph, steps, "bench", on_tools)
            elapsed = time.perf_counter() - t0
            state = graph.get_state({"configurable": {"thread_id": "bench"}}).values
        with psycopg.connect(dsn, autocommit=True) as probe:
            wal1, db1 = postgres.wal_bytes(probe), postgres.database_bytes(probe)
            found = attribute(probe, "bench")
            postgres.settle_stats(probe)
            tables = postgres.table_stats(probe)
            xacts = postgres.xact_commits(probe) - xact0
        version = pg.version

    per = found["by_superstep"]
    # Supersteps: -1 the input, 0 the START node, then model (2k-1) and tools (2k) of agent step k.
    rows = []
    for k in range(1, len(tool_ends) + 1):
        ss = (2 * k - 1, 2 * k)
        row: dict[str, Any] = {"step": k, "wall_ms": (tool_ends[k - 1] - (tool_ends[k - 2] if k > 1 else t0)) * 1000}
        for key in ("checkpoint_rows", "blob_rows", "write_rows", "checkpoint_bytes", "blob_bytes", "write_bytes",
                    "stored_bytes"):
            row[key] = sum(per.get(s, {}).get(key, 0) for s in ss)
        row["rows_written"] = row["checkpoint_rows"] + row["blob_rows"] + row["write_rows"]
        row["bytes_written"] = row["checkpoint_bytes"] + row["blob_bytes"] + row["write_bytes"]
        rows.append(row)
    tool_rows = [r for r in rows if r["step"] <= steps]
    messages = state["messages"]
    t = found["totals"]
    return {
        "system": "langgraph",
        "version": getattr(langgraph, "__version__", None) or dist_version("langgraph"),
        "checkpointer": f"PostgresSaver (langgraph-checkpoint-postgres {dist_version('langgraph-checkpoint-postgres')}, "
                        f"psycopg {dist_version('psycopg')}) on {version}, one connection, durability='sync'",
        "state": "messages: Annotated[list, add_messages]",
        "steps": steps,
        "pad_chars": len(tick_args(0)["pad"]),
        "operations_definition": "rows_written = rows added to checkpoints + checkpoint_blobs + checkpoint_writes",
        "bytes_definition": "bytes_written = octet_length of the checkpoint and metadata JSON and of the blobs "
                            "(serialized payload); stored_bytes = pg_column_size of the same columns (after "
                            "TOAST compression)",
        "superstep_layout_ok": found["supersteps"] == list(range(-1, 2 * steps + 2)),
        "unattributed_blobs": found["unattributed_blobs"],
        "run": {"status": "succeeded" if messages and messages[-1].content == final_text(steps) else "unexpected",
                "result": messages[-1].content if messages else None, "model_steps": model_steps,
                "tool_steps": len(tool_ends), "messages_in_state": len(messages), "seconds": elapsed,
                "wal_bytes": wal1 - wal0, "database_growth_bytes": db1 - db0,
                # the checkpointer's connection is in autocommit: each statement is a transaction (a pipeline
                # sends several in one round trip)
                "transactions_per_step": xacts / steps},
        "totals": {**t, "rows_written": t.get("checkpoint_rows", 0) + t.get("blob_rows", 0) + t.get("write_rows", 0),
                   "bytes_written": t.get("checkpoint_bytes", 0) + t.get("blob_bytes", 0) + t.get("write_bytes", 0)},
        "tables_after": tables,
        "summary": window_means(tool_rows, KEYS, steps),
        "summary_full_window": window_means(tool_rows, KEYS, steps, baseline=range(11, 21)),
        "wall_trend": trend(tool_rows, "wall_ms"),
        "per_step": rows,
        "seconds_total": time.perf_counter() - t_start,
    }

