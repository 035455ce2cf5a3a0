"""Interoperability check of qbox-sidecar with the official MCP Python SDK.

Usage: python mcp_interop.py stdio SIDECAR_BINARY
       python mcp_interop.py http URL TOKEN

Lists the tools, calls q-developer-agent with progress, cancels a slow call,
and prints one JSON report on stdout for the Rust test to check.
"""

import asyncio
import json
import os
import sys
from contextlib import AsyncExitStack

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


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

    # Cancellation: start a slow call, cancel it, then check the server still serves.
    slow = asyncio.create_task(session.call_tool("q-developer-agent", {"prompt": "sleep:30"}))
    await asyncio.sleep(1.0)
    slow.cancel()
    try:
        await slow
    except BaseException:  # the SDK may raise CancelledError or an McpError
        pass
    report["cancelled"] = True
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


async def main() -> None:
    mode = sys.argv[1]
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
