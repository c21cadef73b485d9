"""An MCP agent for the tests, on the official Python SDK (PyPI `mcp`).

Usage (every answer is one JSON line on stdout):
  agent.py tools  URL MODE [TOKEN]             -> {"protocol": ..., "tools": {name: {...}}}
  agent.py call   URL MODE TOOL ARGS [TOKEN [META]]
                                               -> {"is_error": bool, "structured": {...}}
  agent.py resources URL MODE [TOKEN]          -> {"resources": [uri...], "templates": [...]}
  agent.py read   URL MODE URI [TOKEN]         -> {"contents": <the JSON read>} or {"error": {...}}
  agent.py listen URL MODE URI [TOKEN]         -> {"listening": [uri...]}, then one
                                                  {"updated": uri} per notification, forever

MODE is "2026-07-28" (stateless, no handshake) or "legacy" (initialize at
2025-11-25, Mcp-Session-Id). The agent that follows a topic from a saved
cursor is the README's example, examples/mcp_agent.py.
"""

import asyncio
import json
import os
import sys

import httpx2
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.client.streamable_http import streamable_http_client


def connect(url, mode, token=None, message_handler=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60))
    return Client(transport, mode=mode, message_handler=message_handler)


def out(value):
    print(json.dumps(value), flush=True)


async def tools(url, mode, token=None):
    async with connect(url, mode, token) as client:
        listed = await client.list_tools()
        out({
            "protocol": client.protocol_version,
            "tools": {
                tool.name: {
                    "input": tool.input_schema,
                    "output": tool.output_schema,
                    "read_only": bool(tool.annotations and tool.annotations.read_only_hint),
                }
                for tool in listed.tools
            },
        })


async def call(url, mode, tool, arguments, token=None, meta=None):
    try:
        async with connect(url, mode, token or None) as client:
            result = await client.call_tool(tool, json.loads(arguments), meta=json.loads(meta) if meta else None)
            out({"is_error": bool(result.is_error), "structured": result.structured_content})
    except Exception as err:  # the HTTP answer was an error (401, 403): say which
        out({"exception": describe(err)})


def describe(err):
    """An exception with the ones it groups (anyio task groups wrap them)."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(describe(e) for e in err.exceptions)
    return f"{type(err).__name__}: {err}"


async def resources(url, mode, token=None):
    async with connect(url, mode, token) as client:
        listed = await client.list_resources()
        templates = await client.list_resource_templates()
        out({
            "resources": [str(r.uri) for r in listed.resources],
            "templates": [t.uri_template for t in templates.resource_templates],
        })


async def read(url, mode, uri, token=None):
    async with connect(url, mode, token) as client:
        try:
            result = await client.read_resource(uri)
        except MCPError as err:
            out({"error": {"code": err.error.code, "message": err.error.message, "data": err.error.data}})
            return
        out({"contents": json.loads(result.contents[0].text), "mime_type": result.contents[0].mime_type})


async def listen(url, mode, uri, token=None):
    if mode == "legacy":
        async def handler(message):
            if isinstance(message, types.ResourceUpdatedNotification):
                out({"updated": str(message.params.uri)})

        async with connect(url, mode, token, message_handler=handler) as client:
            await client.subscribe_resource(uri)
            out({"listening": [uri]})
            await asyncio.Event().wait()
    async with connect(url, mode, token) as client:
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            out({"listening": list(subscription.honored.resource_subscriptions or [])})
            async for event in subscription:
                out({"updated": str(event.uri)})


def main(argv):
    command, rest = argv[1], argv[2:]
    runs = {"tools": tools, "call": call, "resources": resources, "read": read, "listen": listen}
    asyncio.run(runs[command](*rest))


if __name__ == "__main__":
    main(sys.argv)
