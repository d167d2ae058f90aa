"""The asyncio client: every call of the hub's HTTP API, and subscriptions that resume."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import quote

import httpx

from ._backoff import Reconnect
from ._errors import (
    AuthError,
    ProtocolError,
    RunnelError,
    UnavailableError,
    error_from_response,
)
from ._events import Event, HistoryPage, Published, Reset, StreamItem, parse_data
from ._sse import Decoder, Frame
from ._subscription import BaseSubscription, _event, _field, _published

if TYPE_CHECKING:
    from ._ws import AsyncWsSubscription

Topics = Union[str, Sequence[str]]
AnySubscription = Union["AsyncSubscription", "AsyncWsSubscription"]
Since = Union[str, datetime, timedelta]

DEFAULT_URL = "http://127.0.0.1:8080"


def _topic_list(topics: Topics) -> list[str]:
    return [topics] if isinstance(topics, str) else list(topics)


def _since(value: Since) -> str:
    if isinstance(value, timedelta):
        return f"{max(1, int(value.total_seconds()))}s"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def _time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(timezone.utc)


class AsyncClient:
    """A hub at ``url``, with a JWT (``token``) or an API key (``api_key``), or neither on an
    open hub. ``ca`` names a PEM file to trust for an ``https`` hub with its own certificate.
    ``timeout`` bounds every request (and the opening of a stream).

    Publishes carry a generated idempotency key unless one is given (``idempotency=False``
    turns that off), and are retried up to ``publish_retries`` times after a dropped
    connection, a 429 or a 503: the hub answers a retry with the first publish's answer, so a
    retried publish is never published twice.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        api_key: str | None = None,
        ca: str | None = None,
        timeout: float = 10.0,
        publish_retries: int = 3,
        idempotency: bool = True,
        retry_backoff: Reconnect = Reconnect(initial_interval=0.2, max_interval=5.0),
    ) -> None:
        headers = {"user-agent": "runnel-python/0.1.0"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if api_key is not None:
            headers["x-api-key"] = api_key
        verify: bool | ssl.SSLContext = True
        self._ssl: ssl.SSLContext | None = None
        if ca is not None:
            verify = self._ssl = ssl.create_default_context(cafile=ca)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.publish_retries = publish_retries
        self.idempotency = idempotency
        self._retry = retry_backoff
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, verify=verify
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections this client holds."""
        await self._http.aclose()

    # -- requests -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        retries: int = 0,
    ) -> httpx.Response:
        """Sends one request; retries dropped connections, 429 and 503 ``retries`` times
        (only for requests that are safe to repeat); raises the hub's refusal."""
        attempt = 0
        while True:
            err: RunnelError
            try:
                if json_body is not None:
                    content = json.dumps(json_body).encode()
                    headers = {**(headers or {}), "content-type": "application/json"}
                resp = await self._http.request(
                    method, path, content=content, params=params, headers=headers
                )
            except httpx.TransportError as e:
                err = UnavailableError(f"{type(e).__name__}: {e} ({self.url})")
            else:
                if resp.is_success:
                    return resp
                err = error_from_response(
                    resp.status_code, resp.content, resp.headers.get("retry-after")
                )
                if not isinstance(err, UnavailableError):
                    raise err
            if attempt >= retries:
                raise err
            wait = err.retry_after if isinstance(err, UnavailableError) else None
            await asyncio.sleep(wait if wait is not None else self._retry.delay(attempt))
            attempt += 1

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"the hub's answer is not JSON: {e}") from e

    def _key(self, key: str | None) -> str | None:
        if key is not None:
            return key
        return uuid.uuid4().hex if self.idempotency else None

    async def _publish_body(self, path: str, body: dict[str, Any]) -> Published:
        retries = self.publish_retries if body.get("idempotency_key") else 0
        resp = await self._request("POST", path, json_body=body, retries=retries)
        replayed = resp.headers.get("idempotent-replayed") == "true"
        return _published(self._json(resp), replayed)

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        topic: Topics,
        data: Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
        persist: bool | None = None,
        retry: int | None = None,
    ) -> Published:
        """Publishes ``data`` (any JSON value) to one topic or several (one event, one id)."""
        body: dict[str, Any] = {"data": data}
        if isinstance(topic, str):
            body["topic"] = topic
        else:
            body["topics"] = list(topic)
        return await self._publish_body(
            "/publish", self._options(body, event, idempotency_key, persist, retry)
        )

    async def publish_to_user(
        self,
        user: str,
        data: Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publishes to a user's personal topic ``user/<user>``."""
        body = self._options({"user": user, "data": data}, event, idempotency_key, None, None)
        return await self._publish_body("/publish", body)

    async def broadcast(
        self, data: Any, *, event: str | None = None, idempotency_key: str | None = None
    ) -> Published:
        """Publishes to every stream (the hub's ``$broadcast`` topic)."""
        body = self._options({"broadcast": True, "data": data}, event, idempotency_key, None, None)
        return await self._publish_body("/publish", body)

    async def publish_batch(self, events: Iterable[dict[str, Any]]) -> list[Published]:
        """Publishes several events atomically: all of them, or none. Each is a dict as
        ``POST /publish`` takes it (``topic``/``topics``/``user``/``broadcast``, ``data``,
        ``event``...); each gets an idempotency key unless it has one."""
        batch = []
        for ev in events:
            ev = dict(ev)
            key = self._key(ev.get("idempotency_key"))
            if key is not None:
                ev["idempotency_key"] = key
            batch.append(ev)
        safe = all(ev.get("idempotency_key") for ev in batch)
        resp = await self._request(
            "POST", "/publish", json_body=batch, retries=self.publish_retries if safe else 0
        )
        doc = self._json(resp)
        if not isinstance(doc, list):
            raise ProtocolError(f"a batch publish answered {str(doc)[:200]}")
        return [_published(d) for d in doc]

    async def publish_raw(
        self,
        topic: str,
        body: str | bytes,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publishes a body as it is (UTF-8 text; one trailing line break is dropped)."""
        params = {}
        if event is not None:
            params["event"] = event
        key = self._key(idempotency_key)
        if key is not None:
            params["idempotency_key"] = key
        content = body.encode() if isinstance(body, str) else body
        resp = await self._request(
            "POST",
            "/publish/" + quote(topic, safe="/@:"),
            content=content,
            params=params,
            headers={"content-type": "text/plain; charset=utf-8"},
            retries=self.publish_retries if key else 0,
        )
        replayed = resp.headers.get("idempotent-replayed") == "true"
        return _published(self._json(resp), replayed)

    async def notify(
        self,
        title: str,
        content: str | None = None,
        *,
        type: str = "info",
        auto_hide: bool | None = None,
        duration: int | None = None,
        topic: str | None = None,
        user: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Sends a notification (``event: notification``): to everyone, or to ``topic`` or
        ``user``. ``type`` is ``info``, ``success``, ``warning`` or ``error``."""
        body: dict[str, Any] = {"title": title, "type": type}
        for k, v in (
            ("content", content),
            ("auto_hide", auto_hide),
            ("duration", duration),
            ("topic", topic),
            ("user", user),
        ):
            if v is not None:
                body[k] = v
        key = self._key(idempotency_key)
        if key is not None:
            body["idempotency_key"] = key
        return await self._publish_body("/notify", body)

    def _options(
        self,
        body: dict[str, Any],
        event: str | None,
        key: str | None,
        persist: bool | None,
        retry: int | None,
    ) -> dict[str, Any]:
        if event is not None:
            body["event"] = event
        if persist is not None:
            body["persist"] = persist
        if retry is not None:
            body["retry"] = retry
        key = self._key(key)
        if key is not None:
            body["idempotency_key"] = key
        return body

    # -- sessions, history, tokens, operations -----------------------------------------

    async def session_subscribe(
        self, topics: Topics, *, connection_id: str | None = None
    ) -> list[str]:
        """Adds topics to the caller's session (every open stream of the user follows), or,
        with ``connection_id``, to that one stream. Returns once the hub has applied it."""
        return await self._session("/subscribe", topics, connection_id)

    async def session_unsubscribe(
        self, topics: Topics, *, connection_id: str | None = None
    ) -> list[str]:
        """Removes topics from the caller's session, or from one stream."""
        return await self._session("/unsubscribe", topics, connection_id)

    async def _session(self, path: str, topics: Topics, connection_id: str | None) -> list[str]:
        body: dict[str, Any] = {"topics": _topic_list(topics)}
        if connection_id is not None:
            body["connection_id"] = connection_id
        resp = await self._request("POST", path, json_body=body, retries=self.publish_retries)
        return list(_field(self._json(resp), "topics", list))

    async def history(
        self,
        topics: Topics,
        *,
        after: str | None = None,
        since: Since | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """One page of retained events on ``topics``, oldest first: those after the id
        ``after``, or since ``since`` (a duration such as ``"10m"``, a ``timedelta`` or a
        ``datetime``), at most ``limit`` (the hub's default 100, at most 1000)."""
        params: list[tuple[str, str]] = [("topic", t) for t in _topic_list(topics)]
        if after is not None:
            params.append(("after", after))
        if since is not None:
            params.append(("since", _since(since)))
        if limit is not None:
            params.append(("limit", str(limit)))
        doc = self._json(await self._request("GET", "/history", params=params, retries=2))
        events = [_event(e, _time(e.get("time"))) for e in _field(doc, "events", list)]
        reset = None
        if isinstance(doc.get("reset"), dict):
            r = doc["reset"]
            reset = Reset(str(r.get("reason")), r.get("last_event_id"))
        nxt = doc.get("next")
        return HistoryPage(events, nxt if isinstance(nxt, str) else None, reset)

    async def sse_token(self) -> str:
        """A single-use, 30-second token for ``GET /events?token=`` (for a browser)."""
        resp = await self._request("POST", "/auth/sse-token")
        return str(_field(self._json(resp), "token", str))

    async def health(self) -> dict[str, Any]:
        """``GET /health``; raises UnavailableError while the hub is draining or failing."""
        doc = self._json(await self._request("GET", "/health"))
        if not isinstance(doc, dict):
            raise ProtocolError(f"/health answered {doc!r}")
        return doc

    # -- streams ------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Topics,
        *,
        last_event_id: str | None = None,
        reconnect: Reconnect = Reconnect(),
        heartbeat_timeout: float = 45.0,
        transport: str = "sse",
    ) -> AnySubscription:
        """An async iterator of the events on ``topics`` (and ``Reset`` when the hub could
        not resume). It reconnects by ``reconnect`` and resumes after the last id it yielded,
        so nothing is missed and nothing arrives twice. A stream silent for
        ``heartbeat_timeout`` seconds (the hub sends a keepalive every 15 s by default) is
        taken for dead and reopened. 401 and 403 are raised, never retried.

        ``transport="websocket"`` reads ``GET /ws`` instead of ``GET /events``; that
        subscription can also ``publish()``, ``subscribe_topics()`` and
        ``unsubscribe_topics()`` over the connection."""
        args = (self, _topic_list(topics), last_event_id, reconnect, heartbeat_timeout)
        if transport == "sse":
            return AsyncSubscription(*args)
        if transport == "websocket":
            from ._ws import AsyncWsSubscription

            return AsyncWsSubscription(*args)
        raise ValueError(f"transport {transport!r}: use 'sse' or 'websocket'")


class AsyncSubscription(BaseSubscription):
    """A stream that resumes by itself. Iterate it with ``async for``; ``aclose()`` ends it."""

    def __init__(
        self,
        client: AsyncClient,
        topics: list[str],
        last_event_id: str | None,
        reconnect: Reconnect,
        heartbeat_timeout: float,
    ) -> None:
        super().__init__(client, topics, last_event_id, reconnect, heartbeat_timeout)
        self._resp: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._failures = 0

    async def start(self) -> None:
        """Opens the stream now (retrying by the policy) and returns once the hub has
        confirmed it; iterating opens it anyway."""
        await self._ensure_open()

    async def next(self) -> StreamItem | None:
        """The next event or reset, or ``None`` once the subscription is closed."""
        while not self._closed:
            await self._ensure_open()
            frame = await self._read_frame()
            if frame is None:
                continue
            item = self._item(frame)
            if item is not None:
                return item
        return None

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()

    async def reopen(self) -> None:
        """Closes the open stream; the next read opens a new one with the current topics,
        resuming after the last event. Not while another task is reading."""
        await self._drop()

    async def _drop(self) -> None:
        self.connected.clear()
        resp, self._resp, self._lines = self._resp, None, None
        if resp is not None:
            await resp.aclose()

    async def _ensure_open(self) -> None:
        while self._resp is None and not self._closed:
            try:
                await self._open()
                self._failures = 0
            except RunnelError as e:
                await self._drop()
                if not isinstance(e, UnavailableError):
                    raise
                self._failures += 1
                if self.reconnect.gives_up(self._failures):
                    raise
                wait = e.retry_after
                await asyncio.sleep(
                    wait if wait is not None else self.reconnect.delay(self._failures - 1)
                )

    async def _open(self) -> None:
        c = self._client
        params = httpx.QueryParams([("topic", t) for t in self.topics])
        headers = {"accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["last-event-id"] = self.last_event_id
        timeout = httpx.Timeout(c.timeout, read=self.heartbeat_timeout)
        try:
            req = c._http.build_request(
                "GET", "/events", params=params, headers=headers, timeout=timeout
            )
            resp = await c._http.send(req, stream=True)
        except httpx.TransportError as e:
            raise UnavailableError(f"{type(e).__name__}: {e} ({c.url})") from e
        if not resp.is_success:
            body = await resp.aread()
            await resp.aclose()
            raise error_from_response(resp.status_code, body, resp.headers.get("retry-after"))
        self._resp = resp
        self._lines = resp.aiter_lines()
        self.opened_topics = list(self.topics)
        # The hub's first event is `connected`; until it arrives the stream is not confirmed.
        while True:
            frame = await self._read_frame(opening=True)
            if frame is None:
                raise UnavailableError("the stream ended before the hub confirmed it")
            if frame.event == "connected":
                doc = parse_data(frame.data)
                cid = doc.get("connection_id") if isinstance(doc, dict) else None
                self.connection_id = cid if isinstance(cid, str) else None
                self.connected.set()
                return

    async def _read_frame(self, opening: bool = False) -> Frame | None:
        """The next frame, or None when the stream dropped (it is then reopened)."""
        assert self._lines is not None
        decoder = Decoder()
        try:
            async for line in self._lines:
                frame = decoder.feed(line)
                if frame is not None:
                    return frame
        except httpx.TransportError as e:
            # A read timeout is a stream that missed its heartbeats: a dead peer.
            if opening:
                raise UnavailableError(f"{type(e).__name__}: {e}") from e
        if opening:
            return None
        await self._drop()
        self.reconnects += 1
        return None

    def _item(self, frame: Frame) -> StreamItem | None:
        name = frame.event
        if frame.id is None and name in ("reset", "closed", "shutdown", "connected"):
            doc = parse_data(frame.data)
            if name == "reset":
                reason = doc.get("reason") if isinstance(doc, dict) else None
                return Reset(str(reason or "unknown"), self.last_event_id)
            if name == "closed":
                reason = doc.get("reason") if isinstance(doc, dict) else None
                if reason == "token_expired":
                    self._closed = True
                    raise AuthError("the stream's credentials expired", code="token_expired")
                if reason == "replaced":
                    # Reconnecting would replace the newer stream in turn, back and forth.
                    self._closed = True
                    raise RunnelError(
                        "a newer stream of the same user replaced this one", code="replaced"
                    )
            # shutdown, slow_reader, closed_by_admin: the stream ends; the next read
            # reconnects and resumes, as EventSource does.
            return None
        if frame.id is None:
            return None
        if frame.id == self.last_event_id:
            return None
        self.last_event_id = frame.id
        return Event(
            id=frame.id,
            event=name,
            topics=tuple(frame.topics),
            data=parse_data(frame.data),
            raw=frame.data,
            time=datetime.now(timezone.utc),
        )
