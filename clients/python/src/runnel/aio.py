"""runnel's asyncio API: the same names as the blocking one in ``runnel``."""

from ._aio import AsyncClient, AsyncSubscription
from ._aio import AsyncClient as Client
from ._aio import AsyncSubscription as Subscription
from ._handlers import AsyncHandlerClient
from ._handlers import AsyncHandlerClient as HandlerClient
from ._handlers import create_async_sse_client as create_sse_client
from ._handlers import create_async_ws_client as create_ws_client

__all__ = [
    "AsyncClient",
    "AsyncHandlerClient",
    "AsyncSubscription",
    "Client",
    "HandlerClient",
    "Subscription",
    "create_sse_client",
    "create_ws_client",
]
