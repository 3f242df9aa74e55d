"""A websocket client for the relay tests (Python `websockets`): runs one scenario against a URL
and prints what happened as one JSON object."""
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

URL, SCENARIO = sys.argv[1], sys.argv[2]
ARG = sys.argv[3] if len(sys.argv) > 3 else ""


def ws(path="/ws"):
    return connect(URL + path, max_size=None, compression=None, ping_interval=None, open_timeout=10)


async def basic():
    out = {}
    async with ws("/ws?q=1") as c:
        await c.send("hello")
        out["text"] = await c.recv()
        await c.send(b"\x00\x01\xff binary")
        out["binary"] = list(await c.recv())
        await c.send(["frag-1 ", "frag-2 ", "frag-3"])
        out["fragmented"] = await c.recv()
        t = time.monotonic()
        await asyncio.wait_for(await c.ping(b"are you there"), 10)
        out["pong_ms"] = (time.monotonic() - t) * 1000
        big = bytes(range(256)) * (16 * 4096)
        await c.send(big)
        back = await c.recv()
        out["big_ok"] = back == big
        out["big_len"] = len(back)
    out["close_code"] = c.close_code
    return out


async def server_close():
    async with ws() as c:
        await c.send("close:" + (ARG or "4001"))
        try:
            await c.recv()
        except ConnectionClosed as e:
            return {"close_code": e.rcvd.code if e.rcvd else None, "reason": e.rcvd.reason if e.rcvd else None}
    return {"close_code": c.close_code}


async def abort():
    async with ws() as c:
        await c.send("abort")
        t = time.monotonic()
        try:
            await asyncio.wait_for(c.recv(), 10)
            return {"closed": False}
        except ConnectionClosed as e:
            return {"closed": True, "code": e.rcvd.code if e.rcvd else None, "seconds": time.monotonic() - t}


async def upstream_exit():
    async with ws() as c:
        await c.send("exit")
        t = time.monotonic()
        try:
            await asyncio.wait_for(c.recv(), 10)
            return {"closed": False}
        except ConnectionClosed:
            return {"closed": True, "seconds": time.monotonic() - t}


async def refuse():
    try:
        async with ws("/refuse"):
            return {"refused": False}
    except InvalidStatus as e:
        return {"refused": True, "status": e.response.status_code, "body": e.response.body.decode()}


async def concurrent():
    n = int(ARG or "100")

    async def one(i):
        async with ws(f"/ws/{i}") as c:
            await c.send(f"session {i}")
            got = await c.recv()
            await asyncio.sleep(0.5)  # all open at once
            await c.send(f"again {i}")
            return got == f"session {i}" and await c.recv() == f"again {i}"

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return {"ok": sum(1 for r in results if r is True), "errors": [repr(r) for r in results if r is not True][:5]}


async def hold():
    """Echoes every 0.1 s until the session ends or ARG seconds pass; prints it once open."""
    limit = float(ARG or "10")
    n, t = 0, time.monotonic()
    async with ws() as c:
        print(json.dumps({"open": True}, separators=(",", ":")), flush=True)
        try:
            while time.monotonic() - t < limit:
                await c.send(f"tick {n}")
                if await asyncio.wait_for(c.recv(), 5) == f"tick {n}":
                    n += 1
                await asyncio.sleep(0.1)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
    return {"echoes": n, "seconds": time.monotonic() - t, "close_code": c.close_code}


async def status():
    try:
        async with ws():
            return {"status": 101}
    except InvalidStatus as e:
        return {"status": e.response.status_code}


SCENARIOS = {"basic": basic, "server_close": server_close, "abort": abort, "upstream_exit": upstream_exit,
             "refuse": refuse, "concurrent": concurrent, "hold": hold, "status": status}
print(json.dumps(asyncio.run(SCENARIOS[SCENARIO]()), separators=(",", ":")), flush=True)
