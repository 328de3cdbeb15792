"""``agex guard scan`` and ``agex redteam``: the guardrails from the command line.

Heavy modules (the guards, their models, the runtime) load inside the commands, so ``agex --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from agex.core.agent import Agent

SCAN_CHANNELS = {"user": "user_input", "tool_output": "tool_output", "model_output": "model_output"}


def add_parsers(sub: Any) -> None:
    """Add ``guard`` (with ``scan``) and ``redteam`` to ``agex``'s subcommands."""
    guard = sub.add_parser("guard", help="the guardrails: scan text with an agent's guard chain")
    guard_sub = guard.add_subparsers(dest="guard_command", required=True)
    scan = guard_sub.add_parser(
        "scan", help="scan JSON lines {\"id\", \"text\"} from stdin with a guard chain",
        description="Read JSON lines {\"id\": ..., \"text\": ...} from stdin and write, for each, the injection "
                    "detector's score, the chain's action, and the verdicts other than allow. A line that cannot "
                    "be read gets an error line (action \"error\"), and the exit status is then 1.")
    scan.add_argument("--agent", help="use this agent's chain (found as `agex dev` finds agents); default: the "
                                      "default chain")
    scan.add_argument("--channel", choices=list(SCAN_CHANNELS), default="tool_output",
                      help="what the text is (default tool_output)")
    scan.add_argument("--json", action="store_true", help="print one JSON line per input")
    _agent_source(scan)

    redteam = sub.add_parser(
        "redteam", help="replay prompt-injection cases against an agent's guardrails",
        description="Run each case of a JSON-lines case file through the step protocol, in memory, with the "
                    "agent's guard chain, instructions and limits and the case's stub tools, and report how many "
                    "attacks ran and how many benign cases completed (see agex/dev/redteam.py for the format). "
                    "The model is a scripted, maximally gullible one; with --model live it is the agent's real "
                    "model, as deployed (the canary): over --max-attack-success the exit status is 2, and "
                    "--publish sends a security.alert to Pub/Sub.")
    redteam.add_argument("agent", help="the agent whose guards, instructions and limits are used")
    redteam.add_argument("--cases", required=True, metavar="FILE.jsonl", help="the case file")
    redteam.add_argument("--json", action="store_true", help="print the report as JSON")
    redteam.add_argument("--guards", choices=["default", "none"],
                         help="replace the agent's chain: default (the default chain) or none (no guards)")
    redteam.add_argument("--limit", type=int, metavar="N", help="only the first N cases")
    redteam.add_argument("--model", choices=["scripted", "live"], default="scripted",
                         help="scripted: a model that falls for every injection it sees intact (default); live: "
                              "the agent's real model, built from the AGEX_* settings as the runtime builds it")
    redteam.add_argument("--max-attack-success", type=float, metavar="R",
                         help="exit 2 when the attack success rate is over R (default with --model live: 0.0)")
    redteam.add_argument("--publish", action="store_true",
                         help="with --model live: publish a security.alert to agex-security-alerts when over the "
                              "bound")
    _agent_source(redteam)


def _agent_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--fleet", metavar="FILE", help="the fleet file (default as `agex dev`: ./fleet.yaml, ...)")
    source.add_argument("--agents", metavar="MODULE:ATTR[,MODULE:ATTR]", help="the agents' code, without a fleet file")


def run(args: argparse.Namespace) -> int | None:
    """Run ``args``' command if it is one of these; None otherwise."""
    if args.command == "guard":
        return cmd_scan(args, sys.stdin, sys.stdout)
    if args.command == "redteam":
        return cmd_redteam(args)
    return None


def _load_agent(args: argparse.Namespace) -> Agent:
    from agex.dev.redteam import load_agent

    return load_agent(args.agent, args.fleet, args.agents)


def _load_errors() -> tuple[type[BaseException], ...]:
    from agex.core.errors import AgexError
    from agex.dev.project import ProjectError
    from agex.dev.redteam import CaseFileError

    return AgexError, ProjectError, CaseFileError


# --- guard scan ----------------------------------------------------------------------------------------

