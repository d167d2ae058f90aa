"""What both transports' subscriptions share, and the reading of the hub's JSON answers
that both use."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import httpx

from ._backoff import Reconnect
from ._errors import ProtocolError
from ._events import Event, Published, StreamItem


class ClientLike(Protocol):
    """What a subscription uses of the client that made it."""

    url: str
    timeout: float
    _http: httpx.AsyncClient
    _ssl: ssl.SSLContext | None


def _field(doc: Any, key: str, kind: type) -> Any:
    """A field of a JSON answer, checked, so that a surprise is a ProtocolError."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), kind):
        raise ProtocolError(f"the hub's answer lacks {key!r}: {str(doc)[:200]}")
    return doc[key]


def _published(doc: Any, replayed: bool = False) -> Published:
    return Published(
        id=_field(doc, "id", str),
        topics=tuple(_field(doc, "topics", list)),
        delivered=int(_field(doc, "delivered", int)),
        replayed=replayed,
    )


def _event(doc: Any, time: datetime) -> Event:
    """An event the hub sent as a JSON object (a history entry, a WebSocket ``event``
    message): ``data`` is already the JSON value."""
    data = doc.get("data") if isinstance(doc, dict) else None
    raw = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    kind = doc.get("event") if isinstance(doc, dict) else None
    return Event(
        id=_field(doc, "id", str),
        event=kind if isinstance(kind, str) else None,
        topics=tuple(_field(doc, "topics", list)),
        data=data,
        raw=raw,
        time=time,
    )


class BaseSubscription:
    """What both transports' subscriptions share: the topics, the resume position, the
    reconnection policy and the iteration protocol around ``next()``."""

    def __init__(
        self,
        client: ClientLike,
        topics: list[str],
        last_event_id: str | None,
        reconnect: Reconnect,
        heartbeat_timeout: float,
    ) -> None:
        self._client = client
        self.topics = topics
        self.last_event_id = last_event_id
        self.connection_id: str | None = None
        self.reconnect = reconnect
        self.heartbeat_timeout = heartbeat_timeout
        self.reconnects = 0
        #: The topics the open connection was opened with (its query names them).
        self.opened_topics: list[str] = []
        self._closed = False
        self.connected = asyncio.Event()

    def __aiter__(self) -> BaseSubscription:
        return self

    async def __anext__(self) -> StreamItem:
        item = await self.next()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> BaseSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def next(self) -> StreamItem | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def add_topics(self, topics: Iterable[str]) -> None:
        """Topics the next connection asks for, beside the current ones."""
        for t in topics:
            if t not in self.topics:
                self.topics.append(t)

    def remove_topics(self, topics: Iterable[str]) -> None:
        gone = set(topics)
        self.topics = [t for t in self.topics if t not in gone]
