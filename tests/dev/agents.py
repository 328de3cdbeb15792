"""Agents of the embedded mode's tests: one that waits on a timer, one whose call waits for an approval that
expires after a second."""

from __future__ import annotations

from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.approval import ApprovalPolicy
from agex.tools import ToolContext, continue_later, tool


class Parcel(BaseModel):
    parcel: str


@tool
def ship(args: Parcel, ctx: ToolContext) -> dict[str, object]:
    """Ship a parcel."""
    return {"shipped": args.parcel}


sleeper = Agent(name="sleeper", instructions="You wait for the clock.", tools=(continue_later,))
hasty = Agent(name="hasty", instructions="You ship parcels in a hurry.", tools=(ship,), approvals=(
    ApprovalPolicy(tool="ship", approvers=("manager@example.com",), expires_after_s=1, on_expiry="reject",
                   reason="Every parcel needs sign-off."),))
