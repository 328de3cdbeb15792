"""``agex eval``: run an eval set through the real runtime and gate a release on it.

Exit status: 0 the gate passed, 1 it failed (a threshold missed, a regression), 2 the command could not
evaluate (a bad eval file, an unknown agent, an API or a judge it cannot use, a result it could not store).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agex.cli.client import Client

DEFAULT_APPROVER_TOKEN = "manager-token"
"""The local stack's support lead (``agex dev``'s dev tokens): a different principal from the run's starter."""


def add_parsers(sub: Any) -> None:
    """Add ``eval`` to ``agex``'s subcommands."""
    ev = sub.add_parser(
        "eval", help="run an eval set (golden cases) against an agent, through the API; exit 1 when the gate fails",
        description="Start a run of AGENT for each case of EVALSET (YAML), decide its approvals as the case says, "
                    "check its status, tool calls, answer and budget, compare with the last accepted result of "
                    "another version, and store the result (POST /v1/agents/AGENT/evals). Exit status: 0 the gate "
                    "passed; 1 it failed (pass rate under the threshold, a budget missed, a regression); 2 the "
                    "eval could not be made (bad file, unknown agent, API or judge unusable, result not stored).")
    ev.add_argument("agent")
    ev.add_argument("evalset", metavar="EVALSET.yaml")
    # after the command as well as before it; SUPPRESS keeps a value given before it
    ev.add_argument("--api", default=argparse.SUPPRESS, help="API base URL (as `agex --api`)")
    ev.add_argument("--token", default=argparse.SUPPRESS, help="the runs' bearer token (as `agex --token`)")
    ev.add_argument("--approver-token", metavar="TOKEN",
                    help="who decides the cases' approvals: another principal than the runs' (four eyes), one of "
                         f"the agent's approvers (default $AGEX_APPROVER_TOKEN, else {DEFAULT_APPROVER_TOKEN}, the "
                         "local stack's lead)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    ev.add_argument("--accept", action="store_true",
                    help="when the gate passes, store the result as accepted: the reference later versions are "
                         "compared with")
    ev.add_argument("--allow-regressions", action="store_true",
                    help="report regressions and pass-rate drops from the reference without failing the gate")
    ev.add_argument("--no-store", action="store_true", help="compare, but do not store the result")
    ev.add_argument("--eval-id", metavar="ID",
                    help="the result's id (default: a new one); the same id replaces a stored result, and reruns "
                         "find the same runs (their idempotency keys derive from it)")
    ev.add_argument("--judge-model", metavar="MODEL", help="the rubric judge's model (default: the file's "
                                                           "judge.model, else the agent's)")
    ev.add_argument("--judge-url", metavar="URL",
                    help="a Gemini API at this URL judges (locally: the emulator's, which `agex dev` prints); "
                         "default: as the runtime, from the AGEX_* settings (AGEX_VERTEX, AGEX_GEMINI_API_KEY)")
    ev.add_argument("--parallel", type=int, default=4, metavar="N", help="cases run at once (default 4)")
    ev.add_argument("--timeout", type=float, metavar="S", help="seconds a case may take (default: the file's)")
    ev.add_argument("--skip-approval-cases", action="store_true",
                    help="skip the cases that decide approvals (where no approver identity is available); they are "
                         "reported as skipped and count neither way")


def run(args: argparse.Namespace) -> int | None:
    """Run ``args``' command if it is this module's; None otherwise."""
    if args.command == "eval":
        return cmd_eval(args)
    return None


def get_agent(client: Client, agent: str) -> dict[str, Any]:
    """The agent as the deployment runs it: its version, model and fingerprint."""
    from agex.cli.client import ApiError

    found = client.agents()
    for a in found:
        if a["name"] == agent:
            return a
    raise ApiError(404, "not_found", f"unknown agent {agent!r}; agents here: "
                                     f"{', '.join(a['name'] for a in found) or 'none'}")


def cmd_eval(args: argparse.Namespace) -> int:
    from agex.cli.client import ApiError, Client
    from agex.dev import evaluation as ev

    out = sys.stderr if args.json else sys.stdout
    if args.parallel < 1:
        print("error: --parallel must be at least 1", file=sys.stderr)
        return 2
    if args.eval_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", args.eval_id):
        print("error: --eval-id must be 1 to 128 letters, digits, _ or -", file=sys.stderr)
        return 2
    if args.timeout is not None and args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        evalset = ev.load_evalset(args.evalset)
    except ev.EvalFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if evalset.agent is not None and evalset.agent != args.agent:
        print(f"error: {args.evalset} is an eval set of agent {evalset.agent!r}, not {args.agent!r}", file=sys.stderr)
        return 2
    client = Client(args.api, args.token)
    approver = None
    try:
        agent = get_agent(client, args.agent)
        if evalset.needs_approver and not args.skip_approval_cases:
            token = args.approver_token or os.environ.get("AGEX_APPROVER_TOKEN") or DEFAULT_APPROVER_TOKEN
            approver = Client(args.api, token)
            try:
                approver.approvals_page("pending", size=1)
            except ApiError as e:
                print(f"error: the approver token was refused ({e.status} {e.code}: {e.message}); give one of the "
                      "agent's approvers with --approver-token or $AGEX_APPROVER_TOKEN, or --skip-approval-cases",
                      file=sys.stderr)
                return 2
        # accepted results, newest first: the last 100 are enough to find the latest of another version
        stored_before = client.evals(args.agent, accepted="true", page_size="100")
        reference = ev.reference_of(stored_before, evalset.name, str(agent.get("version")))
    except ApiError as e:
        print(f"error: {e.message} ({e.code})", file=sys.stderr)
        return 2
    judge = None
    if evalset.needs_judge:
        try:
            judge = ev.build_judge(args.judge_model or evalset.judge.model or str(agent.get("model")), args.judge_url)
        except ev.JudgeConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    eval_id = args.eval_id or ev.new_eval_id()
    print(f"eval {evalset.name}: {len(evalset.cases)} cases against {args.agent} v{agent.get('version')} "
          f"at {client.api} ({eval_id})", file=out, flush=True)

    def progress(result: ev.CaseResult) -> None:
        print(ev.case_line(result), file=out, flush=True)

    started = time.monotonic()
    runner = ev.Runner(client=client, approver=approver, agent=args.agent, evalset=evalset, eval_id=eval_id,
                       judge=judge, timeout_s=args.timeout, skip_approval_cases=args.skip_approval_cases,
                       on_result=progress)
    results = runner.run(args.parallel)
    comparison = ev.compare(results, reference)
    verdict = ev.gate(evalset, results, comparison, allow_regressions=args.allow_regressions)
    summary = ev.summary(evalset, results, comparison, verdict, judge, time.monotonic() - started)
    try:
        body = ev.record(evalset, agent, results, summary, verdict, eval_id=eval_id, accept=args.accept)
    except ev.EvalFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stored = None
    code = 0 if verdict.passed else 1
    if not args.no_store:
        try:
            stored = client.put_eval(args.agent, body)
        except ApiError as e:
            print(f"error: the result could not be stored: {e.message} ({e.code})", file=sys.stderr)
            code = 2
    if args.json:
        print(json.dumps({**body, **(stored or {}), "stored": stored is not None}, indent=2))
    else:
        print(ev.to_text(agent, evalset, summary, verdict, stored))
    return code
