"""Agent Executor: a durable, governed runtime for LLM agents on Google Cloud.

What an agent's author needs is importable from here (``from agex import Agent, tool, ToolContext``); the
layers behind it are described in docs/architecture.md.
"""

from agex.core.agent import Agent
from agex.core.approval import ApprovalPolicy, Condition
from agex.core.run import Limits
from agex.core.tool import (
           ContinueLater,
           RetryLater,
           RetryPolicy,
           ToolContext,
           ToolLimits,
           TransientToolError,
           tool,
)

__version__ = "0.1.0"

__all__ = ["Agent", "ApprovalPolicy", "Condition", "ContinueLater", "Limits", "RetryLater", "RetryPolicy",
           "ToolContext", "ToolLimits", "TransientToolError", "tool"]
