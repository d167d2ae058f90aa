"""The blocking client: the same names as the asyncio one, run on a private event loop."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._aio import DEFAULT_URL, AnySubscription, AsyncClient, Since, Topics
from ._backoff import Reconnect
from ._errors import RunnelError
from ._events import HistoryPage, Published, StreamItem
from ._portal import Portal
from ._ws import AsyncWsSubscription


class Client:
    """A hub at ``url``; see :class:`runnel.aio.AsyncClient` for every argument.
    Use it as a context manager, or call ``close()``."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._portal = Portal()
        self._aio = AsyncClient(url, **options)
        self.url = self._aio.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._portal.loop.is_closed():
            self._portal.call(self._aio.aclose())
            self._portal.close()

    def publish(
        self,
        topic: Topics,
        data: Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
        persist: bool | None = None,
        retry: int | None = None,
    ) -> Published:
        return self._portal.call(
            self._aio.publish(
                topic,
                data,
                event=event,
                idempotency_key=idempotency_key,
                persist=persist,
                retry=retry,
            )
        )

    def publish_to_user(
        self,
        user: str,
        data: Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        return self._portal.call(
            self._aio.publish_to_user(user, data, event=event, idempotency_key=idempotency_key)
        )

    def broadcast(
        self, data: Any, *, event: str | None = None, idempotency_key: str | None = None
    ) -> Published:
        return self._portal.call(
            self._aio.broadcast(data, event=event, idempotency_key=idempotency_key)
        )

    def publish_batch(self, events: Iterable[dict[str, Any]]) -> list[Published]:
        return self._portal.call(self._aio.publish_batch(list(events)))

    def publish_raw(
        self,
        topic: str,
        body: str | bytes,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        return self._portal.call(
            self._aio.publish_raw(topic, body, event=event, idempotency_key=idempotency_key)
        )

    def notify(self, title: str, content: str | None = None, **options: Any) -> Published:
        return self._portal.call(self._aio.notify(title, content, **options))

    def session_subscribe(self, topics: Topics, *, connection_id: str | None = None) -> list[str]:
        return self._portal.call(self._aio.session_subscribe(topics, connection_id=connection_id))

    def session_unsubscribe(self, topics: Topics, *, connection_id: str | None = None) -> list[str]:
        return self._portal.call(self._aio.session_unsubscribe(topics, connection_id=connection_id))

    def history(
        self,
        topics: Topics,
        *,
        after: str | None = None,
        since: Since | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        return self._portal.call(self._aio.history(topics, after=after, since=since, limit=limit))

    def sse_token(self) -> str:
        return self._portal.call(self._aio.sse_token())

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._aio.health())

    def subscribe(
        self,
        topics: Topics,
        *,
        last_event_id: str | None = None,
        reconnect: Reconnect = Reconnect(),
        heartbeat_timeout: float = 45.0,
        transport: str = "sse",
    ) -> Subscription:
        """An iterator of events (and resets) on ``topics`` that resumes by itself, over SSE
        or ``transport="websocket"``; see :meth:`runnel.aio.AsyncClient.subscribe`."""
        sub = self._aio.subscribe(
            topics,
            last_event_id=last_event_id,
            reconnect=reconnect,
            heartbeat_timeout=heartbeat_timeout,
            transport=transport,
        )
        return Subscription(self._portal, sub)


class Subscription:
    """A stream that resumes by itself: iterate it; ``close()`` ends it."""

    def __init__(self, portal: Portal, sub: AnySubscription) -> None:
        self._portal = portal
        self._sub = sub

    @property
    def last_event_id(self) -> str | None:
        return self._sub.last_event_id

    @property
    def connection_id(self) -> str | None:
        return self._sub.connection_id

    @property
    def topics(self) -> list[str]:
        return list(self._sub.topics)

    @property
    def reconnects(self) -> int:
        return self._sub.reconnects

    def __iter__(self) -> Iterator[StreamItem]:
        return self

    def __next__(self) -> StreamItem:
        item = self._portal.call(self._sub.next())
        if item is None:
            raise StopIteration
        return item

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._portal.call(self._sub.start())

    def close(self) -> None:
        if not self._portal.loop.is_closed():
            self._portal.call(self._sub.aclose())

    def _ws(self) -> AsyncWsSubscription:
        if not isinstance(self._sub, AsyncWsSubscription):
            raise RunnelError(
                "only a WebSocket subscription sends over its connection; over SSE use "
                "Client.publish and Client.session_subscribe"
            )
        return self._sub

    def publish(self, topic: str | list[str], data: Any, *, event: str | None = None) -> Published:
        """Publishes over the WebSocket (``transport="websocket"`` only)."""
        return self._portal.call(self._ws().publish(topic, data, event=event))

    def subscribe_topics(
        self, topics: Iterable[str], *, last_event_id: str | None = None
    ) -> list[str]:
        """Adds topics to this WebSocket connection (``transport="websocket"`` only)."""
        return self._portal.call(
            self._ws().subscribe_topics(list(topics), last_event_id=last_event_id)
        )

    def unsubscribe_topics(self, topics: Iterable[str]) -> list[str]:
        return self._portal.call(self._ws().unsubscribe_topics(list(topics)))
