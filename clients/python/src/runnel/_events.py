"""What the hub sends: events, resets, publish answers and history pages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union


@dataclass(frozen=True)
class Event:
    """One event.

    ``data`` is the JSON value the event holds when its data is JSON, else its text (``raw``
    is always the text). ``event`` is the event's type, ``None`` for events without one.
    ``time`` is when the hub stored it for events read from history, and when this client
    received it for events from a stream.
    """

    id: str
    event: str | None
    topics: tuple[str, ...]
    data: Any
    raw: str
    time: datetime


@dataclass(frozen=True)
class Reset:
    """The hub could not resume from the id it was given (``reason``: ``"unknown_id"`` for an
    id from another data directory, ``"pruned"`` for one retention has passed). The events
    that follow start from what the hub still holds: refetch any state built from the stream."""

    reason: str
    last_event_id: str | None = None


@dataclass(frozen=True)
class Published:
    """The hub's answer to a publish: the event's id, the topics it went to, and how many
    open streams it was delivered to. ``replayed`` is true when an idempotency key matched an
    earlier publish, which was answered again instead of publishing twice."""

    id: str
    topics: tuple[str, ...]
    delivered: int
    replayed: bool = False


@dataclass(frozen=True)
class HistoryPage:
    """A page of ``GET /history``: events oldest first; ``next`` is the ``after`` of the next
    page (``None`` at the end); ``reset`` when the ``after`` given could not be honoured."""

    events: list[Event] = field(default_factory=list)
    next: str | None = None
    reset: Reset | None = None


StreamItem = Union[Event, Reset]


def parse_data(text: str) -> Any:
    """An event's data as the JSON value it holds, or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text
