"""The handler style: ``@client.on_event(...)``, ``connect()``, ``subscribe_to_channel()``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

from ._aio import AnySubscription, AsyncClient
from ._backoff import Reconnect
from ._events import Event, Published, Reset, StreamItem
from ._portal import Portal
from ._ws import AsyncWsSubscription

log = logging.getLogger("runnel")

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)

#: ``on_event`` names with a meaning of their own: every event, events without a type, resets.
ANY = "*"
MESSAGE = "message"
RESET = "reset"


def _url(host: str, port: int, tls: bool, url: str | None) -> str:
    if url is not None:
        return url
    return f"{'https' if tls else 'http'}://{host}:{port}"


class AsyncHandlerClient:
    """Calls handlers for the events of its channels, over one stream that resumes by itself.

    ``connect()`` returns once the hub has confirmed the stream, and
    ``subscribe_to_channel()`` once the hub has applied it, so whatever is published after
    either call reaches the handlers. Channels survive every reconnection.
    """

    def __init__(
        self,
        client: AsyncClient,
        channels: Sequence[str] = (),
        *,
        reconnect: Reconnect = Reconnect(),
        heartbeat_timeout: float = 45.0,
        owns_client: bool = False,
        transport: str = "sse",
    ) -> None:
        self.client = client
        self.transport = transport
        self._channels = list(channels)
        self._reconnect = reconnect
        self._heartbeat_timeout = heartbeat_timeout
        self._owns_client = owns_client
        self._handlers: dict[str, list[Handler]] = {}
        self._sub: AnySubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    @property
    def channels(self) -> list[str]:
        return list(self._sub.topics if self._sub else self._channels)

    @property
    def connected(self) -> bool:
        return self._sub is not None and self._sub.connected.is_set()

    @property
    def last_event_id(self) -> str | None:
        return self._sub.last_event_id if self._sub else None

    def on_event(self, name: str = ANY) -> Callable[[H], H]:
        """Registers a handler: for events of type ``name``, ``"message"`` for events without
        a type, ``"reset"`` for resets, ``"*"`` (the default) for every event. A handler may be
        a function or a coroutine function; it gets an :class:`Event` (or a :class:`Reset`)."""

        def register(fn: H) -> H:
            self._handlers.setdefault(name, []).append(fn)
            return fn

        return register

    async def connect(self, last_event_id: str | None = None) -> None:
        """Opens the stream (retrying by the reconnect policy) and returns once the hub has
        confirmed it; events then reach the handlers until ``disconnect()``."""
        if self._task is not None:
            return
        self._sub = self.client.subscribe(
            self._channels,
            last_event_id=last_event_id,
            reconnect=self._reconnect,
            heartbeat_timeout=self._heartbeat_timeout,
            transport=self.transport,
        )
        await self._sub.start()
        self._task = asyncio.get_running_loop().create_task(self._run(self._sub))

    async def disconnect(self) -> None:
        """Closes the stream; handlers get nothing more."""
        await self._stop_reader()
        if self._sub is not None:
            self._channels = list(self._sub.topics)
            await self._sub.aclose()
            self._sub = None
        if self._owns_client:
            await self.client.aclose()

    async def wait(self) -> None:
        """Waits until the stream ends for good (an auth failure, or giving up reconnecting),
        and raises what ended it."""
        if self._task is not None:
            await self._task
        if self.error is not None:
            raise self.error

    async def subscribe_to_channel(self, channel: str) -> None:
        """Adds a channel to the open stream; returns once the hub has applied it."""
        sub = self._sub
        if sub is None:
            if channel not in self._channels:
                self._channels.append(channel)
            return
        if channel in sub.topics:
            return
        if isinstance(sub, AsyncWsSubscription):
            await sub.subscribe_topics([channel])
            return
        sub.add_topics([channel])
        if sub.connection_id is not None:
            await self.client.session_subscribe([channel], connection_id=sub.connection_id)

    async def unsubscribe_from_channel(self, channel: str) -> None:
        """Removes a channel from the open stream and from every reconnection; returns once
        nothing more of it reaches the handlers."""
        sub = self._sub
        if sub is None:
            self._channels = [c for c in self._channels if c != channel]
            return
        if isinstance(sub, AsyncWsSubscription):
            await sub.unsubscribe_topics([channel])
            return
        sub.remove_topics([channel])
        if channel in sub.opened_topics:
            # The stream named it when it opened, and the hub keeps what a stream named:
            # reopen without it, resuming after the last event (nothing lost, nothing twice).
            await self._stop_reader()
            await sub.reopen()
            await sub.start()
            self._task = asyncio.get_running_loop().create_task(self._run(sub))
        elif sub.connection_id is not None:
            await self.client.session_unsubscribe([channel], connection_id=sub.connection_id)

    async def _stop_reader(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send_notification(
        self, title: str, content: str | None = None, *, type: str = "info", **options: Any
    ) -> Published:
        """A notification (``event: notification``) to everyone, or ``topic=``/``user=``."""
        return await self.client.notify(title, content, type=type, **options)

    async def send_to_channel(
        self, channel: str, data: Any, *, event: str | None = None
    ) -> Published:
        """Publishes to a channel: over the socket with the WebSocket transport."""
        if isinstance(self._sub, AsyncWsSubscription):
            return await self._sub.publish(channel, data, event=event)
        return await self.client.publish(channel, data, event=event)

    async def send_to_user(self, user: str, data: Any, *, event: str | None = None) -> Published:
        """Publishes to ``user/<user>``: over the socket with the WebSocket transport."""
        if isinstance(self._sub, AsyncWsSubscription):
            return await self._sub.publish_to_user(user, data, event=event)
        return await self.client.publish_to_user(user, data, event=event)

    async def _run(self, sub: AnySubscription) -> None:
        try:
            while True:
                item = await sub.next()
                if item is None:
                    return
                await self._dispatch(item)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.error = e
            log.error("runnel: the stream ended: %s", e)

    async def _dispatch(self, item: StreamItem) -> None:
        if isinstance(item, Reset):
            names = [RESET]
        else:
            assert isinstance(item, Event)
            names = [item.event or MESSAGE, ANY]
        for name in names:
            for fn in self._handlers.get(name, ()):
                try:
                    result = fn(item)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("runnel: handler %r failed", getattr(fn, "__name__", fn))


class HandlerClient:
    """The blocking handler-style client. Handlers run in the client's own thread."""

    def __init__(self, url: str, channels: Sequence[str], reconnect: Reconnect, **options: Any):
        self._portal = Portal()
        heartbeat = float(options.pop("heartbeat_timeout", 45.0))
        transport = str(options.pop("transport", "sse"))
        self._aio = AsyncHandlerClient(
            AsyncClient(url, **options),
            channels,
            reconnect=reconnect,
            heartbeat_timeout=heartbeat,
            transport=transport,
        )
        self.client = self._aio.client

    @property
    def channels(self) -> list[str]:
        return self._aio.channels

    @property
    def connected(self) -> bool:
        return self._aio.connected

    @property
    def last_event_id(self) -> str | None:
        return self._aio.last_event_id

    @property
    def error(self) -> BaseException | None:
        return self._aio.error

    def on_event(self, name: str = ANY) -> Callable[[H], H]:
        return self._aio.on_event(name)

    def connect(self, last_event_id: str | None = None) -> None:
        self._portal.call(self._aio.connect(last_event_id))

    def disconnect(self) -> None:
        if self._portal.loop.is_closed():
            return
        self._portal.call(self._aio.disconnect())
        self._portal.call(self._aio.client.aclose())
        self._portal.close()

    def wait(self) -> None:
        self._portal.call(self._aio.wait())

    def subscribe_to_channel(self, channel: str) -> None:
        self._portal.call(self._aio.subscribe_to_channel(channel))

    def unsubscribe_from_channel(self, channel: str) -> None:
        self._portal.call(self._aio.unsubscribe_from_channel(channel))

    def send_notification(
        self, title: str, content: str | None = None, *, type: str = "info", **options: Any
    ) -> Published:
        return self._portal.call(self._aio.send_notification(title, content, type=type, **options))

    def send_to_channel(self, channel: str, data: Any, *, event: str | None = None) -> Published:
        return self._portal.call(self._aio.send_to_channel(channel, data, event=event))

    def send_to_user(self, user: str, data: Any, *, event: str | None = None) -> Published:
        return self._portal.call(self._aio.send_to_user(user, data, event=event))


