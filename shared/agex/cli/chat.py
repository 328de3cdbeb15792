"""``agex chat AGENT [--thread ID]``: a conversation with an agent in the terminal. Each message is a turn of a
thread (docs/threads.md); its steps are shown as they are committed (the run's event stream), then the answer."""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any, TextIO


def add_parsers(sub: Any) -> None:
    chat = sub.add_parser("chat", help="talk with an agent: each message a turn of a thread, its steps shown live",
                          description="Type a message and Enter; the agent's steps show as they happen, then its "
                                      "answer. Ctrl-D or /exit ends; the thread stays, to go on with --thread.")
    chat.add_argument("agent")
    chat.add_argument("--thread", metavar="ID", help="go on with this thread (default: a new one)")
    chat.add_argument("--policy", choices=["reject", "queue", "interrupt"], default="reject",
                      help="a new thread's policy for a message sent while a run goes on (default reject)")
    chat.add_argument("--timeout", type=float, default=600, help="seconds to wait for each answer (default 600)")
    chat.add_argument("--quiet", action="store_true", help="show the answers only, not the steps")


def run(args: argparse.Namespace) -> int | None:
    return cmd_chat(args) if args.command == "chat" else None


def cmd_chat(args: argparse.Namespace, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    from agex.cli.client import Client
    from agex.cli.main import TERMINAL, Follower

    stdin, out = stdin or sys.stdin, out or sys.stdout
    client = Client(args.api, args.token)
    thread = client.thread(args.thread) if args.thread else client.create_thread(args.agent, args.policy)
    if thread["agent"] != args.agent:
        print(f"error: thread {thread['thread_id']} is a conversation with {thread['agent']}, not {args.agent}",
              file=sys.stderr)
        return 2
    thread_id = thread["thread_id"]
    print(f"thread {thread_id} with {args.agent}, {thread['turns']} turns so far. Ctrl-D or /exit ends.", file=out)
    prompt = stdin.isatty()
    while True:
        if prompt:
            print("you> ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            break
        text = line.strip()
        if not text:
            continue
        started = client.send(thread_id, text)
        steps = io.StringIO() if args.quiet else out
        final = Follower(client, started["run_id"], steps, text=not args.quiet).until(TERMINAL, args.timeout)
        if final["status"] == "succeeded":
            print(f"{args.agent}> {final['result']}", file=out, flush=True)
        elif final["status"] in TERMINAL:
            error = final.get("error") or {}
            print(f"({final['status']}: {error.get('message', 'no answer')})", file=out, flush=True)
        else:
            print(f"(still {final['status']}: the next message waits for it, or see `agex events "
                  f"{final['run_id']} --follow`)", file=out, flush=True)
    print(f"go on later with: agex chat {args.agent} --thread {thread_id}", file=out)
    return 0
