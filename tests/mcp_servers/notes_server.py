"""A small MCP server for the tests of ``agex.tools.mcp``, built with the SDK's ``MCPServer``.

Run ``python tests/mcp_servers/notes_server.py stdio`` or ``... http --port N`` (streamable HTTP on
127.0.0.1, path ``/mcp``). Notes live in the process: over stdio each call spawns a fresh server, so
they do not survive from one call to the next, which is what the client promises anyway.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("notes")
_notes: list[str] = []


@server.tool()
def add_note(text: str) -> str:
    """Add a note and return how many notes there are now."""
    _notes.append(text)
    return f"added note {len(_notes)}: {text}"


@server.tool()
def list_notes() -> list[str]:
    """List the notes added so far."""
    return list(_notes)


@server.tool()
def fail() -> str:
    """Always fails, to test how errors reach the model."""
    raise ToolError("the notebook is on fire")


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep this many seconds, to test timeouts."""
    await anyio.sleep(seconds)
    return "rested"


@server.tool()
def secret_echo(ctx: Context) -> str:
    """Echo the Authorization header the request came with (HTTP only)."""
    headers = ctx.headers or {}
    return headers.get("authorization", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=8000)
    opts = parser.parse_args()
    if marker := os.environ.get("NOTES_STARTED_MARKER"):  # lets a test see whether a server was started
        with Path(marker).open("a") as f:
            f.write(f"started {os.getpid()}\n")
    if opts.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=opts.port)


if __name__ == "__main__":
    main()
