"""DBOS on Postgres: the same loop as a DBOS durable workflow, its system database on a throwaway server.

One ``@DBOS.workflow()`` loops until the model answers; each step is two ``@DBOS.step()`` calls:
- ``model``: the zero-latency script, given the conversation so far; it returns an AIMessage-like dict with
  one ``tick`` call carrying the 1000-character pad (or the final answer after the last step);
- ``tool``: the ticker agent's own ``tick``, returning a ToolMessage-like dict that echoes the pad.

DBOS checkpoints each step's output, one row in ``operation_outputs`` (pickled, base64: its default
serializer), and the workflow's status and input once per run. It does not store a step's inputs, so the
conversation the workflow passes to the model is in memory only, rebuilt on recovery by replaying the
recorded outputs. Configured with the DSN alone: no Conductor, no DBOS Cloud, no OTLP export; this DBOS
version has no HTTP admin server.

Per step: wall time between the ends of consecutive ``tool`` steps (stamped by the workflow), and the rows
and bytes DBOS added, read back from ``operation_outputs`` after the run (``function_id`` gives the order):
``bytes_written`` is the ``output`` text's length (the serialized payload, the measure of the SQLite part),
``stored_bytes`` the stored size of the whole row (``pg_column_size``, keys and stamps included, after TOAST
compression). Over the whole measured workflow: the WAL written and the transactions Postgres counted, less
those of DBOS's background polling (its rate measured while idle just before), per step.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

from bench.common import STEPS, dist_version, final_text, tick_args, trend, window_means

KEYS = ("wall_ms", "bytes_written", "rows_written", "stored_bytes", "model_bytes", "tool_bytes")
SCHEMA = "dbos"
IDLE_S = 2.0

_MARKS: list[float] = []
"""``time.perf_counter()`` at the end of each tool step of the running workflow (a bench-side probe, not
workflow state: it is not replayed on recovery)."""


@functools.cache
def _workflow() -> Callable[[str, int], str]:
    """The workflow and its steps, registered with DBOS once per process (its registry is global)."""
    from dbos import DBOS

    from agex.tools import ToolContext
    from examples.ticker_agent import tick

    @DBOS.step(name="bench.model")
    def model(messages: list[dict[str, Any]], steps: int) -> dict[str, Any]:
        last = 0
        for message in reversed(messages):
            if message["role"] == "tool":
                last = int(json.loads(message["content"])["n"])
                break
        n = last + 1
        if n > steps:
            return {"role": "assistant", "content": final_text(steps), "tool_calls": []}
        return {"role": "assistant", "content": "",
                "tool_calls": [{"name": "tick", "args": tick_args(n), "id": f"call-{n}", "type": "tool_call"}]}

    @DBOS.step(name="bench.tool")
    def tool(call: dict[str, Any]) -> dict[str, Any]:
        step = int(call["args"]["n"])
        outcome = tick.call(call["args"], ToolContext(tenant="bench", run_id="dbos", step=step, call_id=call["id"],
                                                      idempotency_key=f"dbos:{step}:{call['id']}"))
        return {"role": "tool", "content": json.dumps(outcome.output), "tool_call_id": call["id"], "name": call["name"]}

    @DBOS.workflow(name="bench.loop")
    def loop(task: str, steps: int) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
        while True:
            reply = model(messages, steps)
            messages.append(reply)
            if not reply["tool_calls"]:
                return str(reply["content"])
            for call in reply["tool_calls"]:
                messages.append(tool(call))
            _MARKS.append(time.perf_counter())

    return loop


def run(steps: int = STEPS, *, warmup_steps: int = 5, progress: Callable[[str], None] = print) -> dict[str, Any]:
    import logging

    import psycopg
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    from bench import postgres

    loop = _workflow()
    t_start = time.perf_counter()
    with postgres.postgres_server(progress) as pg:
        dsn = pg.create_database("dbos_sys")
        config: DBOSConfig = {
            "name": "agex-bench",
            "system_database_url": dsn.replace("postgresql://", "postgresql+psycopg://", 1),
            "sys_db_pool_size": 8,
            "log_level": "WARNING",
            "enable_otlp": False,
            "run_migrations": True,
        }
        DBOS(config=config)
        try:
            DBOS.launch()
            progress(f"  warm-up workflow ({warmup_steps} steps)")
            with SetWorkflowID("bench-warmup"):
                loop(f"tick {warmup_steps} padded", warmup_steps)
            # Transactions: Postgres's count around the measured workflow, less the rate of DBOS's background
            # polling measured while idle just before (backends report their counts about a second late).
            time.sleep(1.2)
            with psycopg.connect(dsn, autocommit=True) as probe:
                xact_idle = postgres.xact_commits(probe)
            time.sleep(IDLE_S)
            with psycopg.connect(dsn, autocommit=True) as probe:
                xact0 = postgres.xact_commits(probe)
                wal0, db0 = postgres.wal_bytes(probe), postgres.database_bytes(probe)
            idle_rate = (xact0 - xact_idle) / IDLE_S
            progress(f"  measured workflow: {steps} tool steps + 1 answer step")
            _MARKS.clear()
            t0 = time.perf_counter()
            with SetWorkflowID("bench-measured"):
                result = loop(f"tick {steps} padded", steps)
            elapsed = time.perf_counter() - t0
            marks = list(_MARKS)
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=5)
            # DBOS leaves its logger at the configured level; the bench's other parts log as before
            logging.getLogger("dbos").setLevel(logging.WARNING)
        with psycopg.connect(dsn, autocommit=True) as probe:
            wal1, db1 = postgres.wal_bytes(probe), postgres.database_bytes(probe)
            ops = probe.execute(
                f"SELECT function_id, function_name, coalesce(octet_length(output), 0), "
                f"coalesce(octet_length(error), 0), pg_column_size(o.*) "
                f"FROM {SCHEMA}.operation_outputs o WHERE workflow_uuid = %s ORDER BY function_id",
                ("bench-measured",)).fetchall()
            per_run = {}
            for table in ("workflow_status", "workflow_input", "workflow_output"):
                row = probe.execute(f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {SCHEMA}.{table} t "
                                    "WHERE workflow_uuid = %s", ("bench-measured",)).fetchone() or (0, 0)
                per_run[table] = {"rows": int(row[0]), "stored_bytes": int(row[1])}
            status = probe.execute(f"SELECT status FROM {SCHEMA}.workflow_status WHERE workflow_uuid = %s",
                                   ("bench-measured",)).fetchone()
            postgres.settle_stats(probe)
            tables = postgres.table_stats(probe, SCHEMA)
            xacts = postgres.xact_commits(probe) - xact0 - idle_rate * elapsed

    # each agent step k: its model step, then its tool step (function ids in call order)
    rows: list[dict[str, Any]] = []
    pairs = [ops[i:i + 2] for i in range(0, len(ops), 2)]
    for k, pair in enumerate(pairs, start=1):
        names = [p[1] for p in pair]
        if k > len(marks):  # the answer step: a model step alone
            break
        prev = marks[k - 2] if k > 1 else t0
        rows.append({"step": k, "wall_ms": (marks[k - 1] - prev) * 1000, "rows_written": len(pair),
                     "bytes_written": sum(p[2] + p[3] for p in pair), "stored_bytes": sum(p[4] for p in pair),
                     "model_bytes": pair[0][2], "tool_bytes": pair[1][2] if len(pair) > 1 else 0,
                     "functions": names})
    layout_ok = (len(ops) == 2 * steps + 1
                 and all(r["functions"] == ["bench.model", "bench.tool"] for r in rows)
                 and ops[-1][1] == "bench.model")
    tool_rows = [r for r in rows if r["step"] <= steps]
    return {
        "system": "dbos",
        "version": dist_version("dbos"),
        "store": f"DBOS system database on {pg.version} (SQLAlchemy {dist_version('sqlalchemy')}, psycopg "
                 f"{dist_version('psycopg')}), default serializer (pickle + base64)",
        "steps": steps,
        "pad_chars": len(tick_args(0)["pad"]),
        "operations_definition": "rows_written = rows added to dbos.operation_outputs (one per DBOS step: model, "
                                 "tool); the workflow's status, input and output rows are per run",
        "bytes_definition": "bytes_written = length of the serialized output (and error) text; stored_bytes = "
                            "pg_column_size of the whole row (after TOAST compression)",
        "step_layout_ok": layout_ok,
        "run": {"status": status[0] if status else None, "result": result, "tool_steps": len(marks),
                "operations": len(ops), "seconds": elapsed, "wal_bytes": wal1 - wal0,
                "database_growth_bytes": db1 - db0, "per_run_rows": per_run,
                "transactions_per_step": xacts / steps, "idle_transactions_per_s": idle_rate},
        "totals": {"rows_written": len(ops), "bytes_written": sum(p[2] + p[3] for p in ops),
                   "stored_bytes": sum(p[4] for p in ops)},
        "tables_after": tables,
        "summary": window_means(tool_rows, KEYS, steps),
        "summary_full_window": window_means(tool_rows, KEYS, steps, baseline=range(11, 21)),
        "wall_trend": trend(tool_rows, "wall_ms"),
        "per_step": rows,
        "seconds_total": time.perf_counter() - t_start,
    }

