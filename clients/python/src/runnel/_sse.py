"""An incremental Server-Sent Events decoder that keeps runnel's ``topic:`` field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Frame:
    """One dispatched SSE event."""

    event: str | None
    data: str
    id: str | None
    topics: list[str]


class Decoder:
    """Feeds on lines (without their line break) and returns a frame at each blank line
    that ends an event with data. Comments (``: keepalive``) and ``retry:`` give nothing."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._topics: list[str] = []
        self._has_data = False

    def feed(self, line: str) -> Frame | None:
        if line == "":
            if not self._has_data:
                self._reset()
                return None
            frame = Frame(self._event, "\n".join(self._data), self._id, self._topics)
            self._reset()
            return frame
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value or None
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "topic":
            self._topics.append(value)
        return None
