"""``agex``: run the local stack, start runs and follow them."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from agex.cli import timeline
from agex.cli.client import ApiError, Client

DEMO_INPUT = "Hi, I'd like a refund for order A-1042: the boots arrived with a split sole."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agex", description="Agent Executor command line.")
    parser.add_argument("--api", help="API base URL (default $AGEX_API_URL or http://127.0.0.1:8080)")
    parser.add_argument("--token", help="bearer token (default $AGEX_TOKEN or the dev token)")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run every emulator and function locally until Ctrl-C")
    dev.add_argument("--port", type=int, default=8080, help="API port (default 8080)")

    demo = sub.add_parser("demo", help="start the local stack, run the sample support agent end to end, stop")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--input", default=DEMO_INPUT)

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

    cancel = sub.add_parser("cancel", help="cancel an unfinished run")
    cancel.add_argument("run_id")

    sub.add_parser("agents", help="list the deployment's agents")

    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ApiError as e:
        print(f"error: {e.message} ({e.code})", file=sys.stderr)
        return 2


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


def follow(client: Client, run_id: str, timeout: float, out: Any = sys.stdout) -> dict[str, Any]:
    """Print the timeline as events arrive, until the run ends; return the final run."""
    after, deadline = 0, time.monotonic() + timeout
    while True:
        run = client.run(run_id)
        for event in client.events(run_id, after):
            after = event["seq"]
            text = timeline.line(event)
            if text:
                print(text, file=out, flush=True)
        if run["status"] in ("succeeded", "failed", "cancelled", "expired"):
            return client.run(run_id)
        if time.monotonic() > deadline:
            print(f"still {run['status']} after {timeout:.0f} s; follow it with `agex events {run_id}`", file=out)
            return run
        time.sleep(0.3)


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


def cmd_events(args: argparse.Namespace) -> int:
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


def _serve(port: int) -> Any:
    from agex.dev.stack import Stack, StackConfig

    print("starting the local stack (Firestore, Pub/Sub, Cloud Tasks and Gemini emulators; api and step "
          "functions)...", flush=True)
    return Stack(StackConfig(api_port=port or _free_port())).start()


def _free_port() -> int:
    from emulators.gcloud import free_port

    return free_port()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    # SIGTERM behaves like Ctrl-C from the start, so a stop during start-up also stops what started
    signal.signal(signal.SIGTERM, _interrupt)
    stack = None
    try:
        stack = _serve(args.port)
        for name, where in stack.describe().items():
            print(f"  {name:<12} {where}")
        print(f"ready: API at {stack.api_url} (token: dev-token). Ctrl-C stops everything.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stack is not None:
            print("stopping...", flush=True)
            stack.stop()
            print("stopped.", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    stack = _serve(args.port)
    try:
        client = Client(stack.api_url, "dev-token")
        print(f"ready: API at {stack.api_url}\n")
        print(f"customer: {args.input}\n")
        run = client.start_run("support", args.input, metadata={"channel": "demo"})
        final = follow(client, run["run_id"], 300)
        print()
        print(_summary(final))
        return 0 if final["status"] == "succeeded" else 1
    finally:
        stack.stop()


_COMMANDS = {"run": cmd_run, "status": cmd_status, "events": cmd_events, "cancel": cmd_cancel,
             "agents": cmd_agents, "dev": cmd_dev, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
