"""Agents the end-to-end tests run on the local stack next to the examples: a payer whose calls need
approval, a watcher that waits on a timer, and a client of a rate-limited API. Their effects go to a
SQLite file (``AGEX_E2E_EFFECTS``) shared by every function process, so tests can count them."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from pydantic import BaseModel

from agex.agent import Agent
from agex.approval import ApprovalPolicy
from agex.tools import RetryLater, ToolContext, continue_later, tool


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ.get("AGEX_E2E_EFFECTS", "effects.sqlite"), timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, tool TEXT, detail TEXT)")
    return db


def record(key: str, tool_name: str, detail: str) -> int:
    """Record one effect; return how many effects this key had before."""
    with _db() as db:
        (before,) = db.execute("SELECT COUNT(*) FROM effects WHERE key = ? AND tool = ?", (key, tool_name)).fetchone()
        db.execute("INSERT INTO effects VALUES (?, ?, ?)", (key, tool_name, detail))
        return int(before)


def effects(run_id: str, tool_name: str) -> list[str]:
    with _db() as db:
        rows = db.execute("SELECT detail FROM effects WHERE key LIKE ? AND tool = ?", (run_id + ":%", tool_name))
        return [r[0] for r in rows]


class Payment(BaseModel):
    to: str
    amount: float


@tool(idempotent=False)
def pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay a vendor. Not idempotent: a second call pays twice."""
    record(ctx.idempotency_key, "pay", f"{args.to}:{args.amount:g}")
    return {"paid": args.amount, "to": args.to}


def _payer(name: str, **policy: Any) -> Agent:
    return Agent(name=name, instructions="You pay vendors when asked.", tools=(pay,), approvals=(ApprovalPolicy(
        tool="pay", approvers=("manager@example.com", "dev@example.com"), four_eyes=True, allow_edits=True,
        reason="Every payment needs sign-off.", **policy),))


class Endpoint(BaseModel):
    url: str


@tool
def fetch_status(args: Endpoint, ctx: ToolContext) -> dict[str, Any]:
    """Read a status from a rate-limited API."""
    if record(ctx.idempotency_key, "fetch_status", args.url) == 0:
        raise RetryLater(2, "429 Too Many Requests (Retry-After: 2)")
    return {"status": "green"}


agents = [
    _payer("payer", expires_after_s=3600),
    _payer("payer-quick", expires_after_s=3),
    Agent(name="watcher", instructions="You watch shipments.", tools=(continue_later,)),
    Agent(name="poller", instructions="You poll status APIs.", tools=(fetch_status,)),
]
