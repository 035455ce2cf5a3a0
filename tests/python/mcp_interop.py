"""Interoperability check of qbox-sidecar with the official MCP Python SDK.

Usage: python mcp_interop.py stdio SIDECAR_BINARY [MODE]
       python mcp_interop.py http URL TOKEN [MODE]
       python mcp_interop.py describe SIDECAR_BINARY
       python mcp_interop.py legacy-server

MODE is how the SDK's `Client` negotiates (its `mode=`): `auto` (its
default: `server/discover` at the newest revision, the handshake as the
fallback), `legacy` (the `initialize` handshake) or a revision to adopt
without a probe (`2026-07-28`). With a MODE the report also says what was
negotiated and what the server says about its tools. Without one, a bare
`ClientSession` does the handshake. `describe` reports only that (over
stdio, in the SDK's default mode). `legacy-server` serves, on stdio, an
SDK server that knows only the handshake (one tool, `echo`), for checking
how other clients fall back to it.

Lists the tools, calls q-developer-agent with progress, cancels a slow call,
and prints one JSON report on stdout for the Rust test to check.

FAKE_Q_RECORD names the directory where the fake CLI writes its pid (the
sidecar must pass it on: QBOX_AGENT_PASS_ENV=FAKE_Q_RECORD), so that the
report can say what the cancellation did to the CLI's process.
"""

import asyncio
import json
import os
import sys
import time
from contextlib import AsyncExitStack

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


async def wait_until(limit: float, what: str, condition):
    """Checks `condition` until it returns something true, which is returned;
    fails naming `what` once `limit` seconds have passed."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {limit}s waiting until {what}")
        await asyncio.sleep(0.02)


def recorded_pid(path: str):
    """The pid the fake CLI wrote, once it is there in full."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


async def exercise(session: ClientSession) -> dict:
    report: dict = {}
    await session.initialize()
    tools = await session.list_tools()
    report["tools"] = sorted(tool.name for tool in tools.tools)

    progress: list = []

    async def on_progress(value, total, message):
        progress.append(message)

    result = await session.call_tool(
        "q-developer-agent",
        {"prompt": "lines:3"},
        progress_callback=on_progress,
    )
    report["call"] = {
        "is_error": result.is_error,
        "text": "".join(c.text for c in result.content if isinstance(c, types.TextContent)),
    }
    report["progress"] = progress

    bad = await session.call_tool("q-developer-agent", {"prompt": 7})
    report["bad_args"] = {
        "is_error": bad.is_error,
        "text": "".join(c.text for c in bad.content if isinstance(c, types.TextContent)),
    }

    # Cancellation: start a slow call, cancel it once its CLI runs, and see
    # what that did: the call ends without a result, the CLI is stopped
    # (long before its 30 s), and the server still serves.
    pid_file = os.path.join(os.environ["FAKE_Q_RECORD"], "pid")
    if os.path.exists(pid_file):
        os.remove(pid_file)
    slow = asyncio.create_task(session.call_tool("q-developer-agent", {"prompt": "sleep:30"}))
    pid = await wait_until(30, "the slow call's CLI has started", lambda: recorded_pid(pid_file))
    running = alive(pid)
    slow.cancel()
    try:
        result = await slow
        ended = f"a result: {result}"
    except asyncio.CancelledError:
        ended = "cancelled"
    except Exception as err:  # noqa: BLE001 - reported for the Rust test to show
        ended = f"{type(err).__name__}: {err}"
    try:
        stopped = await wait_until(10, "the cancelled call's CLI is stopped", lambda: not alive(pid))
    except AssertionError:
        stopped = False
    report["cancelled"] = {"cli_ran": running, "call_ended": ended, "cli_stopped": stopped}
    after = await session.call_tool("q-developer-agent", {"prompt": "print:still serving"})
    report["after_cancel"] = "".join(c.text for c in after.content if isinstance(c, types.TextContent))

    chat_progress: list = []

    async def on_chat_progress(value, total, message):
        chat_progress.append(message)

    chat = await session.call_tool("q-chat", {"prompt": "from python"}, progress_callback=on_chat_progress)
    report["chat"] = {
        "is_error": chat.is_error,
        "text": "".join(c.text for c in chat.content if isinstance(c, types.TextContent)),
        "conversation_id": (chat.structured_content or {}).get("conversationId"),
        "progress": chat_progress,
    }
    return report


