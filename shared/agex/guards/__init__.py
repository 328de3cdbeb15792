"""The built-in guards of the guardrail chain (docs/guardrails.md), and the chain that runs them.

A layer beside ``agex.tools``: it knows the core's guard types, never the engine, which sees a built
chain through ``agex.core.guard.Chain``. Each guard loads its libraries and models at first use.
"""

from agex.guards.chain import GuardChain, build_chain

__all__ = ["GuardChain", "build_chain"]
