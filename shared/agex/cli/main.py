"""``agex``: run the system locally, scaffold agents, start runs and follow them, decide approvals."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agex.cli import chat, eval_commands, guard_commands, timeline, version_commands, watch_commands
from agex.cli.client import ApiError, Client

if TYPE_CHECKING:
    from agex.dev.project import Project

_IMPORTED = time.perf_counter()

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")
BACKENDS = ("emulators", "memory")
DEMO_INPUT = "Hi, I'd like a refund for order A-1042: the boots arrived with a split sole."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agex", description="Agent Executor command line.")
    parser.add_argument("--api", help="API base URL (default $AGEX_API_URL or http://127.0.0.1:8080)")
    parser.add_argument("--token", help="bearer token (default $AGEX_TOKEN or the dev token)")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run the system locally with your agents until Ctrl-C",
        description="Run the system on this machine, serving the API on 127.0.0.1, until Ctrl-C. The agents are "
                    "--fleet's or --agents', else $AGEX_FLEET_FILE's or $AGEX_AGENTS', else ./fleet.yaml's, else "
                    "./examples/fleet.yaml's; the current directory is importable by them.")
    dev.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    dev.add_argument("--backend", choices=BACKENDS, default=os.environ.get("AGEX_DEV_BACKEND") or "emulators",
                     help="emulators: Firestore, Pub/Sub, Cloud Tasks, Secret Manager and Gemini emulators with the "
                          "api, step and approvals functions, as in the cloud (needs Java and the Cloud SDK's "
                          "emulators); memory: everything in this process on the in-memory adapters, ready in about "
                          "a second (default $AGEX_DEV_BACKEND or emulators)")
    agents = dev.add_mutually_exclusive_group()
    agents.add_argument("--fleet", metavar="FILE", help="the fleet file (default ./fleet.yaml)")
    agents.add_argument("--agents", metavar="MODULE:ATTR[,MODULE:ATTR]",
                        help="the agents' code, without a fleet file (they are granted no secrets)")
    dev.add_argument("--scenarios", metavar="DIR",
                     help="the Gemini emulator's scenarios (default $AGEX_SCENARIOS, else ./scenarios, else "
                          "./examples/scenarios)")
    _model_arguments(dev)

    demo = sub.add_parser("demo", help="start the system, run the sample support agent end to end, stop")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--backend", choices=BACKENDS, default="emulators",
                      help="emulators (default) or memory (in this process; see `agex dev --help`)")
    demo.add_argument("--input", default=DEMO_INPUT)
    _model_arguments(demo)

    new = sub.add_parser("new", help="scaffold an agent in the current directory",
                         description="Write NAME/agent.py (an agent with one typed tool), fleet.yaml, "
                                     "scenarios/NAME.yaml (the Gemini emulator's script) and tests/test_NAME.py; "
                                     "never over an existing file. Then: `agex dev --backend memory`.")
    new.add_argument("name", help="the agent's name, like helpdesk or order-status")

    run = sub.add_parser("run", help="start a run of an agent")
    run.add_argument("agent")
    run.add_argument("input")
    run.add_argument("--wait", action="store_true", help="follow the run; exit 0 only if it succeeds")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.add_argument("--idempotency-key")
    run.add_argument("--timeout", type=float, default=600, help="seconds to wait with --wait")

    status = sub.add_parser("status", help="show a run's status and usage")
    status.add_argument("run_id")
    status.add_argument("--json", action="store_true")

    events = sub.add_parser("events", help="show a run's timeline of decisions")
    events.add_argument("run_id")
    events.add_argument("--json", action="store_true")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing events as they happen, until the "
                        "run ends")

    sub.add_parser("schedules", help="list the tenant's schedules, paused or not, and when each fires next")
    schedule = sub.add_parser("schedule", help="pause or resume a schedule")
    schedule.add_argument("action", choices=["pause", "resume"])
    schedule.add_argument("name")

    runs = sub.add_parser("runs", help="list the tenant's runs, newest first")
    runs.add_argument("--agent")
    runs.add_argument("--status", choices=["queued", "running", "waiting_approval", "waiting_timer", "waiting_turn",
                                           *TERMINAL])
    runs.add_argument("--principal", help="only runs started by this principal")
    runs.add_argument("--thread", help="only the runs (turns) of this thread")
    runs.add_argument("--since", help="only runs created at or after this time (ISO 8601, or like 2h, 3d)")
    runs.add_argument("--until", help="only runs created before this time (ISO 8601, or like 2h, 3d: that long ago)")
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    runs.add_argument("--json", action="store_true")

    cancel = sub.add_parser("cancel", help="cancel an unfinished run")
    cancel.add_argument("run_id")

    sub.add_parser("agents", help="list the deployment's agents")

    approvals = sub.add_parser("approvals", help="list approvals (the pending ones by default)")
    approvals.add_argument("--status", default="pending", choices=[*APPROVAL_STATUSES, "all"],
                           help="only approvals of this status, or all (default: pending)")
    approvals.add_argument("--json", action="store_true", help="print JSON")

    approval = sub.add_parser("approval", help="show an approval: the call waiting and its decision")
    approval.add_argument("approval_id")
    approval.add_argument("--json", action="store_true", help="print JSON")

    approve = sub.add_parser("approve", help="approve the tool call an approval holds")
    approve.add_argument("approval_id")
    approve.add_argument("--comment", default="", help="why (recorded, and told to the agent)")
    approve.add_argument("--args", metavar="JSON",
                         help="run the tool with these arguments instead (a JSON object; when the policy allows "
                              "edits; fields left as \"[redacted]\" keep their values)")
    approve.add_argument("--idempotency-key")
    approve.add_argument("--json", action="store_true", help="print JSON")

    reject = sub.add_parser("reject", help="reject the tool call an approval holds; the agent is told why")
    reject.add_argument("approval_id")
    reject.add_argument("--reason", required=True, help="why (told to the agent)")
    reject.add_argument("--idempotency-key")
    reject.add_argument("--json", action="store_true", help="print JSON")

    resolve = sub.add_parser("resolve", help="say what became of a call a crash left uncertain (a reconciliation)")
    resolve.add_argument("approval_id")
    resolve.add_argument("resolution", choices=["done", "retry", "fail"],
                         help="done: it happened, go on; retry: it did not, call it again; fail: stop the run")
    resolve.add_argument("--comment", default="", help="what you checked (recorded, and told to the agent)")
    resolve.add_argument("--idempotency-key")
    resolve.add_argument("--json", action="store_true", help="print JSON")

    guard_commands.add_parsers(sub)
    watch_commands.add_parsers(sub)
    eval_commands.add_parsers(sub)
    version_commands.add_parsers(sub)
    chat.add_parsers(sub)

    args = parser.parse_args(argv)
    try:
        handled = guard_commands.run(args)
        if handled is None:
            handled = watch_commands.run(args)
        if handled is None:
            handled = eval_commands.run(args)
        if handled is None:
            handled = version_commands.run(args)
        if handled is None:
            handled = chat.run(args)
        return handled if handled is not None else _COMMANDS[args.command](args)
    except ApiError as e:
        print(f"error: {e.message} ({e.code})", file=sys.stderr)
        return 2


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    from agex.dev.models import MODELS

    parser.add_argument("--model", choices=MODELS, default=os.environ.get("AGEX_DEV_MODEL") or "emulator",
                        help="emulator: the scripted Gemini emulator (default $AGEX_DEV_MODEL or emulator); gemini: "
                             "the real Gemini API, with the key in $GEMINI_API_KEY (or Vertex AI with AGEX_VERTEX=true); "
                             "openai: an OpenAI-compatible endpoint at $OPENAI_BASE_URL (default a local Ollama, "
                             "http://127.0.0.1:11434/v1), key in $OPENAI_API_KEY if it needs one")
    parser.add_argument("--model-name", metavar="NAME",
                        help="run every agent on this model instead of its own (with --model openai: default "
                             "$AGEX_MODEL or llama3.2)")


def _client(args: argparse.Namespace) -> Client:
    return Client(args.api, args.token)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _summary(run: dict[str, Any]) -> str:
    u = run["usage"]
    lines = [f"run {run['run_id']}  agent {run['agent']}  status {run['status']}  steps {run['step']}",
             f"usage: {u['input_tokens']} input + {u['output_tokens']} output tokens "
             f"in {u['model_calls']} model calls, cost ${u['cost_usd']:.6f}"]
    if run.get("result"):
        lines.append(f"answer: {run['result']}")
    if run.get("error"):
        lines.append(f"error: {run['error']['code']}: {run['error']['message']}")
    return "\n".join(lines)


TERMINAL = ("succeeded", "failed", "cancelled", "expired")
_STATUS_CHANGES = ("approval_requested", "approval_decided", "timer_set", "step_started", "run_finished",
                   "run_cancelled")
"""Events after which the run's status may be another: the follower reads it then, not at every event."""


