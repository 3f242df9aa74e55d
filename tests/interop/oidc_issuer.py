"""A test OIDC issuer for jwt_auth, on PyJWT and cryptography: the discovery document, the key
set (JWKS), and tokens minted on request, signed by an implementation independent of ours.

Usage: python3 oidc_issuer.py [--port N] [--behaviour normal|slow|badjson|empty|https_jwks|status500]
Prints "PORT <n>" once listening on 127.0.0.1.

Endpoints:
  GET  /.well-known/openid-configuration  issuer and jwks_uri (http://localhost:<port>/keys)
  GET  /keys                              the published keys
  POST /mint    {"key": name, "alg": alg, "kid": kid or null (omit: the key's name),
                 "claims": {...}, "exp_in": s, "nbf_in": s, "no_kid": bool, "count": n}
                count > 1: n distinct tokens (a `jti` each), one per line
                exp_in / nbf_in set exp / nbf to now + s (fractions kept)
  POST /rotate  publish "rsa_next" in place of "rsa"
  GET  /stats   {"key_fetches": n}

Keys: rsa (2048), rsa_next, ec256, ec384, ec521, oct (HS256 secret, published as a JWK of kty
"oct"), rogue (RSA, never published).
"""

import argparse
import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = b"a-shared-secret-anyone-can-read-in-the-jwks-0123456789"


def b64(n_or_bytes, length=None):
    if isinstance(n_or_bytes, int):
        length = length or (n_or_bytes.bit_length() + 7) // 8
        n_or_bytes = n_or_bytes.to_bytes(length, "big")
    return base64.urlsafe_b64encode(n_or_bytes).rstrip(b"=").decode()


def rsa_jwk(kid, key):
    pub = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(pub.n), "e": b64(pub.e)}


def ec_jwk(kid, key, crv, size):
    pub = key.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "use": "sig", "crv": crv, "x": b64(pub.x, size), "y": b64(pub.y, size)}


KEYS = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa_next": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rogue": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec256": ec.generate_private_key(ec.SECP256R1()),
    "ec384": ec.generate_private_key(ec.SECP384R1()),
    "ec521": ec.generate_private_key(ec.SECP521R1()),
    "oct": SECRET,
}


class State:
    lock = threading.Lock()
    key_fetches = 0
    rotated = False
    behaviour = "normal"
    port = 0


def issuer():
    return f"http://localhost:{State.port}"


def published():
    first = "rsa_next" if State.rotated else "rsa"
    return [
        rsa_jwk(first, KEYS[first]),
        ec_jwk("ec256", KEYS["ec256"], "P-256", 32),
        ec_jwk("ec384", KEYS["ec384"], "P-384", 48),
        ec_jwk("ec521", KEYS["ec521"], "P-521", 66),
        {"kty": "oct", "kid": "oct", "k": b64(SECRET)},
    ]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("issuer: " + (fmt % args) + "\n")

    def send(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        b = State.behaviour
        if self.path == "/.well-known/openid-configuration":
            if b == "slow":
                time.sleep(120)
                return
            if b == "badjson":
                return self.send(200, '{"issuer": "http://x", "jwks_uri": ')
            if b == "status500":
                return self.send(500, "gateway starting", "text/plain")
            jwks = f"https://localhost:{State.port}/keys" if b == "https_jwks" else f"{issuer()}/keys"
            return self.send(200, json.dumps({"issuer": issuer(), "jwks_uri": jwks}))
        if self.path == "/keys":
            with State.lock:
                State.key_fetches += 1
            keys = [] if b == "empty" else published()
            return self.send(200, json.dumps({"keys": keys}))
        if self.path == "/stats":
            return self.send(200, json.dumps({"key_fetches": State.key_fetches}))
        self.send(404, "not found", "text/plain")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/rotate":
            State.rotated = True
            return self.send(200, "{}")
        if self.path != "/mint":
            return self.send(404, "not found", "text/plain")
        claims = dict(body.get("claims", {}))
        now = time.time()
        if "exp_in" in body:
            claims["exp"] = now + body["exp_in"]
        if "nbf_in" in body:
            claims["nbf"] = now + body["nbf_in"]
        name = body.get("key", "rsa")
        alg = body.get("alg", "RS256")
        headers = {} if body.get("no_kid") else {"kid": body.get("kid") or name}
        key = None if alg == "none" else KEYS[name]
        count = int(body.get("count", 1))
        if count == 1:
            return self.send(200, jwt.encode(claims, key, algorithm=alg, headers=headers), "text/plain")
        # Distinct tokens (a `jti` each), one per line: scripts/bench-jwt.sh's fresh tokens.
        tokens = [jwt.encode(dict(claims, jti=str(i)), key, algorithm=alg, headers=headers) for i in range(count)]
        self.send(200, "\n".join(tokens) + "\n", "text/plain")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--behaviour", default="normal")
    args = p.parse_args()
    State.behaviour = args.behaviour
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    State.port = server.server_address[1]
    print(f"PORT {State.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
