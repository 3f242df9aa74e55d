"""A stdlib-only HTTP function for fwatchdog's http mode (no framework needed).

/ready answers the watchdog's readiness checks (ready_path); GET echoes a greeting; POST reads a
JSON body, sent with Content-Length or chunked (the watchdog relays a chunked client upload
chunked unless http_buffer_req_body=true). SIGTERM arrives only after the watchdog has drained
its in-flight calls. The port comes from the watchdog's own upstream_url, which the function
inherits, so the two cannot disagree.
"""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MAX_BODY = 8 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        print(fmt % args, file=sys.stderr, flush=True)

    def reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        """The request body, whichever way it is framed; None if it is too large or malformed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size_line = self.rfile.readline(1024).split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                if len(body) + size > MAX_BODY:
                    return None
                body += self.rfile.read(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length <= MAX_BODY else None

    def do_GET(self):
        if self.path == "/ready":
            return self.reply(200, {"ready": True})
        return self.reply(200, {"hello": "world", "path": self.path})

    def do_POST(self):
        raw = self.read_body()
        if raw is None:
            self.close_connection = True
            return self.reply(400, {"error": "body too large or badly framed"})
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return self.reply(400, {"error": "expected a JSON body"})
        name = data.get("name", "world") if isinstance(data, dict) else "world"
        return self.reply(200, {"hello": name, "bytes": len(raw)})


def stop(signum, frame):
    print("SIGTERM: stopping", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
port = urlsplit(os.environ.get("upstream_url", "http://127.0.0.1:5000")).port or 5000
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
