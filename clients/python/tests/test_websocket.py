"""What only a WebSocket subscription does: publish, subscribe and unsubscribe over the
connection, and the handler style over it."""

from __future__ import annotations

import queue

import pytest
from conftest import events

import runnel
from runnel import Event


def test_publish_over_the_socket_is_acknowledged(auth_hub):
    tok = auth_hub.token("fay", "--publish", "news", "--subscribe", "*")
    with runnel.Client(auth_hub.url, token=tok) as c:
        with c.subscribe("news", transport="websocket") as sub:
            sub.start()
            one = sub.publish("news", {"n": 1}, event="count")
            assert one.topics == ("news",) and one.delivered == 1
            got = events(sub, 1)[0]
            assert (got.id, got.event, got.data) == (one.id, "count", {"n": 1})
            with pytest.raises(runnel.ForbiddenError) as e:
                sub.publish("sport", 1)
            assert e.value.code == "forbidden"
            # The refusal did not end the connection.
            two = sub.publish("news", 2)
            assert events(sub, 1)[0].id == two.id
        with pytest.raises(runnel.RunnelError):
            c.subscribe("news").publish("news", 1)  # SSE: publish through the client


def test_subscribe_with_last_event_id_replays_then_unsubscribe_stops(hub):
    with runnel.Client(hub.url) as c:
        early = [c.publish("late", i).id for i in range(3)]
        with c.subscribe("a", transport="websocket") as sub:
            sub.start()
            topics = sub.subscribe_topics(["late"], last_event_id=early[0])
            assert "late" in topics and "late" in sub.topics
            replayed = events(sub, 2)
            assert [e.id for e in replayed] == early[1:]
            live = c.publish("late", "live").id
            assert events(sub, 1)[0].id == live
            assert "late" not in sub.unsubscribe_topics(["late"])
            c.publish("late", "gone")
            marker = c.publish("a", "marker").id
            assert events(sub, 1)[0].id == marker


def test_auth_failures_over_websocket_are_raised(auth_hub):
    with runnel.Client(auth_hub.url) as anon, pytest.raises(runnel.AuthError):
        anon.subscribe("t", transport="websocket").start()
    reader = auth_hub.token("gus", "--subscribe", "news")
    with runnel.Client(auth_hub.url, token=reader) as c, pytest.raises(runnel.ForbiddenError):
        c.subscribe("secret", transport="websocket").start()


def test_ws_handler_client_end_to_end(auth_hub):
    host, port = auth_hub.addr.split(":")
    tok = auth_hub.token("hal", "--publish", "*", "--subscribe", "*")
    client = runnel.create_ws_client(
        host=host, port=int(port), token=tok, channels=["news"], reconnect_interval=0.3
    )
    got: queue.Queue = queue.Queue()

    @client.on_event("notification")
    def toast(ev: Event) -> None:
        got.put(("toast", ev.data["title"]))

    @client.on_event("message")
    def plain(ev: Event) -> None:
        got.put((ev.topics, ev.data))

    client.connect()
    try:
        client.send_to_channel("news", "first")
        assert got.get(timeout=5) == (("news",), "first")
        client.subscribe_to_channel("sport")
        client.send_to_channel("sport", "goal")
        assert got.get(timeout=5) == (("sport",), "goal")
        client.send_to_user("hal", "me")
        assert got.get(timeout=5) == (("user/hal",), "me")
        client.send_notification(title="Disk", content="91%", type="warning")
        assert got.get(timeout=5) == ("toast", "Disk")
        auth_hub.restart()
        with runnel.Client(auth_hub.url, token=tok, publish_retries=20) as pub:
            pub.publish("sport", "after restart")
        assert got.get(timeout=10) == (("sport",), "after restart")
        client.unsubscribe_from_channel("sport")
        client.send_to_channel("sport", "no longer")
        client.send_to_channel("news", "still")
        assert got.get(timeout=5) == (("news",), "still")
    finally:
        client.disconnect()
