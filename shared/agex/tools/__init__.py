"""Tools for agents: Python functions (``tool``, from ``agex.core.tool``), OpenAPI operations
(``agex.tools.http``) and MCP servers' tools (``agex.tools.mcp``). The kinds that talk to the network load
their libraries when first used, not when an agent is defined."""

from agex.core.tool import (
    NO_RETRY,
    ContinueLater,
    RetryLater,
    RetryPolicy,
    Tool,
    ToolContext,
    ToolLimits,
    ToolOutcome,
    ToolTimeout,
    TransientToolError,
    continue_later,
    tool,
)

__all__ = ["NO_RETRY", "ContinueLater", "RetryLater", "RetryPolicy", "Tool", "ToolContext", "ToolLimits",
           "ToolOutcome", "ToolTimeout", "TransientToolError", "continue_later", "tool"]
