"""A client for the runnel Server-Sent Events hub.

Blocking API here (``Client``, ``create_sse_client``); the asyncio one, with the same names,
in ``runnel.aio``.
"""

from ._backoff import Reconnect
from ._errors import (
    AuthError,
    BadRequestError,
    ForbiddenError,
    ProtocolError,
    RunnelError,
    UnavailableError,
)
from ._events import Event, HistoryPage, Published, Reset
from ._handlers import HandlerClient, create_sse_client, create_ws_client
from ._sync import Client, Subscription

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadRequestError",
    "Client",
    "Event",
    "ForbiddenError",
    "HandlerClient",
    "HistoryPage",
    "ProtocolError",
    "Published",
    "Reconnect",
    "Reset",
    "RunnelError",
    "Subscription",
    "UnavailableError",
    "create_sse_client",
    "create_ws_client",
]