class Negotiated:
    """A session the SDK's `Client` has already negotiated, for `exercise`,
    which opens with the handshake: here that step is already done."""

    def __init__(self, session: ClientSession):
        self._session = session

    async def initialize(self) -> None:
        return None

    def __getattr__(self, name):
        return getattr(self._session, name)


async def describe(session: ClientSession) -> dict:
    """What the server says about its tools, and whether a real q-chat result
    validates against the tool's outputSchema (checked here with jsonschema,
    not only by the SDK, so that the report names any error)."""
    from jsonschema import Draft202012Validator

    listed = await session.list_tools()
    tools = {
        tool.name: {
            "title": tool.title,
            "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True)
            if tool.annotations
            else None,
            "output_schema": tool.output_schema,
        }
        for tool in listed.tools
    }
    chat = await session.call_tool("q-chat", {"prompt": "check the schema"})
    schema = tools["q-chat"]["output_schema"]
    if schema is None:
        errors = ["q-chat has no outputSchema"]
    elif chat.is_error:
        errors = ["the call failed, so there is nothing to validate"]
    else:
        validator = Draft202012Validator(schema)
        errors = [error.message for error in validator.iter_errors(chat.structured_content)]
    return {
        "tools": tools,
        "ttl_ms": getattr(listed, "ttl_ms", None),
        "cache_scope": getattr(listed, "cache_scope", None),
        "chat": {"is_error": chat.is_error, "structured": chat.structured_content, "schema_errors": errors},
    }


async def with_client(mode: str) -> dict:
    """Runs `exercise` and `describe` through the SDK's `Client` in `mode`."""
    from mcp import Client

    if sys.argv[1] == "stdio":
        server = StdioServerParameters(command=sys.argv[2], args=["serve"], env=dict(os.environ))
    else:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        url, token = sys.argv[2], sys.argv[3]
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        server = streamable_http_client(url, http_client=http)
    async with Client(server, mode=mode, read_timeout_seconds=60) as client:
        report = await exercise(Negotiated(client.session))
        report["protocol_version"] = client.protocol_version
        report["described"] = await describe(client.session)
    return report


async def describe_only() -> dict:
    """`describe` over stdio, in the SDK's default mode."""
    from mcp import Client

    server = StdioServerParameters(command=sys.argv[2], args=["serve"], env=dict(os.environ))
    async with Client(server, read_timeout_seconds=60) as client:
        report = await describe(client.session)
        report["protocol_version"] = client.protocol_version
    return report


async def legacy_server() -> None:
    """An SDK server that speaks only the `initialize` handshake, on stdio."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.runner import serve_loop
    from mcp.server.stdio import stdio_server

    server = MCPServer("legacy-only")

    @server.tool()
    def echo(text: str) -> str:
        """Returns the text."""
        return f"echo: {text}"

    lowlevel = server._lowlevel_server
    async with stdio_server() as (read, write), lowlevel.lifespan(lowlevel) as state:
        await serve_loop(
            lowlevel, read, write, lifespan_state=state, init_options=lowlevel.create_initialization_options()
        )


async def main() -> None:
    mode = sys.argv[1]
    if mode == "legacy-server":
        await legacy_server()
        return
    if mode == "describe":
        print(json.dumps(await describe_only()))
        return
    client_mode = sys.argv[3] if mode == "stdio" and len(sys.argv) > 3 else None
    if mode == "http" and len(sys.argv) > 4:
        client_mode = sys.argv[4]
    if client_mode is not None:
        print(json.dumps(await with_client(client_mode)))
        return
    async with AsyncExitStack() as stack:
        if mode == "stdio":
            params = StdioServerParameters(command=sys.argv[2], args=["serve"], env=dict(os.environ))
            read, write = await stack.enter_async_context(stdio_client(params))
        else:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            url, token = sys.argv[2], sys.argv[3]
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
            await stack.enter_async_context(http)
            read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(
            ClientSession(read, write, read_timeout_seconds=60)
        )
        report = await exercise(session)
    print(json.dumps(report))


asyncio.run(main())
