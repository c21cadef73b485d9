"""Encodes one CloudEvent in HTTP binary mode with the cloudevents SDK (its
own `to_binary`, as a Python producer would send it) and prints the result as
one JSON line: {"headers": {...}, "body": "..."}.
Usage: ce_binary.py ID TYPE SOURCE DATA_JSON
"""
import json
import sys

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

event_id, event_type, source, data = sys.argv[1:5]
event = CloudEvent({"id": event_id, "type": event_type, "source": source}, json.loads(data))
headers, body = to_binary(event)
print(json.dumps({"headers": dict(headers), "body": body.decode() if isinstance(body, bytes) else body}))
