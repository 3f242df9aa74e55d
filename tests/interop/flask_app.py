"""An http-mode function on Flask served by waitress, as the python3-http and python3-flask
templates run it. Usage: python3 flask_app.py PORT. Every route reports what Flask saw."""
import sys
import time
import zlib

from flask import Flask, Response, jsonify, request
from waitress import serve

app = Flask(__name__)


@app.route("/echo", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def echo():
    body = request.get_data()
    return jsonify(
        framework="flask",
        method=request.method,
        path=request.path,
        query=request.query_string.decode(),
        content_length=request.headers.get("Content-Length"),
        transfer_encoding=request.headers.get("Transfer-Encoding"),
        framework_length=request.content_length,
        body_len=len(body),
        body_crc=zlib.crc32(body),
        custom=request.headers.get("X-Custom"),
        expect=request.headers.get("Expect"),
    )


@app.route("/cookies")
def cookies():
    r = Response("cookies\n", mimetype="text/plain")
    for name in ("a", "b", "c"):
        r.headers.add("Set-Cookie", f"{name}={name}-value; Path=/")
    return r


@app.route("/stream")
def stream():
    def parts():
        for i in range(5):
            yield f"part-{i}\n"
            time.sleep(0.3)
    return Response(parts(), mimetype="text/plain")


@app.route("/big")
def big():
    size = int(request.args.get("size", 5 * 1000 * 1000))
    pattern = bytes(range(256))
    return Response(pattern * (size // 256) + pattern[: size % 256], mimetype="application/octet-stream")


serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=16, _quiet=True)
