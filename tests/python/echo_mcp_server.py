"""The benchmark peer: the q-developer-agent tool as a user might write it
with the official MCP Python SDK, running the CLI named by QBOX_AGENT_CLI
(the benchmark uses /bin/echo) and returning its output."""

import asyncio
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("python-q-agent")


@server.tool(name="q-developer-agent")
async def q_developer_agent(prompt: str) -> str:
    """Run `q chat --no-interactive -- PROMPT` and return its output."""
    process = await asyncio.create_subprocess_exec(
        os.environ.get("QBOX_AGENT_CLI", "q"),
        "chat",
        "--no-interactive",
        "--",
        prompt,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    return stdout.decode("utf-8", "replace")


if __name__ == "__main__":
    server.run("stdio")
