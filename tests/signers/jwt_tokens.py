"""Mints bearer tokens with PyJWT (a third-party JWT library), for the
access-control tests.

  jwt_tokens.py keypair DIR          writes DIR/es256.pem (private) and DIR/es256.pub.pem
  then one JSON request per stdin line:
    {"alg": "HS256", "key": "<secret>", "claims": {...}}
    {"alg": "ES256", "key": "<path to private PEM>", "claims": {...}}
  and one token per stdout line.
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def keypair(directory):
    private = ec.generate_private_key(ec.SECP256R1())
    with open(f"{directory}/es256.pem", "wb") as f:
        f.write(private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    with open(f"{directory}/es256.pub.pem", "wb") as f:
        f.write(private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "keypair":
        keypair(sys.argv[2])
        return
    for line in sys.stdin:
        request = json.loads(line)
        key = request["key"]
        if request["alg"] != "HS256":
            with open(key, "rb") as f:
                key = f.read()
        claims = dict(request["claims"])
        # "exp_in": seconds from now (negative: already expired).
        if "exp_in" in claims:
            claims["exp"] = int(time.time()) + claims.pop("exp_in")
        print(jwt.encode(claims, key, algorithm=request["alg"]), flush=True)


main()
