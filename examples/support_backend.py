"""A stand-in for the order and payment systems the support agent works against.

Orders are fixed sample data. Refunds go to a SQLite ledger that, like a real payment API, takes an
idempotency key: a refund retried with the same key returns the first refund instead of paying twice.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import date

ORDERS = {
    "A-1042": {"order_id": "A-1042", "customer": "Dana Whitfield", "item": "Trailrunner 3 hiking boots",
               "amount_usd": 89.00, "delivered_on": "2026-11-12", "final_sale": False, "status": "delivered"},
    "A-2077": {"order_id": "A-2077", "customer": "Sam Okafor", "item": "Clearance rain shell",
               "amount_usd": 45.50, "delivered_on": "2026-11-20", "final_sale": True, "status": "delivered"},
    "A-1187": {"order_id": "A-1187", "customer": "Ari Mendes", "item": "Merino trail socks (2 pairs)",
               "amount_usd": 24.00, "delivered_on": "2026-11-18", "final_sale": False, "status": "delivered"},
    "A-3310": {"order_id": "A-3310", "customer": "Lee Park", "item": "Camp stove",
               "amount_usd": 129.00, "delivered_on": "2026-08-02", "final_sale": False, "status": "delivered"},
}
REFUND_WINDOW_DAYS = 30
AUTO_REFUND_LIMIT_USD = 200.0

_lock = threading.Lock()


def ledger_path() -> str:
    return os.environ.get("AGEX_EXAMPLE_LEDGER", os.path.join(".agex", "refunds.sqlite"))


def _connect() -> sqlite3.Connection:
    path = ledger_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS refunds (idempotency_key TEXT PRIMARY KEY, refund_id TEXT, "
                 "order_id TEXT, amount_usd REAL, reason TEXT)")
    return conn


def issue_refund(order_id: str, amount_usd: float, reason: str, idempotency_key: str) -> dict[str, object]:
    with _lock, _connect() as conn:
        row = conn.execute("SELECT refund_id, amount_usd FROM refunds WHERE idempotency_key = ?",
                           (idempotency_key,)).fetchone()
        if row:
            return {"refund_id": row[0], "order_id": order_id, "amount_usd": row[1], "replayed": True}
        count = conn.execute("SELECT COUNT(*) FROM refunds").fetchone()[0]
        refund_id = f"RF-{count + 1:05d}"
        conn.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?)", (idempotency_key, refund_id, order_id, amount_usd, reason))
        return {"refund_id": refund_id, "order_id": order_id, "amount_usd": amount_usd, "replayed": False}


def refunds() -> list[dict[str, object]]:
    with _lock, _connect() as conn:
        rows = conn.execute("SELECT idempotency_key, refund_id, order_id, amount_usd FROM refunds").fetchall()
    return [{"idempotency_key": r[0], "refund_id": r[1], "order_id": r[2], "amount_usd": r[3]} for r in rows]


def days_since(day: str, today: date) -> int:
    return (today - date.fromisoformat(day)).days
