"""A readable timeline of a run's decisions, one line per event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def short(value: Any, limit: int = 90) -> str:
    """``value`` on one line, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", "="))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def arguments(args: dict[str, Any]) -> str:
    """A call's arguments as ``name=value, ...``."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())


def line(event: dict[str, Any]) -> str | None:
    """The timeline line for an event, or None for bookkeeping events not worth a line."""
    kind, data, step = event["kind"], event["data"], event["step"]
    prefix = f"step {step:>3}  " if step else "          "
    if kind == "run_created":
        return f"{prefix}started   agent {data['agent']} v{data['agent_version']} for {data['principal']}: {short(data['input'])}"
    if kind == "step_started":
        return f"{prefix}retry     attempt {data['attempt']} resumes the step" if data.get("resumed") else None
    if kind == "model_response":
        usage = data["usage"]
        cost = f"{usage['input_tokens']} in / {usage['output_tokens']} out tokens, ${usage['cost_usd']:.6f}"
        calls = [p["function_call"] for p in data["message"]["parts"] if "function_call" in p]
        said = "; ".join(f"{c['name']}({arguments(c.get('args', {}))})" for c in calls) if calls else \
            short("".join(p.get("text", "") for p in data["message"]["parts"]))
        verb = "decides" if calls else "answers"
        return f"{prefix}model     {verb} {short(said)}  [{cost}]"
    if kind == "tool_result":
        status = "ok" if data["ok"] else "error"
        return f"{prefix}tool      {data['name']} -> {status} {short(data['output'])}"
    if kind == "run_finished":
        detail = short(data["result"]) if data.get("result") else (data.get("error") or {}).get("message", "")
        return f"{prefix}finished  {data['status']}: {detail}"
    if kind == "run_cancelled":
        return f"{prefix}cancelled by {data['by']}"
    if kind == "run_migrated":
        return f"{prefix}migrated  version {data['from_version']} -> {data['to_version']} ({data['rule']})"
    if kind == "sweep_reenqueued":
        return f"{prefix}recovered the sweep re-enqueued a lost step task"
    if kind == "approval_requested":
        approvers = ", ".join(data.get("approvers") or [])
        if data.get("kind") == "reconcile":
            return (f"{prefix}uncertain {data['name']} may or may not have run before a crash; a human decides: "
                    f"{data['approval_id']} (done, retry or fail; by {approvers or '?'})")
        return (f"{prefix}approval  {data['name']} waits for a human: {data['approval_id']} "
                f"(approvers {approvers or '?'}; expires {_time(data.get('expires_at'))})")
    if kind == "approval_decided":
        decision = data["decision"]
        who = f" by {data['by']}" if data.get("by") else ""
        edited = f", edited to {short(arguments(data['arguments']), 60)}" if data.get("arguments") else ""
        comment = f": {short(data['comment'])}" if data.get("comment") else ""
        return f"{prefix}{decision:<10}{data['approval_id']}{who}{edited}{comment}"
    if kind == "guard_verdict":
        where = f" {data['tool']}" if data.get("tool") else ""
        why = "; ".join(f"{v['guard']}" + (f": {v['reason']}" if v.get("reason") else "") for v in data["verdicts"])
        return f"{prefix}guard     {data['action']} {data['channel']}{where}: {short(why)}"
    if kind == "tool_deferred":
        why = f": {short(data['reason'])}" if data.get("reason") else ""
        return f"{prefix}deferred  {data['name']} did not run; retried at {_time(data.get('retry_at'))}{why}"
    if kind == "timer_set":
        why = f": {short(data['reason'])}" if data.get("reason") else ""
        return f"{prefix}waiting   until {_time(data.get('wake_at'))}{why}"
    return None


def _time(value: str | None) -> str:
    """An event's RFC 3339 time as ``2026-01-01 12:00:05 UTC``."""
    if not value:
        return "?"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value
