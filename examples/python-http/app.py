"""A stdlib-only HTTP function for fwatchdog's http mode (no framework needed).

/ready answers the watchdog's readiness checks (ready_path); everything else echoes a greeting.
SIGTERM arrives only after the watchdog has drained its in-flight calls.
"""
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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

    def do_GET(self):
        if self.path == "/ready":
            return self.reply(200, {"ready": True})
        return self.reply(200, {"hello": "world", "path": self.path})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        return self.reply(200, {"hello": data.get("name", "world")})


def stop(signum, frame):
    print("SIGTERM: stopping", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", 5000), Handler).serve_forever()
