"""MCP tools: the tools of a Model Context Protocol server, called through the official ``mcp`` SDK.

``mcp_tools(server, allow=[...])`` gives one ``Tool`` per allowed name. The allow-list belongs to the
agent: a tool the server offers but the agent does not allow is never declared to the model nor
callable, and an allowed name the server does not offer is a ``ConfigurationError`` when the tools are
listed.

Cold start: defining an agent never connects, and loads neither the SDK nor ``anyio`` or ``httpx2``: they
are imported by the first listing or call in the process (a module that defines agents is imported by the
API, which never calls a tool). The server is listed lazily, on the first ``spec()`` or
call in the process, once (under a lock), and the listing is cached for the life of the process; it
gives each tool its description and input JSON schema. The arguments are checked loosely against that
schema (an object, required keys, basic JSON types) so the model gets a quick correction; the server
validates fully.

Cost and choice: each call opens its own session and closes it: over stdio it spawns the server process
(hundreds of milliseconds for a Python server), over streamable HTTP it opens a connection and
initializes a session. Nothing is kept between calls, on purpose: a step may run on any instance, an
instance may be frozen or replaced between steps, and a session held across steps would be state the
runtime cannot checkpoint. A server that needs state across calls must keep it itself (a database, or
an id the model passes back).

The SDK is async; ``invoke`` runs in ``Tool.call``'s worker thread, which owns no event loop, so it
runs the session with ``anyio.run`` there. The listing, which may be asked for from any thread
(including one running an event loop), runs on a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from agex.core.errors import ConfigurationError, TransientError
from agex.core.messages import ToolSpec
from agex.tools import Tool, ToolContext, ToolOutcome, TransientToolError

if TYPE_CHECKING:  # loaded on first use: see the module's docstring
    import httpx2
    from mcp import ClientSession
    from mcp_types import CallToolResult, ContentBlock
    from mcp_types import Tool as McpToolInfo

T = TypeVar("T")


@dataclass(frozen=True)
class StdioServer:
    """A server run as a subprocess speaking MCP over its stdin/stdout; spawned afresh for each call."""

    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    """Added to the few variables the SDK passes on (PATH, HOME, ...): the server does not inherit the
    whole environment, so the function's own settings do not leak into it."""
    cwd: str | Path | None = None

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigurationError("StdioServer: command is empty")

    def describe(self) -> str:
        return f"stdio server {self.command!r}"


