"""Drives an MCP server started as a command (here `qbox run --mcp IMAGE`)
with the official MCP Python SDK over stdio.

Usage: python run_mcp.py COMMAND [ARGS...]

Lists the tools, calls q-developer-agent and q-chat in one session, and
prints one JSON report on stdout for the Rust test to check.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def main() -> None:
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            agent = await session.call_tool("q-developer-agent", {"prompt": "print:from the image"})
            chat = await session.call_tool("q-chat", {"prompt": "hello from the host"})
            report = {
                "tools": sorted(tool.name for tool in tools.tools),
                "agent": {"is_error": agent.is_error, "text": text_of(agent)},
                "chat": {"is_error": chat.is_error, "text": text_of(chat)},
            }
    print(json.dumps(report))


asyncio.run(main())
