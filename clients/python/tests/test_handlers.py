"""The handler style, blocking and asyncio, end to end against the hub."""

from __future__ import annotations

import asyncio
import queue
import threading

import pytest

import runnel
import runnel.aio
from runnel import Event, Reset


def _host_port(hub):
    host, port = hub.addr.split(":")
    return host, int(port)


def test_handler_client_end_to_end(auth_hub):
    host, port = _host_port(auth_hub)
    tok = auth_hub.token("erin", "--publish", "*", "--subscribe", "*")
    client = runnel.create_sse_client(
        host=host,
        port=port,
        token=tok,
        channels=["news"],
        auto_reconnect=True,
        max_reconnect_attempts=10,
        reconnect_interval=0.3,
    )
    got: queue.Queue = queue.Queue()
    threads = set()

    @client.on_event("notification")
    def toast(ev: Event) -> None:
        threads.add(threading.current_thread().name)
        got.put(("notification", ev.data["title"]))

    @client.on_event("message")
    def plain(ev: Event) -> None:
        got.put(("message", ev.topics, ev.data))

    @client.on_event("*")
    def every(ev: Event) -> None:
        got.put(("any", ev.id))

    client.connect()
    try:
        assert client.connected
        # Published right after connect(): it must arrive.
        a = client.send_to_channel("news", "first")
        assert got.get(timeout=5) == ("message", ("news",), "first")
        assert got.get(timeout=5) == ("any", a.id)
        # Published right after subscribe_to_channel(): it must arrive too.
        client.subscribe_to_channel("sport")
        assert client.channels == ["news", "sport"]
        b = client.send_to_channel("sport", "goal")
        assert got.get(timeout=5) == ("message", ("sport",), "goal")
        assert got.get(timeout=5) == ("any", b.id)
        client.send_to_user("erin", "for me")
        assert got.get(timeout=5) == ("message", ("user/erin",), "for me")
        got.get(timeout=5)
        client.send_notification(title="Disk", content="91% full", type="warning")
        assert got.get(timeout=5) == ("notification", "Disk")
        got.get(timeout=5)
        # Channels survive a reconnection: the hub restarts, sport still arrives.
        auth_hub.restart()
        with runnel.Client(auth_hub.url, token=tok, publish_retries=20) as pub:
            c = pub.publish("sport", "after restart")
        assert got.get(timeout=10) == ("message", ("sport",), "after restart")
        assert got.get(timeout=5) == ("any", c.id)
        client.unsubscribe_from_channel("sport")
        client.send_to_channel("sport", "no longer")
        d = client.send_to_channel("news", "still")
        assert got.get(timeout=5) == ("message", ("news",), "still")
        assert got.get(timeout=5) == ("any", d.id)
        assert threads == {"runnel-client"}
    finally:
        client.disconnect()
    assert not client.connected


def test_handler_client_raises_auth_failures_on_connect(auth_hub):
    host, port = _host_port(auth_hub)
    client = runnel.create_sse_client(host=host, port=port, token="nope", channels=["x"])
    with pytest.raises(runnel.AuthError):
        client.connect()
    client.disconnect()


def test_async_handler_client_end_to_end(hub):
    host, port = _host_port(hub)

    async def main() -> None:
        client = runnel.aio.create_sse_client(host=host, port=port, channels=["a"])
        got: asyncio.Queue = asyncio.Queue()

        @client.on_event("ping")
        async def on_ping(ev: Event) -> None:
            await got.put(ev.data)

        @client.on_event("reset")
        def on_reset(r: Reset) -> None:
            got.put_nowait(("reset", r.reason))

        await client.connect()
        try:
            await client.send_to_channel("a", 1, event="ping")
            assert await asyncio.wait_for(got.get(), 5) == 1
            await client.subscribe_to_channel("b")
            await client.send_to_channel("b", 2, event="ping")
            assert await asyncio.wait_for(got.get(), 5) == 2
        finally:
            await client.disconnect()

        # A resume from an id the hub never gave: the reset handler hears of it.
        again = runnel.aio.create_sse_client(host=host, port=port, channels=["a"])
        again.on_event("reset")(on_reset)
        await again.connect(last_event_id="00000000-0000000000000001")
        try:
            assert await asyncio.wait_for(got.get(), 5) == ("reset", "unknown_id")
        finally:
            await again.disconnect()

    asyncio.run(main())
