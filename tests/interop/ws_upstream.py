"""A websocket upstream for the relay tests (Python `websockets`): echoes every message.
Text messages steer it: "close:<code>" closes with that code, "abort" drops the TCP connection,
"exit" ends the process. A handshake to /refuse gets 403."""
import asyncio
import os
import signal
import sys
from http import HTTPStatus

from websockets.asyncio.server import serve


def process_request(connection, request):
    if request.path.startswith("/refuse"):
        return connection.respond(HTTPStatus.FORBIDDEN, "no websockets here\n")
    return None


async def handler(ws):
    async for msg in ws:
        if msg == "abort":
            ws.transport.abort()
            return
        if msg == "exit":
            os._exit(3)
        if isinstance(msg, str) and msg.startswith("close:"):
            await ws.close(int(msg[6:]), "bye")
            return
        await ws.send(msg)
    # Said on stderr, which the watchdog logs: how the session ended on this side.
    print(f"upstream: session closed with code {ws.close_code}", file=sys.stderr, flush=True)


async def main():
    # On SIGTERM: exit a moment later, without closing sessions itself (a close code it logs
    # then came from the other side), and without losing a line it is about to print.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.call_later(0.3, os._exit, 0))
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), max_size=None, compression=None,
                     ping_interval=None, process_request=process_request):
        await asyncio.Future()


asyncio.run(main())
