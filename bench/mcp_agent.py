"""An agent with MCP tools (over stdio and streamable HTTP) and an OpenAPI tool, for the cold-start row
"api with an MCP-using agent": defining it must not connect to its servers nor load the MCP SDK or
httpx. Its servers are never started by the benchmark."""

from __future__ import annotations

import sys

from agex.core.agent import Agent
from agex.tools.http import BearerSecret, http_tool
from agex.tools.mcp import HttpServer, StdioServer, mcp_tools

_API = {
    "openapi": "3.0.3",
    "info": {"title": "Notes", "version": "1"},
    "servers": [{"url": "http://127.0.0.1:9"}],
    "paths": {"/notes/{id}": {"get": {
        "operationId": "get_note", "summary": "One note by id.",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the note"}}}}},
}

agent = Agent(
    name="mcp-notes",
    description="Keeps notes through MCP servers; for the cold-start benchmark.",
    instructions="You keep notes.",
    model="gemini-2.5-flash-lite",
    tools=(
        *mcp_tools(StdioServer(sys.executable, ("-c", "pass")), allow=["add_note"], prefix="local_"),
        *mcp_tools(HttpServer("http://127.0.0.1:9/mcp", bearer_secret="notes-token"), allow=["add_note"],
                   prefix="remote_"),
        http_tool(_API, "get_note", auth=BearerSecret("notes-token")),
    ),
)
