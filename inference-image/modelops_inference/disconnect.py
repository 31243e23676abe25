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
    """Run ``work``; if the client disconnects first, cancel it and raise ``ClientGone``.

    ``work`` runs in the calling task (no task of its own); one listener task waits for
    the disconnect and cancels the calling task, which then tells that cancellation
    (``ClientGone``) from one of its own, e.g. the server shutting down (re-raised).
    """
    task = asyncio.current_task()
    assert task is not None
    state = _Listening()
    listener = asyncio.ensure_future(_cancel_when_gone(receive, task, state))
    try:
        result = await work
    except BaseException:
        if state.gone:
            raise state.client_gone(task) from None  # the client left: its error has nowhere to go
        raise
    finally:
        state.finished = True
        listener.cancel()
    if state.gone:  # cancelled, but the work swallowed it
        raise state.client_gone(task)
    return result


class _Listening:
    __slots__ = ("gone", "finished")

    def __init__(self) -> None:
        self.gone = False
        self.finished = False

    def client_gone(self, task: asyncio.Task[Any]) -> ClientGone:
        task.uncancel()  # this cancellation was ours, and is handled here
        return ClientGone()


async def _cancel_when_gone(receive: Receive, task: asyncio.Task[Any], state: _Listening) -> None:
    await _wait_disconnect(receive)
    if not state.finished:
        state.gone = True
        task.cancel()
