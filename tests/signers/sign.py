"""Signs webhook requests with the senders' own PyPI libraries.

Protocol: one JSON request per stdin line
  {"scheme", "secret", "body", "timestamp" (unix s), "id"}
and one JSON object of headers per stdout line. Shopify and the generic
HMAC scheme have no signing library: they use Python's hmac module, which
is still not our code.
"""
import base64
import hashlib
import hmac
import json
import sys
from datetime import datetime, timezone

from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook


def headers_for(r):
    scheme, secret, body, ts = r["scheme"], r["secret"], r["body"], r.get("timestamp")
    if scheme == "standard-webhooks":
        when = datetime.fromtimestamp(ts, tz=timezone.utc)
        signature = Webhook(secret).sign(r["id"], when, body)
        return {"webhook-id": r["id"], "webhook-timestamp": str(ts), "webhook-signature": signature}
    if scheme == "slack":
        signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
        return {"x-slack-signature": signature, "x-slack-request-timestamp": str(ts)}
    if scheme == "shopify":
        digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        return {"x-shopify-hmac-sha256": base64.b64encode(digest).decode()}
    if scheme == "hmac":
        message = f"{ts}.{body}".encode()
        digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        return {"x-signature": "sha256=" + digest, "x-timestamp": str(ts)}
    raise ValueError(f"sign.py does not sign {scheme}")


for line in sys.stdin:
    if line.strip():
        print(json.dumps(headers_for(json.loads(line))), flush=True)
