"""Publishing in every form, idempotent retries, errors, sessions, history, tokens, TLS."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time

import pytest
from conftest import BIN, events

import runnel
import runnel.aio


def test_every_publish_form_reaches_a_stream(auth_hub):
    tok = auth_hub.token("alice", "--publish", "*", "--subscribe", "*")
    with runnel.Client(auth_hub.url, token=tok) as c, c.subscribe(["a", "b", "user/alice"]) as sub:
        sub.start()
        one = c.publish("a", {"n": 1}, event="one")
        two = c.publish(["a", "b"], 2)
        user = c.publish_to_user("alice", "hi alice")
        cast = c.broadcast("to all", event="maintenance")
        batch = c.publish_batch([{"topic": "a", "data": "x"}, {"topic": "b", "data": "y"}])
        raw = c.publish_raw("b", b"raw text\n", event="log")
        note = c.notify("Backup done", "3 GB", type="success", topic="a")
        got = events(sub, 8)
    ids = [one.id, two.id, user.id, cast.id, batch[0].id, batch[1].id, raw.id, note.id]
    assert [e.id for e in got] == ids
    assert got[0].event == "one" and got[0].data == {"n": 1}
    assert set(got[1].topics) == {"a", "b"} and two.topics == ("a", "b")
    assert got[2].topics == ("user/alice",) and got[2].data == "hi alice"
    assert got[3].topics == ("$broadcast",) and got[3].event == "maintenance"
    assert [e.data for e in got[4:6]] == ["x", "y"]
    assert got[6].data == "raw text" and got[6].event == "log"
    assert got[7].event == "notification"
    assert got[7].data["title"] == "Backup done" and got[7].data["type"] == "success"
    assert one.delivered == 1


class DropFirstAnswer:
    """A proxy that passes the first request on to the hub but drops the connection instead
    of returning the hub's answer: a publish that happened, whose answer was lost."""

    def __init__(self, target: str) -> None:
        host, port = target.split(":")
        self.target = (host, int(port))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._pipe, args=(client, first), daemon=True).start()

    def _pipe(self, client: socket.socket, drop: bool) -> None:
        upstream = socket.create_connection(self.target)
        if drop:
            data = b""
            while b"\r\n\r\n" not in data:
                data += client.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += client.recv(65536)
            upstream.sendall(head + b"\r\n\r\n" + body)
            upstream.recv(65536)  # the hub's answer: published, and then lost
            client.close()
            upstream.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while chunk := a.recv(65536):
                    b.sendall(chunk)
            except OSError:
                pass
            finally:
                b.close()

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def test_a_publish_retried_after_a_dropped_connection_is_not_duplicated(hub):
    proxy = DropFirstAnswer(hub.addr)
    with runnel.Client(hub.url) as direct, direct.subscribe("t") as sub:
        sub.start()
        with runnel.Client(proxy.url) as c:
            answer = c.publish("t", "once")
        assert proxy.connections == 2, "the publish was not retried"
        assert answer.replayed, "the retry was published again instead of answered"
        marker = direct.publish("t", "marker")
        got = events(sub, 2)
    assert [e.id for e in got] == [answer.id, marker.id]


def test_without_idempotency_a_dropped_answer_is_not_retried(hub):
    proxy = DropFirstAnswer(hub.addr)
    with runnel.Client(proxy.url, idempotency=False) as c, pytest.raises(runnel.UnavailableError):
        c.publish("t", "once")
    assert proxy.connections == 1


def test_auth_failures_are_raised_not_retried(auth_hub):
    with runnel.Client(auth_hub.url) as anon:
        t0 = time.monotonic()
        with pytest.raises(runnel.AuthError) as e:
            anon.subscribe("t").start()
        assert e.value.status == 401 and time.monotonic() - t0 < 2
        with pytest.raises(runnel.AuthError):
            anon.publish("t", 1)
    reader = auth_hub.token("bob", "--subscribe", "news")
    with runnel.Client(auth_hub.url, token=reader) as c:
        with pytest.raises(runnel.ForbiddenError) as e:
            c.subscribe("secret").start()
        assert e.value.status == 403 and e.value.code
        with pytest.raises(runnel.ForbiddenError):
            c.publish("news", 1)
    with runnel.Client(auth_hub.url, token="not.a.jwt") as bad, pytest.raises(runnel.AuthError):
        bad.subscribe("news").start()


def test_bad_requests_carry_the_hubs_code_and_message(hub):
    with runnel.Client(hub.url) as c:
        with pytest.raises(runnel.BadRequestError) as e:
            c.publish("bad topic", 1)
        assert e.value.status == 400 and e.value.code and "topic" in e.value.message
        with pytest.raises(runnel.ForbiddenError) as f:
            c.publish("$hub", 1)
        assert "reserved" in f.value.message
        with pytest.raises(runnel.BadRequestError):
            c.history("t", after="x", since="1m")


