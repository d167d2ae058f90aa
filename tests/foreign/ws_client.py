"""A WebSocket client nobody here wrote (Python's `websockets`) against a running hub:
connects to GET /ws, subscribes, publishes with acks, disconnects, misses events, and
resumes with the last id it saw: it must get exactly the missed ones, in order.

Usage: ws_client.py HOST:PORT. Exits non-zero, saying why, on any mismatch."""

import asyncio
import json
import sys
import urllib.request

import websockets


def fail(why):
    print(f"foreign WebSocket client: FAILED: {why}", file=sys.stderr)
    sys.exit(1)


async def next_json(ws):
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout=10)
        if isinstance(msg, bytes):
            fail(f"binary frame from the hub: {msg!r}")
        return json.loads(msg)


async def answer_to(ws, message):
    """Sends a message and returns its answer; events that come first are returned too."""
    await ws.send(json.dumps(message))
    events = []
    while True:
        v = await next_json(ws)
        if v.get("type") in ("ack", "error", "pong"):
            return v, events
        events.append(v)


def publish_over_http(addr, topic, data):
    body = json.dumps({"topic": topic, "data": data}).encode()
    req = urllib.request.Request(
        f"http://{addr}/publish", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["id"]


async def main(addr):
    seen = []
    async with websockets.connect(f"ws://{addr}/ws?topic=other") as ws:
        hello = await next_json(ws)
        if hello.get("type") != "connected" or "connection_id" not in hello:
            fail(f"first message is not `connected`: {hello}")
        pong, _ = await answer_to(ws, {"op": "ping", "ref": "p"})
        if pong != {"type": "pong", "ref": "p"}:
            fail(f"ping answered {pong}")
        ack, early = await answer_to(ws, {"op": "subscribe", "topics": ["py"], "ref": "s"})
        if ack.get("type") != "ack" or "py" not in ack["result"]["topics"]:
            fail(f"subscribe answered {ack}")
        acked = []
        for i in range(3):
            ack, events = await answer_to(
                ws, {"op": "publish", "topic": "py", "data": {"n": i}, "ref": f"m{i}"}
            )
            if ack.get("type") != "ack" or ack.get("ref") != f"m{i}":
                fail(f"publish {i} answered {ack}")
            acked.append(ack["result"]["id"])
            seen += [e for e in early + events if e.get("type") == "event"]
            early = []
        while len(seen) < 3:
            v = await next_json(ws)
            if v.get("type") == "event":
                seen.append(v)
        if [e["id"] for e in seen] != acked or [e["data"] for e in seen] != [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]:
            fail(f"events {seen} do not match the acks {acked}")
        bad, _ = await answer_to(ws, {"op": "fly", "ref": "x"})
        if bad.get("type") != "error" or bad.get("ref") != "x":
            fail(f"an unknown op answered {bad}")
    # Away: two events published meanwhile.
    missed = [publish_over_http(addr, "py", f"missed {i}") for i in range(2)]
    last = seen[-1]["id"]
    async with websockets.connect(f"ws://{addr}/ws?topic=py&last_event_id={last}") as ws:
        hello = await next_json(ws)
        if hello.get("last_event_id") != last:
            fail(f"resume not acknowledged: {hello}")
        got = [await next_json(ws) for _ in missed]
        if [g.get("id") for g in got] != missed:
            fail(f"resume got {got}, expected the ids {missed}")
        try:
            extra = await asyncio.wait_for(ws.recv(), timeout=0.5)
            fail(f"more than the missed events: {extra}")
        except asyncio.TimeoutError:
            pass
    print(f"foreign WebSocket client (websockets {websockets.__version__}): ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
