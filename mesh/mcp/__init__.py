"""MCP servers as tool sources.

An agent takes the tools of any Model Context Protocol server, started as a
subprocess (stdio) or reached over streamable HTTP, as ordinary smolmesh
tools: typed, validated before any call goes out, bounded by the run's
deadline and cancelled with it::

    with mcp_tools(MCPServerParameters(name="files", command="mcp-files")) as tools:
        agent = ToolCallingAgent(tools=tools, model=model)

    params.py      MCPServerParameters: one server, checked; its small environment
    config.py      mcp_servers_from_config: [[agents.NAME.mcp]] in mesh.toml
    schema.py      JSON Schema -> InputSpec, and what is refused
    connection.py  one async session (SDK transports) held by one task
    client.py      MCPClient: loop thread, deadlines, cancellation, restarts
    tool.py        MCPTool: one server tool, validated twice before a call
    results.py     answers -> text or dict; errors -> ToolExecutionError
    logs.py        the server's stderr into the log; no SDK tracebacks
"""

from mesh.mcp.client import MCPClient, mcp_tools
from mesh.mcp.config import mcp_servers_from_config
from mesh.mcp.params import MCPServerParameters
from mesh.mcp.tool import MCPTool

__all__ = ["MCPClient", "MCPServerParameters", "MCPTool", "mcp_servers_from_config", "mcp_tools"]