def _policy(auto_reconnect: bool, max_attempts: int | None, interval: float) -> Reconnect:
    return Reconnect(
        enabled=auto_reconnect,
        max_attempts=max_attempts,
        initial_interval=min(0.5, interval),
        max_interval=interval,
    )


def create_sse_client(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    api_key: str | None = None,
    channels: Sequence[str] = (),
    tls: bool = False,
    ca: str | None = None,
    url: str | None = None,
    auto_reconnect: bool = True,
    max_reconnect_attempts: int | None = 10,
    reconnect_interval: float = 5.0,
    **options: Any,
) -> HandlerClient:
    """A blocking handler-style client over SSE. ``reconnect_interval`` is the longest wait
    between attempts (backoff with full jitter grows to it); ``max_reconnect_attempts``
    consecutive failures end the stream (``None``: never)."""
    return HandlerClient(
        _url(host, port, tls, url),
        channels,
        _policy(auto_reconnect, max_reconnect_attempts, reconnect_interval),
        token=token,
        api_key=api_key,
        ca=ca,
        **options,
    )


def create_ws_client(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    api_key: str | None = None,
    channels: Sequence[str] = (),
    tls: bool = False,
    ca: str | None = None,
    url: str | None = None,
    auto_reconnect: bool = True,
    max_reconnect_attempts: int | None = 10,
    reconnect_interval: float = 5.0,
    **options: Any,
) -> HandlerClient:
    """:func:`create_sse_client` over the hub's WebSocket: channels are subscribed and
    unsubscribed, and ``send_to_channel``/``send_to_user`` published, over the connection."""
    return create_sse_client(
        host,
        port,
        token=token,
        api_key=api_key,
        channels=channels,
        tls=tls,
        ca=ca,
        url=url,
        auto_reconnect=auto_reconnect,
        max_reconnect_attempts=max_reconnect_attempts,
        reconnect_interval=reconnect_interval,
        transport="websocket",
        **options,
    )


def create_async_sse_client(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    api_key: str | None = None,
    channels: Sequence[str] = (),
    tls: bool = False,
    ca: str | None = None,
    url: str | None = None,
    auto_reconnect: bool = True,
    max_reconnect_attempts: int | None = 10,
    reconnect_interval: float = 5.0,
    heartbeat_timeout: float = 45.0,
    transport: str = "sse",
    **options: Any,
) -> AsyncHandlerClient:
    """The asyncio form of :func:`create_sse_client`."""
    client = AsyncClient(_url(host, port, tls, url), token=token, api_key=api_key, ca=ca, **options)
    return AsyncHandlerClient(
        client,
        channels,
        reconnect=_policy(auto_reconnect, max_reconnect_attempts, reconnect_interval),
        heartbeat_timeout=heartbeat_timeout,
        owns_client=True,
        transport=transport,
    )


def create_async_ws_client(
    host: str = "127.0.0.1", port: int = 8080, **options: Any
) -> AsyncHandlerClient:
    """The asyncio form of :func:`create_ws_client`."""
    return create_async_sse_client(host, port, transport="websocket", **options)