def cmd_scan(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    from agex.core.guard import DEFAULT_GUARDS, Channel, GuardContext
    from agex.guards.chain import build_chain
    from agex.guards.injection import detector

    try:
        agent = _load_agent(args) if args.agent else None
    except _load_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    channel = Channel(SCAN_CHANNELS[args.channel])
    chain = build_chain(agent.guards if agent is not None else DEFAULT_GUARDS)
    scorer = detector()
    name = agent.name if agent is not None else "scan"
    base = GuardContext(agent=name, instructions=agent.instructions if agent is not None else "",
                        sensitive_tools=frozenset(t.name for t in agent.tools if t.sensitive) if agent else frozenset())
    rows: list[dict[str, Any]] = []
    failed = False
    for n, line in enumerate(stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            row = _error(n, f"line {n} is not valid JSON: {e.msg} (column {e.colno})")
        else:
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                ident = item.get("id", n) if isinstance(item, dict) else n
                row = _error(ident, f"line {n}: expected an object with a \"text\" string")
            else:
                text = item["text"]
                context = base if channel != Channel.user_input else GuardContext(
                    agent=base.agent, instructions=base.instructions, user_text=text,
                    sensitive_tools=base.sensitive_tools)
                result = chain.check(channel, text, context)
                row = {"id": item.get("id", n), "score": round(scorer.score(text), 4), "action": result.action.value,
                       "guards": [v.record() for v in result.verdicts]}
        failed = failed or row["action"] == "error"
        if args.json:
            print(json.dumps(row, ensure_ascii=False), file=stdout, flush=True)
        else:
            rows.append(row)
    if not args.json:
        print(_scan_table(rows), file=stdout)
    return 1 if failed else 0


def _error(ident: Any, message: str) -> dict[str, Any]:
    return {"id": ident, "score": None, "action": "error", "guards": [], "error": message}


def _scan_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "nothing to scan: give JSON lines {\"id\": ..., \"text\": ...} on stdin"
    table = [["ID", "SCORE", "ACTION", "GUARDS"]]
    for r in rows:
        guards = ", ".join(f"{g['guard']}:{g['action']}" + (f" ({g['reason']})" if g.get("reason") else "")
                           for g in r["guards"]) or r.get("error", "-")
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        table.append([str(r["id"]), score, r["action"], guards])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


@contextlib.contextmanager
def _quiet_engine() -> Iterator[None]:
    """The engine warns of every guard verdict, which here are the point: its errors only, for the run."""
    logger = logging.getLogger("agex")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- redteam -------------------------------------------------------------------------------------------

def cmd_redteam(args: argparse.Namespace) -> int:
    from agex.core.guard import DEFAULT_GUARDS
    from agex.dev import redteam

    live = args.model == "live"
    if args.publish and not live:
        print("error: --publish is for the canary: give --model live", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        agent = _load_agent(args)
        cases = redteam.load_cases(args.cases)
    except _load_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.guards is not None:
        agent = agent.model_copy(update={"guards": DEFAULT_GUARDS if args.guards == "default" else ()})
    cases = cases[:args.limit] if args.limit is not None else cases
    bound = args.max_attack_success if args.max_attack_success is not None else (0.0 if live else None)
    backends = None
    if live:
        from agex.app.backends import Backends
        from agex.app.settings import Settings

        backends = Backends.gcp(Settings())
        with _quiet_engine():
            report = redteam.run(agent, cases, model=backends.models(), retries=3)
    else:
        with _quiet_engine():
            report = redteam.run(agent, cases)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        chain = {"default": "the default chain", "none": "none"}.get(args.guards or "", "the agent's")
        how = (f"live model {agent.model}" if live else "scripted gullible model") + f"; guards: {chain}"
        print(redteam.to_text(agent.name, report, how))
    if bound is None or report.attack_success_rate <= bound:
        return 0
    print(f"attack success rate {report.attack_success_rate:.4f} is over the bound {bound:.4f}: "
          f"{', '.join(report.failed_cases)}", file=sys.stderr)
    if args.publish and backends is not None:
        redteam.publish_alert(backends.bus(), agent.name, report)
        print("published a security.alert to agex-security-alerts", file=sys.stderr)
    return 2