class Follower:
    """Prints a run's timeline as events arrive."""

    def __init__(self, client: Client, run_id: str, out: Any = sys.stdout, hint: bool = True,
                 text: bool = False) -> None:
        self.client, self.run_id, self.out = client, run_id, out
        self.after = 0
        self._hinted = not hint
        self.text = text
        """Show the model's text as it is written, on a line of its own (where the provider streams)."""
        self._writing: tuple[int, int] | None = None

    def until(self, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Follow the run's event stream until it is in one of ``statuses`` or has ended; return the run."""
        deadline = time.monotonic() + timeout
        run = self.client.run(self.run_id)
        if run["status"] in statuses or run["status"] in TERMINAL:
            self._print(self.client.events(self.run_id, self.after))
            return run
        waiting = [s for s in statuses if s not in TERMINAL]
        for event in self.client.follow(self.run_id, self.after, deadline, text=self.text):
            self._print([event])
            if event["kind"] == "approval_requested" and not self._hinted:
                self._hinted = True
                print("          (waiting for a human: see `agex approvals`, then `agex approve ID` or "
                      "`agex reject ID --reason ...`)", file=self.out, flush=True)
            if waiting and event["kind"] in _STATUS_CHANGES:
                # a run that ended is followed to its last event: the stream ends by itself then
                run = self.client.run(self.run_id)
                if run["status"] in waiting:
                    return run
        run = self.client.run(self.run_id)
        if run["status"] not in TERMINAL and run["status"] not in statuses:
            print(f"still {run['status']} after {timeout:.0f} s; follow it with `agex events {self.run_id} --follow`",
                  file=self.out)
        return run

    def _print(self, events: Any) -> None:
        for event in events:
            if event["kind"] == "model_text":
                self._write(event)
                continue
            if self._writing is not None:
                print(file=self.out, flush=True)  # the text line ends where its recorded answer comes
                self._writing = None
            self.after = event["seq"]
            text = timeline.line(event)
            if text:
                print(text, file=self.out, flush=True)

    def _write(self, piece: dict[str, Any]) -> None:
        step, written = self._writing or (-1, 0)
        if step != piece["step"] or piece["offset"] < written:
            if self._writing is not None:
                print(file=self.out)
            print(f"{piece['step']:>4}    writing   ", end="", file=self.out)
            written = piece["offset"]
        print(piece["text"], end="", file=self.out, flush=True)
        self._writing = (piece["step"], written + len(piece["text"]))


def follow(client: Client, run_id: str, timeout: float, out: Any = sys.stdout) -> dict[str, Any]:
    """Print the timeline as events arrive, until the run ends; return the final run."""
    return Follower(client, run_id, out).until(TERMINAL, timeout)


def cmd_run(args: argparse.Namespace) -> int:
    client = _client(args)
    run = client.start_run(args.agent, args.input, idempotency_key=args.idempotency_key)
    if not args.wait:
        _print_json(run) if args.json else print(run["run_id"])
        return 0
    final = follow(client, run["run_id"], args.timeout, out=sys.stderr if args.json else sys.stdout)
    _print_json(final) if args.json else print(_summary(final))
    return 0 if final["status"] == "succeeded" else 1


def cmd_status(args: argparse.Namespace) -> int:
    run = _client(args).run(args.run_id)
    _print_json(run) if args.json else print(_summary(run))
    return 0


def _schedule_line(s: dict[str, Any]) -> str:
    when = "paused by " + s["state"]["by"] if s["paused"] else f"next {s['next_due']}"
    return f"{s['name']:<24} {s['agent']:<16} {s['cron']:<16} {s['time_zone']:<16} {when}"


def cmd_schedules(args: argparse.Namespace) -> int:
    found = _client(args).schedules()
    for s in found:
        print(_schedule_line(s))
    if not found:
        print("no schedules (declare them in the fleet file: docs/schedules.md)")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    print(_schedule_line(_client(args).set_schedule(args.name, args.action == "pause")))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from agex.cli.watch_commands import when

    found = list(itertools.islice(_client(args).runs(
        agent=args.agent, status=args.status, principal=args.principal, thread=args.thread,
        created_after=when(args.since),
        created_before=when(args.until), page_size=min(max(args.limit, 1), 1000)), max(args.limit, 0)))
    if args.json:
        _print_json(found)
        return 0
    for run in found:
        print(f"{run['run_id']}  {run['created_at'][:19]}  {run['agent']:<16} {run['status']:<16} "
              f"steps {run['step']:<4} {(run.get('result') or (run.get('error') or {}).get('code') or '')[:60]}")
    if not found:
        print("no runs")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    if args.follow:
        client = _client(args)
        for event in client.follow(args.run_id):
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                text = timeline.line(event)
                if text:
                    print(text, flush=True)
        return 0
    events = list(_client(args).events(args.run_id))
    if args.json:
        _print_json(events)
    else:
        for event in events:
            text = timeline.line(event)
            if text:
                print(text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    print(_summary(_client(args).cancel(args.run_id)))
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    for agent in _client(args).agents():
        tools = ", ".join(t["name"] for t in agent["tools"])
        print(f"{agent['name']} v{agent['version']} ({agent['model']}): {agent['description']} [tools: {tools}]")
    return 0


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _call(tool: str, args: dict[str, Any] | None) -> str:
    return f"{tool}({timeline.arguments(args or {})})"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def cmd_approvals(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else args.status
    found = _client(args).approvals(status)
    if args.json:
        _print_json(found)
        return 0
    if not found:
        print(f"no {status} approvals" if status else "no approvals")
        return 0
    rows = [["ID", "RUN", "AGENT", "TOOL", "ARGUMENTS", "STATUS", "EXPIRES"]]
    rows += [[a["approval_id"], a["run_id"], a["agent"], a["tool"],
              timeline.short(timeline.arguments(a["arguments"]), 48), a["status"],
              _when(a["expires_at"]) if a["status"] == "pending" else "-"] for a in found]
    print(_table(rows))
    return 0


def _approval_text(a: dict[str, Any]) -> str:
    rules = ", ".join(filter(None, ["four eyes" if a["four_eyes"] else "",
                                    "edits allowed" if a["allow_edits"] else ""]))
    lines = [f"approval {a['approval_id']}  {a['status']}",
             f"  run        {a['run_id']} (agent {a['agent']}, step {a['step']}), started by {a['requested_by']}",
             f"  call       {_call(a['tool'], a['arguments'])}"]
    if a["reason"]:
        lines.append(f"  why        {a['reason']}")
    lines.append(f"  approvers  {', '.join(a['approvers'])}" + (f" ({rules})" if rules else ""))
    lines.append(f"  expires    {_when(a['expires_at'])}, then the call is "
                 + ("rejected" if a["on_expiry"] == "reject" else "failed, with its run"))
    if a["status"] != "pending":
        by = f" by {a['decided_by']}" if a["decided_by"] else ""
        comment = f": {a['comment']}" if a["comment"] else ""
        lines.append(f"  decided    {a['status']}{by} at {_when(a['decided_at'])}{comment}")
    if a["edited_arguments"] is not None:
        lines.append(f"  ran as     {_call(a['tool'], a['edited_arguments'])}")
    for late in a["late_decisions"]:
        lines.append(f"  late       {late.get('decision', '?')} by {late.get('by', '?')} at {_when(late.get('at'))} "
                     "(not applied)")
    if a["status"] == "pending":
        lines.append(f"decide with: agex approve {a['approval_id']} [--comment TEXT]"
                     + (" [--args JSON]" if a["allow_edits"] else "")
                     + f"  or  agex reject {a['approval_id']} --reason TEXT")
    return "\n".join(lines)


def cmd_approval(args: argparse.Namespace) -> int:
    found = _client(args).approval(args.approval_id)
    _print_json(found) if args.json else print(_approval_text(found))
    return 0


def _decide(args: argparse.Namespace, decision: str, comment: str, arguments: dict[str, Any] | None) -> int:
    result = _client(args).decide(args.approval_id, decision, comment, arguments, args.idempotency_key)
    if args.json:
        _print_json(result)
        return 0
    approval = result["approval"]
    if result["status"] == "already_applied":
        print(f"{approval['approval_id']} was already {approval['status']} by {approval['decided_by']} with this "
              f"decision ({result['decision_id']})")
    else:
        run = approval["run_id"]
        print(f"submitted: {decision} {approval['approval_id']} ({result['decision_id']}); run {run} continues "
              f"once it is applied. Follow it with `agex events {run}`")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    arguments = None
    if args.args is not None:
        try:
            arguments = json.loads(args.args)
        except json.JSONDecodeError as e:
            print(f"error: --args is not valid JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(arguments, dict):
            print("error: --args must be a JSON object of the tool's arguments, like '{\"amount_usd\": 50}'",
                  file=sys.stderr)
            return 2
    return _decide(args, "approve", args.comment, arguments)


def cmd_reject(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        print("error: --reason must say why; it is told to the agent", file=sys.stderr)
        return 2
    return _decide(args, "reject", args.reason, None)


def cmd_resolve(args: argparse.Namespace) -> int:
    return _decide(args, args.resolution, args.comment, None)


def _serve(port: int, backend: str, project: Project, model: str = "emulator", model_name: str | None = None) -> Any:
    """Start the system: the emulator stack, or everything in this process (``backend="memory"``), its agents
    on ``model`` (``agex.dev.models``)."""
    from agex.dev import models

    chosen = models.settings_for(model, model_name or "")
    print(f"the agents run on {models.describe(model, chosen)}", flush=True)
    if backend == "memory":
        from agex.dev.embedded import Embedded, EmbeddedConfig

        print("starting the system in this process (memory backend: API, steps, approvals, timers and the Gemini "
              "emulator)...", flush=True)
        return Embedded(EmbeddedConfig(api_port=port, fleet_file=project.fleet_file, agents=project.agents,
                                       scenarios=project.scenarios, project_dir=project.root,
                                       log_file=Path(".agex") / "logs" / "agex.log", model_settings=chosen)).start()
    from agex.dev.stack import Stack, StackConfig

    print("starting the local stack (Firestore, Pub/Sub, Cloud Tasks, Secret Manager and Gemini emulators; api, "
          "step, approvals and drift functions)...", flush=True)
    return Stack(StackConfig(api_port=port or _free_port(), fleet_file=project.fleet_file, agents=project.agents,
                             scenarios=project.scenarios, project_dir=project.root, model_settings=chosen)).start()


def _free_port() -> int:
    from agex.dev.emulators.gcloud import free_port

    return free_port()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _uptime() -> float:
    """Seconds since this process started (the interpreter's start included, on Linux)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def _start_errors() -> tuple[type[BaseException], ...]:
    """What a start fails with that a message explains better than a traceback."""
    from agex.core.errors import AgexError
    from agex.dev.emulators.gcloud import EmulatorError
    from agex.dev.emulators.gemini.scenario import ScenarioError
    from agex.dev.models import ModelChoiceError
    from agex.dev.project import ProjectError

    return AgexError, EmulatorError, ScenarioError, ProjectError, ModelChoiceError, OSError


def cmd_dev(args: argparse.Namespace) -> int:
    from agex.dev.project import resolve

    # SIGTERM behaves like Ctrl-C from the start, so a stop during start-up also stops what started
    signal.signal(signal.SIGTERM, _interrupt)
    system = None
    try:
        try:
            system = _serve(args.port, args.backend, resolve(args.fleet, args.agents, args.scenarios), args.model,
                            args.model_name)
        except _start_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, where in system.describe().items():
            print(f"  {name:<12} {where}")
        print(f"ready: API at {system.api_url} (token: dev-token), started in {_uptime():.2f} s. "
              "Ctrl-C stops everything.", flush=True)
        # from here a stop only sets a flag: the loop polls the API, and an interrupt raised in the middle of
        # a request could leave the system stopping behind a half-read connection
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        _print_alerts(Client(system.api_url, None), stop)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if system is not None:
            print("stopping...", flush=True)
            system.stop()
            print("stopped.", flush=True)
    return 0


def _print_alerts(client: Client, stop: threading.Event, every_s: float = 5.0) -> None:
    """Print each drift alert as it is published (through the API, as a notifier would read it), until
    ``stop`` is set."""
    seen: set[str] = set()
    since = datetime.now(UTC).isoformat()
    while not stop.wait(every_s):
        try:
            alerts = client.alerts(since=since)
        except ApiError:
            continue  # the system is stopping or busy: the next poll catches up
        for item in reversed(alerts):
            alert = item["alert"]
            if alert["alert_id"] not in seen:
                seen.add(alert["alert_id"])
                print(watch_commands.alert_text(alert), flush=True)


def cmd_new(args: argparse.Namespace) -> int:
    from agex.dev.scaffold import ScaffoldError, scaffold

    try:
        made = scaffold(args.name)
    except ScaffoldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in made.written:
        print(f"  wrote {path.relative_to(Path.cwd().resolve())}")
    if made.fleet_entry is not None:
        print("fleet.yaml exists, and was left as it is: add the agent to its agents:\n" + made.fleet_entry)
    print(f"\nnext:\n  python -m pytest tests/test_{made.package}.py     # the agent's unit test, no model\n"
          f"  agex dev --backend memory                  # the system, in one process\n"
          f"  agex run {made.agent} \"Please greet Ada\" --wait    # in another terminal")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agex.dev.project import Project
    from agex.dev.stack import REPO

    # the sample support agent, wherever this is run from
    sample = Project(root=REPO, fleet_file=REPO / "examples" / "fleet.yaml", agents="",
                     scenarios=REPO / "examples" / "scenarios")
    system = _serve(args.port, args.backend, sample, args.model, args.model_name)
    try:
        client = Client(system.api_url, "dev-token")
        print(f"ready: API at {system.api_url}, started in {_uptime():.2f} s\n")
        print(f"customer: {args.input}\n")
        run = client.start_run("support", args.input, metadata={"channel": "demo"})
        follower = Follower(client, run["run_id"], hint=False)
        final = follower.until(("waiting_approval",), 300)
        if final["status"] == "waiting_approval":
            # the scripted part of the demo: a support lead signs off (not the one who started the run)
            lead = Client(system.api_url, "manager-token")
            (approval,) = [a for a in lead.approvals("pending") if a["run_id"] == run["run_id"]]
            print(f"\nthe run is parked at zero compute: {approval['tool']}({json.dumps(approval['arguments'])}) "
                  f"needs sign-off. {approval['reason']}")
            print(f"  approval {approval['approval_id']}, approvers {', '.join(approval['approvers'])}, "
                  f"expires {approval['expires_at']}")
            time.sleep(1)
            lead.decide(approval["approval_id"], "approve", comment="Regular customer, defect confirmed.")
            print("manager@example.com approves (`agex approve ID --comment ...`); the run resumes:\n")
            final = follower.until(TERMINAL, 300)
        print()
        print(_summary(final))
        return 0 if final["status"] == "succeeded" else 1
    finally:
        system.stop()


_COMMANDS = {"run": cmd_run, "status": cmd_status, "events": cmd_events, "runs": cmd_runs, "schedules": cmd_schedules,
             "schedule": cmd_schedule, "cancel": cmd_cancel,
             "agents": cmd_agents, "approvals": cmd_approvals, "approval": cmd_approval, "approve": cmd_approve, "resolve": cmd_resolve,
             "reject": cmd_reject, "dev": cmd_dev, "demo": cmd_demo, "new": cmd_new}

if __name__ == "__main__":
    sys.exit(main())
