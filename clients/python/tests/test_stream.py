"""Subscribing: receive, resume across restarts and kill -9, resets, dead connections."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import runnel
import runnel.aio
from runnel import Event, Reconnect, Reset

FAST = Reconnect(initial_interval=0.05, max_interval=0.3)


@pytest.fixture(params=["sse", "websocket"])
def transport(request):
    """Each stream test runs over SSE and over the hub's WebSocket."""
    return request.param


def test_subscribe_receives_typed_events(hub, transport):
    with runnel.Client(hub.url) as c, c.subscribe(["news", "sport"], transport=transport) as sub:
        sub.start()
        assert sub.connection_id
        a = c.publish("news", {"title": "Pi online"}, event="headline")
        b = c.publish(["news", "sport"], "both")
        c.publish("weather", "not subscribed")
        c.publish_raw("sport", "3:1\n")
        items = [next(sub) for _ in range(3)]
    first, second, third = items
    assert isinstance(first, Event)
    assert (first.id, first.event, first.topics, first.data) == (
        a.id,
        "headline",
        ("news",),
        {"title": "Pi online"},
    )
    assert first.raw == '{"title":"Pi online"}'
    assert second.id == b.id and set(second.topics) == {"news", "sport"}
    assert second.data == "both" and second.event is None
    assert third.data == "3:1" and third.topics == ("sport",)
    assert first.time.tzinfo is not None


def test_async_subscribe_receives(hub, transport):
    async def main() -> list[Event]:
        async with runnel.aio.Client(hub.url) as c:
            sub = c.subscribe("news", transport=transport)
            await sub.start()
            ids = [(await c.publish("news", n)).id for n in range(5)]
            got = []
            async for item in sub:
                assert isinstance(item, Event)
                got.append(item)
                if len(got) == 5:
                    break
            await sub.aclose()
            assert [e.id for e in got] == ids
            return got

    got = asyncio.run(main())
    assert [e.data for e in got] == [0, 1, 2, 3, 4]


def _collect(sub, n: int, out: list, done: threading.Event) -> None:
    try:
        for item in sub:
            out.append(item)
            if len([i for i in out if isinstance(i, Event)]) >= n:
                break
    finally:
        done.set()


def _take(sub, n: int, timeout: float = 20.0) -> list:
    """The next n events, read in a thread so that a missing one fails instead of hanging."""
    got: list = []
    done = threading.Event()
    threading.Thread(target=_collect, args=(sub, n, got, done), daemon=True).start()
    if not done.wait(timeout):
        sub.close()
        raise AssertionError(f"only {len(got)} of {n} events arrived")
    return got


def _resume_across(hub, interrupt, transport) -> None:
    """Events published while the subscriber is cut off arrive when it resumes: the
    subscriber reads nothing between the interrupt and the publishes, so it can only get
    them from the log, after the last id it saw."""
    with runnel.Client(hub.url, publish_retries=50) as pub, runnel.Client(hub.url) as c:
        sub = c.subscribe("t", reconnect=FAST, transport=transport)
        sub.start()
        first = [pub.publish("t", i).id for i in range(10)]
        got = _take(sub, 10)
        interrupt()
        second = [pub.publish("t", i).id for i in range(10, 20)]
        got += _take(sub, 10)
        third = [pub.publish("t", i).id for i in range(20, 25)]
        got += _take(sub, 5)
        sub.close()
    events = [e for e in got if isinstance(e, Event)]
    assert [e.id for e in events] == first + second + third, "a gap or a duplicate"
    assert [e.data for e in events] == list(range(25))
    assert sub.reconnects >= 1
    assert not any(isinstance(e, Reset) for e in got)


def test_resume_across_a_restart(hub, transport):
    _resume_across(hub, hub.restart, transport)


def test_resume_after_kill_9(hub, transport):
    def kill_and_start():
        hub.kill9()
        hub.start()

    _resume_across(hub, kill_and_start, transport)


def test_reset_is_surfaced(hub, transport):
    with runnel.Client(hub.url) as c:
        c.publish("t", "kept")
        foreign = "00000000-0000000000000001"
        with c.subscribe("t", last_event_id=foreign, transport=transport) as sub:
            first = next(sub)
            second = next(sub)
    assert isinstance(first, Reset)
    assert first.reason == "unknown_id" and first.last_event_id == foreign
    assert isinstance(second, Event) and second.data == "kept"


def test_earliest_replays_everything(hub, transport):
    with runnel.Client(hub.url) as c:
        ids = [c.publish("t", i).id for i in range(3)]
        with c.subscribe("t", last_event_id="earliest", transport=transport) as sub:
            assert [next(sub).id for _ in range(3)] == ids


def test_a_silent_stream_is_taken_for_dead_and_reopened(hub, transport):
    """The hub sends a keepalive every second here; frozen, it sends nothing, and after
    heartbeat_timeout the client reconnects and resumes once the hub runs again."""
    with runnel.Client(hub.url, timeout=2.0) as c:
        sub = c.subscribe("t", reconnect=FAST, heartbeat_timeout=1.5, transport=transport)
        sub.start()
        before = c.publish("t", "before").id
        assert next(sub).id == before
        hub.freeze()
        got: list = []
        done = threading.Event()
        reader = threading.Thread(target=_collect, args=(sub, 1, got, done), daemon=True)
        reader.start()
        time.sleep(3.0)
        hub.thaw()
        after = c.publish("t", "after").id
        assert done.wait(15)
        sub.close()
    assert [e.id for e in got if isinstance(e, Event)] == [after]
    assert sub.reconnects >= 1


def test_backoff_is_bounded_and_gives_up():
    policy = Reconnect(max_attempts=4, initial_interval=0.05, max_interval=0.2)
    for attempt in range(10):
        for _ in range(50):
            d = policy.delay(attempt)
            assert 0.0 <= d <= min(0.2, 0.05 * 2**attempt)
    with runnel.Client("http://127.0.0.1:1", timeout=1.0) as c:
        sub = c.subscribe("t", reconnect=policy)
        t0 = time.monotonic()
        try:
            sub.start()
        except runnel.UnavailableError:
            pass
        else:
            raise AssertionError("a hub that is not there was reached")
        # Three waits of at most 0.2 s between four attempts, each refused at once.
        assert time.monotonic() - t0 < 2.0
    no_retry = Reconnect(enabled=False)
    with runnel.Client("http://127.0.0.1:1") as c:
        t0 = time.monotonic()
        try:
            c.subscribe("t", reconnect=no_retry).start()
        except runnel.UnavailableError:
            assert time.monotonic() - t0 < 1.0
