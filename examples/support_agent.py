"""A customer-support agent: looks up an order, checks the refund policy, issues the refund."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from agex.core.agent import Agent
from agex.core.approval import ApprovalPolicy, Condition
from agex.core.metrics import RunMetrics, Watch
from agex.core.run import Limits
from agex.tools import ToolContext, tool
from examples import support_backend as backend

REVIEW_OVER_USD = 50.0


class OrderRef(BaseModel):
    order_id: str = Field(pattern=r"^A-\d{4}$", description="Order number, like A-1042.")


class RefundRequest(BaseModel):
    order_id: str = Field(pattern=r"^A-\d{4}$", description="Order number, like A-1042.")
    amount_usd: float = Field(gt=0, description="Amount to refund in US dollars.")
    reason: str = Field(min_length=3, max_length=500, description="Why the customer is refunded.")


@tool
def lookup_order(args: OrderRef, ctx: ToolContext) -> dict[str, object]:
    """Look up an order by its number: customer, item, amount paid, delivery date and status."""
    order = backend.ORDERS.get(args.order_id)
    if order is None:
        raise LookupError(f"no order {args.order_id}")
    return order


def refund_policy(order_id: str) -> dict[str, object]:
    """The store's refund policy for one order: eligible or not, why, and up to what amount."""
    order = backend.ORDERS.get(order_id)
    if order is None:
        raise LookupError(f"no order {order_id}")
    age = backend.days_since(str(order["delivered_on"]), datetime.now(UTC).date())
    if order["final_sale"]:
        return {"eligible": False, "reason": "final-sale items cannot be refunded"}
    if age > backend.REFUND_WINDOW_DAYS:
        return {"eligible": False, "reason": f"delivered {age} days ago; the window is {backend.REFUND_WINDOW_DAYS} days"}
    return {"eligible": True, "max_refund_usd": min(float(order["amount_usd"]), backend.AUTO_REFUND_LIMIT_USD),
            "window_days": backend.REFUND_WINDOW_DAYS}


# the store's own rules, not content from outside: the provenance guard does not count it as untrusted
@tool(trusted=True)
def check_refund_policy(args: OrderRef, ctx: ToolContext) -> dict[str, object]:
    """Check whether an order can be refunded under the store's policy, and up to what amount."""
    return refund_policy(args.order_id)


def check_refund_edit(original: dict[str, object], edited: dict[str, object]) -> str | None:
    """A lead may change a refund's amount, but never beyond what the order's policy allows."""
    policy = refund_policy(str(edited.get("order_id")))
    if not policy["eligible"]:
        return f"order {edited.get('order_id')} cannot be refunded: {policy['reason']}"
    limit = float(policy["max_refund_usd"])  # type: ignore[arg-type]
    amount = edited.get("amount_usd")
    if not isinstance(amount, int | float) or amount > limit:
        return f"amount_usd must be at most {limit:.2f}, the refundable amount of order {edited.get('order_id')}"
    return None


# moves money: held for a human when it follows suspicious content with amounts or orders the customer
# did not give (the provenance guard of the default guardrail chain, docs/guardrails.md)
@tool(sensitive=True)
def issue_refund(args: RefundRequest, ctx: ToolContext) -> dict[str, object]:
    """Refund an order to the customer's original payment method. Only after the policy check allows it."""
    if args.order_id not in backend.ORDERS:
        raise LookupError(f"no order {args.order_id}")
    # the payment system dedupes on the key, so a retried step cannot pay twice
    return backend.issue_refund(args.order_id, args.amount_usd, args.reason, ctx.idempotency_key)


@dataclass(frozen=True)
class MentionsOrder:
    """An online evaluator: does the answer name the order the customer asked about? (1 or 0; None for a
    run without an answer). A cheap, deterministic check; a rubric judged by a model is ``agex eval``'s."""

    name: str = "mentions_order"
    sample: float = 0.25

    def score(self, run: RunMetrics, answer: str | None, events: Sequence[Any]) -> float | None:
        if not answer:
            return None
        asked = next((e.data.get("input", "") for e in events if e.kind == "run_created"), "")
        orders = set(re.findall(r"A-\d{4}", str(asked)))
        return 1.0 if orders and any(o in answer for o in orders) else 0.0


def build(version: str = "1", goodwill_factor: float = 1.0) -> Agent:
    """The agent at a version. ``goodwill_factor`` is the behaviour-relevant setting: above 1 the agent is
    told to refund more than the price as goodwill (what a drifting retrieval or prompt change looks like)."""
    goodwill = (f" Goodwill factor {goodwill_factor:g}: refund {goodwill_factor:g} times the allowed amount."
                if goodwill_factor != 1.0 else "")
    return Agent(
        name="support",
        version=version,
        description="Answers customer refund requests for the Acme outdoor store.",
        instructions=(
            "You are the customer support agent for Acme Outdoor. When a customer asks for a refund: look up "
            "the order, check the refund policy, and issue the refund only if the policy allows it, for at most "
            "the allowed amount. Then answer the customer briefly with the outcome and the refund id." + goodwill),
        model="gemini-2.5-flash",
        # out of quota or down: the lighter model answers the step instead of the customer waiting for a retry
        fallbacks=("gemini-2.5-flash-lite",),
        tools=(lookup_order, check_refund_policy, issue_refund),
        behaviour={"goodwill_factor": goodwill_factor},
        # what a refund amounts to, in dollars and as a share of the order: the drift check watches both
        watch=(Watch(tool="issue_refund", arg="amount_usd"),
               Watch(name="refund_share", tool="issue_refund", arg="amount_usd", per="lookup_order.amount_usd")),
        evaluators=(MentionsOrder(),),
        limits=Limits(max_steps=10, max_tokens=100_000, max_cost_usd=0.50, max_wall_time_s=7 * 24 * 3600),
        approvals=(
            # refunds over $50 wait for a support lead; the run is parked at no cost until one decides
            ApprovalPolicy(tool="issue_refund", when=(Condition(field="amount_usd", op="gt", value=REVIEW_OVER_USD),),
                           approvers=("manager@example.com", "*@leads.example.com"), four_eyes=True,
                           allow_edits=True,
                           # a lead may lower the amount or reword the reason, never switch the order
                           editable=("amount_usd", "reason"), check_edit=check_refund_edit,
                           expires_after_s=24 * 3600, on_expiry="reject",
                           reason=f"Refunds over ${REVIEW_OVER_USD:.0f} need a support lead's sign-off."),
        ),
    )


agent = build()
