"""Cancel work when the client goes away (the idea of vLLM's ``with_cancellation``).

The request body has been read by the time this runs, so the next ASGI ``receive()``
returns only when the client disconnects. Racing the work against it means a client
that closes its connection cancels the work, and with it the upstream request,
whether the engine is still queueing, generating, or streaming.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClientGone(Exception):
    """The client disconnected; the work was cancelled."""


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it and raise ``ClientGone``."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        listener.cancel()
        raise
    if task in done:
        listener.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:  # noqa: BLE001 - the client is gone; the error has nowhere to go
        pass
    raise ClientGone()
