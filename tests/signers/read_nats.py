"""Reads a JetStream stream with the nats-py client and parses every message
as a CloudEvent with the cloudevents SDK; prints one JSON line per event
(id, type, source, data). Usage: read_nats.py URL STREAM COUNT
"""
import asyncio
import json
import sys

import nats
from cloudevents.conversion import from_json
from cloudevents.http import CloudEvent


async def main(url, stream, count):
    client = await nats.connect(url)
    jetstream = client.jetstream()
    for sequence in range(1, count + 1):
        message = await jetstream.get_msg(stream, sequence)
        event = from_json(CloudEvent, message.data)
        print(json.dumps({
            "id": event["id"],
            "type": event["type"],
            "source": event["source"],
            "data": event.get_data(),
        }))
    await client.close()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
