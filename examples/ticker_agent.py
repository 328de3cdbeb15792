"""A minimal agent for load tests and benchmarks: one zero-latency tool, called once per step."""

from __future__ import annotations

from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.run import Limits
from agex.tools import ToolContext, tool


class Tick(BaseModel):
    n: int
    pad: str = ""


@tool
def tick(args: Tick, ctx: ToolContext) -> dict[str, object]:
    """Record one tick and return its number (and the padding, to size messages)."""
    return {"n": args.n, "step": ctx.step, "pad": args.pad}


agent = Agent(
    name="ticker",
    description="Calls its tick tool as often as the input says; for load tests and benchmarks.",
    instructions="You are a ticker. Call tick until told to stop.",
    model="gemini-2.5-flash-lite",
    tools=(tick,),
    limits=Limits(max_steps=1000, max_tokens=50_000_000, max_cost_usd=100.0, max_steps_per_minute=100_000),
    context_window_steps=10,
)
