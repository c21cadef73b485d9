"""Verifies a Standard Webhooks delivery with the PyPI standardwebhooks library.

Reads {"secret", "headers", "body"} as JSON on stdin; prints "ok" or the
library's reason for refusing it.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
try:
    Webhook(request["secret"]).verify(request["body"], request["headers"])
    print("ok")
except WebhookVerificationError as err:
    print(f"invalid: {err}")
