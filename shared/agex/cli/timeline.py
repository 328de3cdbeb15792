"""A readable timeline of a run's decisions, one line per event."""

from __future__ import annotations

import json
from typing import Any


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", "="))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())


def line(event: dict[str, Any]) -> str | None:
    """The timeline line for an event, or None for bookkeeping events not worth a line."""
    kind, data, step = event["kind"], event["data"], event["step"]
    prefix = f"step {step:>3}  " if step else "          "
    if kind == "run_created":
        return f"{prefix}started   agent {data['agent']} v{data['agent_version']} for {data['principal']}: {_short(data['input'])}"
    if kind == "step_started":
        return f"{prefix}retry     attempt {data['attempt']} resumes the step" if data.get("resumed") else None
    if kind == "model_response":
        usage = data["usage"]
        cost = f"{usage['input_tokens']} in / {usage['output_tokens']} out tokens, ${usage['cost_usd']:.6f}"
        calls = [p["function_call"] for p in data["message"]["parts"] if "function_call" in p]
        said = "; ".join(f"{c['name']}({_args(c.get('args', {}))})" for c in calls) if calls else \
            _short("".join(p.get("text", "") for p in data["message"]["parts"]))
        verb = "decides" if calls else "answers"
        return f"{prefix}model     {verb} {_short(said)}  [{cost}]"
    if kind == "tool_result":
        status = "ok" if data["ok"] else "error"
        return f"{prefix}tool      {data['name']} -> {status} {_short(data['output'])}"
    if kind == "run_finished":
        detail = _short(data["result"]) if data.get("result") else (data.get("error") or {}).get("message", "")
        return f"{prefix}finished  {data['status']}: {detail}"
    if kind == "run_cancelled":
        return f"{prefix}cancelled by {data['by']}"
    if kind == "sweep_reenqueued":
        return f"{prefix}recovered the sweep re-enqueued a lost step task"
    return None
