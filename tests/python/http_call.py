"""Calls q-chat on an MCP server over streamable HTTP with a bearer token,
through the official MCP Python SDK, as a host-side client of a sidecar
whose port is published.

Usage: python http_call.py URL TOKEN PROMPT

Prints one JSON report on stdout: the tools listed and the call's result.
"""

import asyncio
import json
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def main() -> None:
    url, token, prompt = sys.argv[1:4]
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                chat = await session.call_tool("q-chat", {"prompt": prompt})
    print(json.dumps({
        "tools": sorted(tool.name for tool in tools.tools),
        "chat": {"is_error": chat.is_error, "text": text_of(chat)},
    }))


asyncio.run(main())