def test_sessions_reach_open_streams(auth_hub):
    tok = auth_hub.token("carol", "--publish", "*")
    with runnel.Client(auth_hub.url, token=tok) as c, c.subscribe("a") as sub:
        sub.start()
        assert "b" in c.session_subscribe("b")
        on_b = c.publish("b", "now on b")
        assert events(sub, 1)[0].id == on_b.id
        c.session_unsubscribe("b")
        c.publish("b", "not any more")
        on_a = c.publish("a", "a")
        assert events(sub, 1)[0].id == on_a.id
        # One stream only, by its connection id.
        c.session_subscribe("c", connection_id=sub.connection_id)
        on_c = c.publish("c", "c")
        assert events(sub, 1)[0].id == on_c.id


def test_history_pages(hub):
    with runnel.Client(hub.url) as c:
        ids = [c.publish("h", {"i": i}, event="e").id for i in range(5)]
        page = c.history("h", limit=3)
        assert [e.id for e in page.events] == ids[:3] and page.next == ids[2]
        rest = c.history("h", after=page.next)
        assert [e.id for e in rest.events] == ids[3:] and rest.next is None
        assert rest.events[0].data == {"i": 3} and rest.events[0].event == "e"
        assert rest.events[0].topics == ("h",)
        assert [e.id for e in c.history("h", since="1h").events] == ids
        from datetime import timedelta

        assert len(c.history("h", since=timedelta(minutes=5)).events) == 5
        gone = c.history("h", after="00000000-0000000000000001")
        assert gone.reset is not None and gone.reset.reason == "unknown_id"


def test_an_api_key(tmp_path):
    import hashlib

    from conftest import Hub

    key = "k-" + "7" * 40
    digest = hashlib.sha256(key.encode()).hexdigest()
    env = {
        "RUNNEL_AUTH_API_KEYS": (
            f'[{{name = "backend", key_sha256 = "{digest}", publish = ["jobs/*"], '
            'subscribe = ["jobs/*"]}]'
        )
    }
    hub = Hub(tmp_path / "data", env)
    hub.start()
    try:
        with runnel.Client(hub.url, api_key=key) as c, c.subscribe("jobs/1") as sub:
            sub.start()
            p = c.publish("jobs/1", "queued")
            assert events(sub, 1)[0].id == p.id
            with pytest.raises(runnel.ForbiddenError):
                c.publish("other", 1)
        with runnel.Client(hub.url, api_key="wrong") as bad, pytest.raises(runnel.AuthError):
            bad.publish("jobs/1", 1)
    finally:
        hub.stop()


def test_exchange_token(auth_hub):
    tok = auth_hub.token("dave")
    with runnel.Client(auth_hub.url, token=tok) as c:
        once = c.sse_token()
        assert once and once != tok


def test_tls_with_a_ca_file(tmp_path):
    from conftest import Hub

    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    subprocess.run(
        [
            str(BIN),
            "cert",
            "--self-signed",
            "--hosts",
            "127.0.0.1,localhost",
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
        check=True,
        capture_output=True,
    )
    hub = Hub(tmp_path / "data", {"RUNNEL_TLS_CERT": str(cert), "RUNNEL_TLS_KEY": str(key)})
    hub.start()
    try:
        assert hub.url.startswith("https://")
        with runnel.Client(hub.url, ca=str(cert)) as c, c.subscribe("t") as sub:
            assert c.health()["status"] == "ok"
            sub.start()
            p = c.publish("t", "over tls")
            assert events(sub, 1)[0].id == p.id
        with runnel.Client(hub.url) as untrusted, pytest.raises(runnel.UnavailableError):
            untrusted.health()
    finally:
        hub.stop()


def test_async_api_has_the_same_names(hub):
    sync_names = {n for n in dir(runnel.Client) if not n.startswith("_")}
    async_names = {n for n in dir(runnel.aio.Client) if not n.startswith("_")}
    assert sync_names - {"close"} <= async_names

    async def main() -> None:
        async with runnel.aio.Client(hub.url) as c:
            p = await c.publish("a", 1)
            batch = await c.publish_batch([{"topic": "a", "data": 2}])
            page = await c.history("a")
            assert [e.id for e in page.events] == [p.id, batch[0].id]
            assert (await c.health())["status"] == "ok"

    asyncio.run(main())


def test_the_command_line(hub):
    import sys

    env = {"RUNNEL_URL": hub.url, "PATH": "/usr/bin:/bin"}
    sub = subprocess.Popen(
        [sys.executable, "-m", "runnel", "sub", "cli", "--last-event-id", "earliest"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "runnel", "pub", "cli", '{"x": 1}', "--json", "--event", "e"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        import json

        answer = json.loads(out.stdout)
        assert sub.stdout is not None
        line = json.loads(sub.stdout.readline())
        assert line == {"id": answer["id"], "event": "e", "topics": ["cli"], "data": {"x": 1}}
    finally:
        sub.terminate()
        sub.wait(5)
