"""Follow a Switchyard topic as an MCP agent, from where it left off.

    pip install mcp==2.3.0        # the official MCP SDK
    python examples/mcp_agent.py orders
    python examples/mcp_agent.py orders --url http://host:8080/mcp --cursor-file orders.cursor
    SWITCHYARD_TOKEN=... python examples/mcp_agent.py orders   # when the server needs a token

Prints each event as one JSON line (pipe it to jq, or put your agent's work
where `handle` is). The agent keeps its place in a cursor file, saved after
each batch is handled: killed and started again, it goes on from the next
event, nothing missed and nothing twice, across restarts of Switchyard too.
Between reads it listens on the topic's resource (`subscriptions/listen`),
so it wakes as soon as new events arrive instead of polling.
"""

import argparse
import asyncio
import json
import os

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

# How long to wait for a notification before reading anyway (a safety net:
# a notification lost with a dropped connection costs at most this).
IDLE_READ_SECONDS = 30.0


def handle(event):
    print(json.dumps(event), flush=True)


def load(cursor_file):
    if os.path.exists(cursor_file):
        with open(cursor_file) as f:
            return f.read().strip() or None
    return None


def save(cursor_file, cursor):
    with open(cursor_file + ".tmp", "w") as f:
        f.write(cursor)
    os.replace(cursor_file + ".tmp", cursor_file)


async def follow(url, topic, cursor_file, token, idle_read_seconds):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60))
    async with Client(transport, mode="2026-07-28") as client:
        # Listening before the first read: whatever arrives after it is
        # either in that read or announced by a notification.
        async with client.listen(resource_subscriptions=[f"switchyard://topics/{topic}"]) as updates:
            while True:
                arguments = {"topic": topic, "limit": 500}
                cursor = load(cursor_file)
                if cursor:
                    arguments["after"] = cursor
                result = await client.call_tool("read_events", arguments)
                if result.is_error:
                    raise SystemExit(f"read_events failed: {json.dumps(result.structured_content)}")
                page = result.structured_content
                for event in page["events"]:
                    handle(event)
                # After handling: a crash in between repeats a batch, never skips one.
                save(cursor_file, page["next_cursor"])
                if not page["has_more"]:
                    with anyio.move_on_after(idle_read_seconds):
                        await updates.__anext__()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic")
    parser.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    parser.add_argument("--cursor-file", help="where the agent keeps its place (default: TOPIC.cursor)")
    parser.add_argument("--token", default=os.environ.get("SWITCHYARD_TOKEN"), help="bearer token (default: $SWITCHYARD_TOKEN)")
    parser.add_argument("--idle-read-seconds", type=float, default=IDLE_READ_SECONDS,
                        help="read anyway after this long without a notification (default: %(default)s)")
    args = parser.parse_args()
    try:
        cursor_file = args.cursor_file or f"{args.topic}.cursor"
        asyncio.run(follow(args.url, args.topic, cursor_file, args.token, args.idle_read_seconds))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