@dataclass(frozen=True)
class HttpServer:
    """A server reached over MCP's streamable HTTP transport."""

    url: str
    headers: Mapping[str, str] | None = None
    bearer_secret: str | None = None
    """A secret id whose value is sent as ``Authorization: Bearer <value>``. It is read at call time
    like any tool secret (``Tool.secrets``), never stored in the definition."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"HttpServer: url must be http(s)://..., got {self.url!r}")

    def describe(self) -> str:
        return f"MCP server at {self.url}"


McpServer = StdioServer | HttpServer


class McpToolError(Exception):
    """The server ran the tool and it reported an error (``isError``); the text goes to the model."""


# --- sessions -----------------------------------------------------------------------------------------


@asynccontextmanager
async def _session(server: McpServer, secret: str | None, statuses: list[int]) -> AsyncIterator[ClientSession]:
    """An initialized session, closed on exit (the stdio server process is stopped with it)."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if isinstance(server, StdioServer):
        params = StdioServerParameters(command=server.command, args=list(server.args),
                                       env=dict(server.env) if server.env else None, cwd=server.cwd)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    headers = dict(server.headers or {})
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"

    async def record(response: httpx2.Response) -> None:
        # the transport turns an HTTP error status into a bare JSON-RPC "internal error"; the status is
        # what tells a 503 worth retrying from a 401 that is not
        if response.status_code >= 400:
            statuses.append(response.status_code)

    # the SDK's default client has no hooks; its timeouts are kept loose since the call's deadline
    # (``fail_after`` in ``_with_session``) is what bounds it
    client = httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]},
                                timeout=httpx2.Timeout(30.0, read=300.0))
    async with client, streamable_http_client(server.url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _with_session(server: McpServer, secret: str | None, timeout_s: float,
                        use: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Run ``use`` in a fresh session; failures to reach the server become ``TransientToolError``.

    The deadline is enforced here too, not only by ``Tool.call``: cancelling tears the session down, so
    a call cut off by the timeout does not leave a server process behind."""
    import anyio

    statuses: list[int] = []
    try:
        with anyio.fail_after(timeout_s):
            async with _session(server, secret, statuses) as session:
                return await use(session)
    except BaseException as e:  # groups from the SDK's task groups are unwrapped here
        translated = _translate(e, server, statuses)
        if translated is e:
            raise
        raise translated from e


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def _translate(e: BaseException, server: McpServer, statuses: list[int]) -> BaseException:
    import anyio
    import httpx2
    from mcp import MCPError

    leaves = _leaves(e)
    if any(not isinstance(leaf, Exception) for leaf in leaves):  # KeyboardInterrupt, cancellation: as is
        return next(leaf for leaf in leaves if not isinstance(leaf, Exception))
    where = server.describe()
    for leaf in leaves:
        if isinstance(leaf, TimeoutError):
            return TimeoutError(f"{where} did not answer in time")
        if isinstance(leaf, OSError | httpx2.TransportError | anyio.BrokenResourceError
                      | anyio.ClosedResourceError | anyio.EndOfStream):
            return TransientToolError(f"could not reach {where}: {type(leaf).__name__}: {leaf}")
    if statuses:
        status = statuses[-1]
        if status >= 500 or status == 429:
            return TransientToolError(f"{where} answered HTTP {status}")
        return McpToolError(f"{where} answered HTTP {status}")
    leaf = leaves[0]
    if isinstance(leaf, MCPError):
        if leaf.code == -32000:  # CONNECTION_CLOSED: the server went away mid-session
            return TransientToolError(f"{where} closed the connection: {leaf.message}")
        return McpToolError(f"{where} refused the request: {leaf.message}")
    return leaf


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run on a thread of its own, so a caller running an event loop does not break ``anyio.run``."""
    import anyio

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = anyio.run(fn)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True, name="mcp-list")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


# --- the listing --------------------------------------------------------------------------------------


class _Catalog:
    """The server's tools, listed once per process on first use; failures are not cached."""

    def __init__(self, server: McpServer, allow: Sequence[str], timeout_s: float) -> None:
        self.server, self.allow, self.timeout_s = server, tuple(allow), timeout_s
        self._tools: dict[str, McpToolInfo] | None = None
        self._lock = threading.Lock()

    @property
    def listed(self) -> bool:
        return self._tools is not None

    def get(self, name: str) -> McpToolInfo:
        """The server's description of ``name``. ``TransientError`` when the server cannot be reached,
        ``ConfigurationError`` when an allowed tool is not offered."""
        tools = self._tools
        if tools is None:
            with self._lock:
                if self._tools is None:
                    self._tools = self._load()
                tools = self._tools
        return tools[name]

    def _load(self) -> dict[str, McpToolInfo]:
        from mcp_types import PaginatedRequestParams

        async def list_all(session: ClientSession) -> list[McpToolInfo]:
            found: list[McpToolInfo] = []
            cursor: str | None = None
            while True:
                page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
                found.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return found

        # the listing has no call context, so it goes without the bearer secret: a server must let
        # tools/list through unauthenticated (or behind headers given in the definition)
        try:
            offered = _run_async(lambda: _with_session(self.server, None, self.timeout_s, list_all))
        except (TransientToolError, TimeoutError) as e:
            raise TransientError(f"listing the tools of {self.server.describe()}: {e}") from e
        except McpToolError as e:
            raise ConfigurationError(f"listing the tools of {self.server.describe()}: {e}") from e
        by_name = {t.name: t for t in offered}
        missing = [name for name in self.allow if name not in by_name]
        if missing:
            raise ConfigurationError(
                f"{self.server.describe()} does not offer the allowed tool(s) {', '.join(map(repr, missing))}; "
                f"it offers: {', '.join(sorted(by_name)) or 'none'}")
        return {name: by_name[name] for name in self.allow}


# --- arguments ----------------------------------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


class McpArguments(BaseModel):
    """The arguments of an MCP tool, kept as sent. Checked loosely against the server's input schema:
    enough to tell the model what it got wrong; the server validates fully."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def server_schema(cls) -> Mapping[str, Any]:
        """The tool's input schema as the server lists it; each tool's subclass says where to find it."""
        return {"type": "object"}

    @model_validator(mode="before")
    @classmethod
    def _loosely(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PydanticCustomError("mcp_arguments", "arguments must be a JSON object")
        schema = cls.server_schema()
        props: Mapping[str, Any] = schema.get("properties") or {}
        problems = [f"{key}: required" for key in schema.get("required") or () if key not in data]
        if schema.get("additionalProperties") is False:
            problems += [f"{key}: not an argument of this tool" for key in data if key not in props]
        for key, value in data.items():
            expected = (props.get(key) or {}).get("type") if isinstance(props.get(key), dict) else None
            kinds = [expected] if isinstance(expected, str) else list(expected or [])
            checks = [_JSON_TYPES[k] for k in kinds if k in _JSON_TYPES]
            if checks and not any(check(value) for check in checks):
                problems.append(f"{key}: expected {' or '.join(kinds)}")
        if problems:  # a custom error type keeps pydantic's "Value error," prefix out of the model's view
            raise PydanticCustomError("mcp_arguments", "{problems}", {"problems": "; ".join(problems)})
        return data


def _args_model(name: str, catalog: _Catalog, remote: str) -> type[McpArguments]:
    class Args(McpArguments):
        @classmethod
        def server_schema(cls) -> Mapping[str, Any]:
            return catalog.get(remote).input_schema

    Args.__name__ = Args.__qualname__ = f"{name}_args"
    return Args


# --- the tool -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McpTool(Tool):
    """One tool of an MCP server. ``name`` is what the model sees (with the prefix); ``remote_name`` is
    the server's name for it."""

    kind: ClassVar[str] = "mcp"

    remote_name: str = field(default="", kw_only=True)
    server: McpServer | None = field(default=None, kw_only=True, compare=False)
    catalog: _Catalog | None = field(default=None, kw_only=True, compare=False, repr=False)

    def _info(self) -> McpToolInfo:
        assert self.catalog is not None, f"tool {self.name} has no catalog; build it with mcp_tools"
        return self.catalog.get(self.remote_name)

    def spec(self) -> ToolSpec:
        """Lists the server on first use: ``TransientError`` if it cannot be reached (the step is retried
        later), ``ConfigurationError`` if it does not offer this tool."""
        info = self._info()
        return ToolSpec(name=self.name, description=info.description or info.title or self.description,
                        parameters=dict(info.input_schema))

    def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        # validating the arguments needs the schema: list first, and report a failure to the model
        # rather than letting it escape from inside pydantic
        try:
            self._info()
        except TransientError as e:
            return ToolOutcome(False, {"error": f"{TransientToolError.__name__}: {e.message}"})
        except ConfigurationError as e:
            return ToolOutcome(False, {"error": f"{type(e).__name__}: {e.message}"})
        return super().call(args, ctx)

    def invoke(self, args: BaseModel, ctx: ToolContext) -> Any:
        import anyio

        assert self.server is not None
        secret = None
        if isinstance(self.server, HttpServer) and self.server.bearer_secret:
            secret = ctx.secrets.get(self.server.bearer_secret)
            if secret is None:
                raise ConfigurationError(f"tool {self.name}: secret {self.server.bearer_secret!r} was not "
                                         "provided to the call")
        arguments = args.model_dump(mode="json")

        async def call(session: ClientSession) -> CallToolResult:
            return await session.call_tool(self.remote_name, arguments)

        server, timeout_s = self.server, self.timeout_s
        result = anyio.run(lambda: _with_session(server, secret, timeout_s, call))
        if result.is_error:
            raise McpToolError(_text(result.content) or f"{self.remote_name} failed without a message")
        if result.structured_content is not None:
            return {"content": result.structured_content}
        return {"content": _text(result.content)}


def _text(blocks: Sequence[ContentBlock]) -> str:
    from mcp_types import TextContent

    parts = []
    for block in blocks:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:  # images, audio, resources: the model gets a marker, not the bytes
            mime = getattr(block, "mime_type", None) or getattr(getattr(block, "resource", None), "mime_type", "")
            parts.append(f"[{block.type} content{f', {mime}' if mime else ''} omitted]")
    return "\n".join(parts)


def mcp_tools(
    server: McpServer, allow: Sequence[str], *, idempotent: Sequence[str] = (), timeout_s: float = 30.0,
    prefix: str = "",
) -> tuple[Tool, ...]:
    """One ``Tool`` per name in ``allow``, exposed to the model as ``prefix + name``. Does not connect.

    ``idempotent``: the allowed tools safe to call again after a crash (and retried in the step on a
    transient failure); the others are called at most once, as the runtime cannot know what an MCP tool
    does. ``timeout_s`` bounds each call, session setup included, and the listing."""
    if isinstance(allow, str) or isinstance(idempotent, str):
        raise ConfigurationError("mcp_tools: allow and idempotent are sequences of tool names, not a string")
    if not allow:
        raise ConfigurationError("mcp_tools: allow at least one tool")
    if len(set(allow)) != len(allow):
        raise ConfigurationError(f"mcp_tools: duplicate names in allow: {list(allow)}")
    strays = sorted(set(idempotent) - set(allow))
    if strays:
        raise ConfigurationError(f"mcp_tools: idempotent names not in allow: {strays}")
    catalog = _Catalog(server, allow, timeout_s)
    secrets = (server.bearer_secret,) if isinstance(server, HttpServer) and server.bearer_secret else ()
    return tuple(
        McpTool(name=prefix + name, description=f"{name} (MCP tool of {server.describe()})",
                args_model=_args_model(prefix + name, catalog, name), idempotent=name in idempotent,
                timeout_s=timeout_s, secrets=secrets, remote_name=name, server=server, catalog=catalog)
        for name in allow)
