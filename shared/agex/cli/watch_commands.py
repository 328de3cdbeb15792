"""``agex metrics``, ``agex alerts`` and ``agex usage``: behaviour, drift and spend from the command line."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from agex.cli.client import Client

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def add_parsers(sub: Any) -> None:
    metrics = sub.add_parser(
        "metrics", help="an agent's behavioural metrics per version",
        description="Outcomes, steps, tokens, cost, latency, tool calls, approvals, guardrail verdicts and watched "
                    "values of the tenant's runs of AGENT that ended in the period, per version (and per time "
                    "bucket with --bucket).")
    metrics.add_argument("agent")
    metrics.add_argument("--version", help="only this version")
    _period(metrics)
    metrics.add_argument("--bucket", choices=["hour", "day", "none"], default="none",
                         help="also show each time bucket (default: the period's totals only)")
    metrics.add_argument("--json", action="store_true", help="print the API's JSON")

    alerts = sub.add_parser("alerts", help="list drift alerts, newest first")
    alerts.add_argument("--agent", help="only this agent's")
    alerts.add_argument("--since", help="only alerts detected after: ISO time or 30m, 24h, 7d ago")
    alerts.add_argument("--json", action="store_true", help="print the API's JSON")

    usage = sub.add_parser(
        "usage", help="tokens, cost and calls, grouped",
        description="Usage of the tenant's runs that ended in the period, grouped by any of tenant, user, agent, "
                    "version, model, tool, day, hour (not both model and tool). Model calls a crash left "
                    "unrecorded are estimated in their own columns (docs/observability.md).")
    usage.add_argument("--group-by", default="agent", help="comma-separated (default agent)")
    usage.add_argument("--agent", help="only this agent's runs")
    _period(usage)
    usage.add_argument("--json", action="store_true", help="print the API's JSON")


def run(args: argparse.Namespace) -> int | None:
    commands = {"metrics": _metrics, "alerts": _alerts, "usage": _usage}
    command = commands.get(args.command)
    return command(args) if command is not None else None


def _period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="start: ISO time or 30m, 24h, 7d ago (default 7d)")
    parser.add_argument("--to", dest="end", help="end: ISO time or 30m, 24h, 7d ago (default now)")


def when(value: str | None) -> str | None:
    """An ISO time for the API from an ISO time or a span ago (``30m``, ``24h``, ``7d``)."""
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - ago).isoformat()
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def _client(args: argparse.Namespace) -> Client:
    return Client(args.api, args.token)


def _metrics(args: argparse.Namespace) -> int:
    report = _client(args).metrics(args.agent, version=args.version, bucket=args.bucket,
                                   **{"from": when(args.start), "to": when(args.end)})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['agent']}: runs that ended {report['from']} .. {report['to']}"
          + (" (truncated: narrow the period)" if report["truncated"] else ""))
    if not report["versions"]:
        print("  no runs ended in this period")
    for v in report["versions"]:
        fingerprints = v["fingerprints"]
        flag = "  (CHANGED WITHOUT A VERSION BUMP: several fingerprints)" if len(fingerprints) > 1 else ""
        print(f"\nversion {v['version']} {', '.join(fingerprints)}{flag}")
        for b in ([v["total"]] if args.bucket == "none" else v["buckets"]):
            if args.bucket != "none":
                print(f"  {b['start']}")
            for line in describe(b):
                print(f"    {line}")
    return 0


def describe(b: dict[str, Any]) -> list[str]:
    def dist(d: dict[str, Any], unit: str = "") -> str:
        if not d["n"]:
            return "-"
        return f"mean {d['mean']:g}{unit}, p50 {d['p50']:g}{unit}, p90 {d['p90']:g}{unit}"

    def counts(c: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "-"

    lines = [f"runs        {b['runs']}: {counts(b['outcomes'])}",
             f"errors      {counts(b['errors'])}",
             f"steps       {dist(b['steps'])}",
             f"tokens      {dist(b['tokens'])}",
             f"cost        total ${b['cost_usd']['total'] or 0:.6f}; {dist(b['cost_usd'], '')}",
             f"latency     {dist(b['latency_s'], ' s')} (active {dist(b['active_s'], ' s')})",
             f"tool calls  {counts(b['tool_calls'])}" + (f" (errors: {counts(b['tool_errors'])})" if b["tool_errors"] else ""),
             f"approvals   {counts({k: v for k, v in b['approvals'].items() if v})}",
             f"guardrails  {counts(b['guard_verdicts'])}"]
    lines += [f"{name:<11} {dist(d)}" for name, d in b["watched"].items()]
    lines += [f"score {name:<5} {dist(d)}" for name, d in b["scores"].items()]
    if b["unrecorded_model_calls"]:
        lines.append(f"unrecorded  {b['unrecorded_model_calls']} model calls (estimated; see docs/observability.md)")
    return lines


def _alerts(args: argparse.Namespace) -> int:
    alerts = _client(args).alerts(agent=args.agent, since=when(args.since), page_size="100")
    if args.json:
        print(json.dumps(alerts, indent=2))
        return 0
    if not alerts:
        print("no drift alerts")
    for item in alerts:
        print(alert_text(item["alert"]))
    return 0


def alert_text(a: dict[str, Any]) -> str:
    """One drift alert, as ``agex alerts`` and ``agex dev`` print it."""
    base, cur = a["baseline"], a["current"]

    def side(s: dict[str, Any]) -> str:
        if s.get("mean") is not None:
            return f"mean {s['mean']:g}, p90 {s['p90']:g} (n={s['n']})"
        if s.get("rate") is not None:
            return f"rate {s['rate']:.3f} (n={s['n']})"
        return f"{s.get('counts')} (n={s['n']})"

    examples = ", ".join(e["run_id"] for e in a.get("examples", [])) or "-"
    return (f"{a['detected_at']}  DRIFT {a['agent']}@{a['version']} {a['metric']}: "
            f"{side(base)} in version {a['baseline_version']} -> {side(cur)}; {a['test']} "
            f"p={a['p_value']:.2g} < {a['threshold']:.2g}; examples: {examples}")


def _usage(args: argparse.Namespace) -> int:
    report = _client(args).usage(group_by=args.group_by, agent=args.agent,
                                 **{"from": when(args.start), "to": when(args.end)})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    group_by = report["group_by"]
    rows = [[*group_by, "runs", "model calls", "tokens in", "cached", "tokens out", "cost USD", "saved USD", "tool calls",
             "unrecorded"]]
    for g in report["groups"]:
        def num(v: Any, fmt: str = "{}") -> str:
            return "-" if v is None else fmt.format(v)
        rows.append([*(g["key"][k] for k in group_by), str(g["runs"]), num(g["model_calls"]),
                     num(g["input_tokens"]), num(g.get("cached_input_tokens")), num(g["output_tokens"]),
                     num(g["cost_usd"], "{:.6f}"), num(g.get("saving_usd"), "{:.6f}"), num(g["tool_calls"]),
                     num(g["unrecorded_model_calls"]) + (f" (~${g['unrecorded_cost_usd']:.6f})"
                                                         if g.get("unrecorded_model_calls") else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    saved = report.get("total_saving_usd") or 0
    print(f"total cost ${report['total_cost_usd']:.6f}" + (f", ${saved:.6f} saved by context caching" if saved else "")
          + (" (truncated: narrow the period)" if report["truncated"] else ""))
    return 0
