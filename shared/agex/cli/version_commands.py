"""``agex versions`` (an agent's versions and the unfinished runs on each, through the API) and ``agex
retire-check`` (the deploy's check that a fleet file keeps serving every version an unfinished run needs; it
reads Firestore directly, across tenants). See docs/versions.md."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(sub: Any) -> None:
    versions = sub.add_parser("versions", help="an agent's versions: current, served, and the unfinished runs on each")
    versions.add_argument("agent")
    versions.add_argument("--json", action="store_true")
    check = sub.add_parser(
        "retire-check", help="refuse a fleet file that stops serving a version unfinished runs still need",
        description="Load FLEET (its agents' code included) and count the runs of every tenant that have not ended, "
                    "per agent version, in the deployment's Firestore (the project's, or the emulator's at "
                    "$FIRESTORE_EMULATOR_HOST). Exit 1 when a version some run needs is neither served nor moved "
                    "by a migration rule: deploying FLEET would leave those runs waiting. Run it before every "
                    "deploy (cloudbuild.yaml does).")
    check.add_argument("fleet", metavar="FLEET.yaml")
    check.add_argument("--project", help="the Google Cloud project (default $AGEX_PROJECT)")


def run(args: argparse.Namespace) -> int | None:
    if args.command == "versions":
        return _versions(args)
    if args.command == "retire-check":
        return _retire_check(args)
    return None


def _versions(args: argparse.Namespace) -> int:
    from agex.cli.client import Client

    versions = Client(args.api, args.token).versions(args.agent)
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    for v in versions:
        notes = [n for n in ("current" if v["current"] else "", "" if v["served"] else "NOT SERVED",
                             f"migrates to {v['migrates_to']}" if v["migrates_to"] else "") if n]
        print(f"{args.agent} v{v['version']}: {v['unfinished_runs']} unfinished run(s)"
              + (f" ({', '.join(notes)})" if notes else ""))
    return 0


def _retire_check(args: argparse.Namespace) -> int:
    from agex.app.retirement import stranded
    from agex.app.runtime import Runtime
    from agex.app.settings import Settings
    from agex.core.errors import AgexError

    overrides: dict[str, Any] = {"fleet_file": args.fleet}
    if args.project:
        overrides["project"] = args.project
    try:
        runtime = Runtime(Settings(**overrides))
        found = stranded(runtime.agents, runtime.store)
    except AgexError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    for s in found:
        print(f"refused: {s.describe()}", file=sys.stderr)
    if not found:
        served = ", ".join(f"{a.name} v{a.version}" for a in runtime.agents.every_version())
        print(f"ok: every unfinished run is on a version {args.fleet} serves ({served})")
    return 1 if found else 0
