"""Subscriptions over the hub's WebSocket (``GET /ws``), which also publish and subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._backoff import Reconnect
from ._errors import (
    AuthError,
    BadRequestError,
    ForbiddenError,
    ProtocolError,
    RunnelError,
    UnavailableError,
    error_from_response,
)
from ._events import Event, Published, Reset, StreamItem
from ._subscription import BaseSubscription, ClientLike, _event, _published

_CLOSED = object()


def _ws_error(err: Any) -> RunnelError:
    """The exception for an ``error`` message, by the hub's code."""
    code = err.get("code") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    text = str(message or code or "error")
    if code == "unauthorized":
        return AuthError(text, code=code)
    if code == "forbidden":
        return ForbiddenError(text, code=code)
    if code in ("unavailable", "too_many_requests"):
        return UnavailableError(text, code=code)
    return BadRequestError(text, code=str(code) if code else None)


class AsyncWsSubscription(BaseSubscription):
    """A WebSocket stream that resumes by itself, like the SSE one, and can also publish,
    subscribe and unsubscribe over the connection (each awaits the hub's answer). A task of
    its own reads the socket, so answers arrive even while nobody iterates."""

    def __init__(
        self,
        client: ClientLike,
        topics: list[str],
        last_event_id: str | None,
        reconnect: Reconnect,
        heartbeat_timeout: float,
    ) -> None:
        super().__init__(client, topics, last_event_id, reconnect, heartbeat_timeout)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1024)
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._refs = itertools.count(1)
        self._error: BaseException | None = None

    async def start(self) -> None:
        """Connects (retrying by the policy) and returns once the hub has confirmed it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        waiter = asyncio.ensure_future(self.connected.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            raise self._error or RunnelError("the WebSocket ended before it was confirmed")

    async def next(self) -> StreamItem | None:
        if self._task is None:
            await self.start()
        if self._closed and self._queue.empty():
            return None
        item = await self._queue.get()
        if item is _CLOSED:
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, (Event, Reset))
        return item

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end()

    async def reopen(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    # -- over the connection ------------------------------------------------------------

    async def request(self, message: dict[str, Any]) -> Any:
        """Sends one message and returns the ``result`` of the hub's answer (or raises its
        ``error``)."""
        await asyncio.wait_for(self.connected.wait(), self._client.timeout)
        ws = self._ws
        if ws is None:
            raise UnavailableError("the WebSocket is reconnecting")
        ref = str(next(self._refs))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await ws.send(json.dumps({**message, "ref": ref}))
            return await asyncio.wait_for(future, self._client.timeout)
        except ConnectionClosed as e:
            raise UnavailableError(f"the WebSocket closed: {e}") from e
        except asyncio.TimeoutError as e:
            raise UnavailableError("the hub did not answer in time") from e
        finally:
            self._pending.pop(ref, None)

    async def publish(
        self, topic: str | list[str], data: Any, *, event: str | None = None
    ) -> Published:
        """Publishes over the socket (answered in order with the connection's other ops)."""
        msg: dict[str, Any] = {"op": "publish", "data": data}
        msg["topic" if isinstance(topic, str) else "topics"] = topic
        if event is not None:
            msg["event"] = event
        return _published(await self.request(msg))

    async def publish_to_user(self, user: str, data: Any, *, event: str | None = None) -> Published:
        msg: dict[str, Any] = {"op": "publish", "user": user, "data": data}
        if event is not None:
            msg["event"] = event
        return _published(await self.request(msg))

    async def subscribe_topics(
        self, topics: Iterable[str], *, last_event_id: str | None = None
    ) -> list[str]:
        """Adds topics to this connection (with ``last_event_id``, replays them after it);
        returns the connection's topics once the hub has applied it."""
        topics = list(topics)
        msg: dict[str, Any] = {"op": "subscribe", "topics": topics}
        if last_event_id is not None:
            msg["last_event_id"] = last_event_id
        result = await self.request(msg)
        self.add_topics(topics)
        return list(result.get("topics", [])) if isinstance(result, dict) else []

    async def unsubscribe_topics(self, topics: Iterable[str]) -> list[str]:
        topics = list(topics)
        result = await self.request({"op": "unsubscribe", "topics": topics})
        self.remove_topics(topics)
        return list(result.get("topics", [])) if isinstance(result, dict) else []

    # -- the reading task ---------------------------------------------------------------

    def _url(self) -> str:
        base = self._client.url
        scheme = "wss" if base.startswith("https") else "ws"
        query: list[tuple[str, str]] = [("topic", t) for t in self.topics]
        if self.last_event_id is not None:
            query.append(("last_event_id", self.last_event_id))
        return f"{scheme}{base[base.index(':') :]}/ws?{urlencode(query)}"

    async def _connect(self) -> ClientConnection:
        c = self._client
        headers = {k: v for k, v in c._http.headers.items() if k in ("authorization", "x-api-key")}
        ctx: ssl.SSLContext | None = None
        if c.url.startswith("https"):
            ctx = c._ssl if c._ssl is not None else ssl.create_default_context()
        half = self.heartbeat_timeout / 2
        try:
            ws = await connect(
                self._url(),
                additional_headers=headers,
                ssl=ctx,
                open_timeout=c.timeout,
                ping_interval=half,
                ping_timeout=half,
                max_size=None,
            )
        except InvalidStatus as e:
            r = e.response
            raise error_from_response(
                r.status_code, bytes(r.body or b""), r.headers.get("retry-after")
            ) from e
        except (OSError, WebSocketException, asyncio.TimeoutError) as e:
            raise UnavailableError(f"{type(e).__name__}: {e} ({c.url})") from e
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), c.timeout))
        except (ConnectionClosed, asyncio.TimeoutError, ValueError) as e:
            await ws.close()
            raise UnavailableError(f"the hub did not confirm the WebSocket: {e}") from e
        if not isinstance(first, dict) or first.get("type") != "connected":
            await ws.close()
            raise ProtocolError(f"the WebSocket opened with {str(first)[:200]}")
        cid = first.get("connection_id")
        self.connection_id = cid if isinstance(cid, str) else None
        self.opened_topics = list(self.topics)
        return ws

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._closed:
                try:
                    ws = await self._connect()
                except RunnelError as e:
                    if not isinstance(e, UnavailableError):
                        raise
                    failures += 1
                    if self.reconnect.gives_up(failures):
                        raise
                    wait = e.retry_after
                    await asyncio.sleep(
                        wait if wait is not None else self.reconnect.delay(failures - 1)
                    )
                    continue
                failures = 0
                self._ws = ws
                self.connected.set()
                try:
                    await self._read(ws)
                finally:
                    self.connected.clear()
                    self._ws = None
                    for f in self._pending.values():
                        if not f.done():
                            f.set_exception(UnavailableError("the WebSocket dropped"))
                    await ws.close()
                if not self._closed:
                    self.reconnects += 1
        except RunnelError as e:
            self._error = e
            self._closed = True
            await self._queue.put(e)
        finally:
            self._end()

    def _end(self) -> None:
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSED)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    await self._message(msg)
        except ConnectionClosed:
            return

    async def _message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "event":
            eid = msg.get("id")
            if not isinstance(eid, str) or eid == self.last_event_id:
                return
            event = _event(msg, datetime.now(timezone.utc))
            self.last_event_id = eid
            await self._queue.put(event)
        elif kind == "reset":
            await self._queue.put(Reset(str(msg.get("reason") or "unknown"), self.last_event_id))
        elif kind in ("ack", "pong", "error"):
            ref = msg.get("ref")
            future = self._pending.get(ref) if isinstance(ref, str) else None
            if future is None or future.done():
                return
            if kind == "error":
                future.set_exception(_ws_error(msg.get("error")))
            else:
                future.set_result(msg.get("result"))
        elif kind == "closed":
            reason = msg.get("reason")
            if reason == "token_expired":
                raise AuthError("the connection's credentials expired", code="token_expired")
            if reason == "replaced":
                raise RunnelError(
                    "a newer connection of the same user replaced this one", code="replaced"
                )
