"""qbox for Python: Amazon Q's streaming API with your Kiro CLI / Amazon Q
Developer CLI login, on qbox's Rust client.

    import asyncio, qbox

    async def main():
        client = qbox.Client()                     # the login the CLI uses
        async for event in client.generate_assistant_response("What is a monad?"):
            if isinstance(event, qbox.AssistantResponseEvent):
                print(event.content, end="", flush=True)

    asyncio.run(main())

The event stream is decoded by qbox's own decoder as the bytes arrive;
logins are found, and refreshed, exactly as the ``qbox`` command does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncGenerator, AsyncIterator, Dict, Optional, Union

from . import _qbox
from ._errors import (
    AnswerTooLargeError,
    Error,
    InvalidInputError,
    NoLoginError,
    ProtocolError,
    ServiceError,
    StoreError,
    TransportError,
)
from ._qbox import (
    AssistantResponseEvent,
    ChatResponse,
    CitationEvent,
    CodeEvent,
    CodeReferenceEvent,
    FollowupPromptEvent,
    InvalidStateEvent,
    MessageMetadataEvent,
    OtherEvent,
    ToolUse,
    ToolUseEvent,
)

__version__: str = _qbox.__version__

__all__ = [
    "Client",
    "EventStream",
    "Event",
    "ChatResponse",
    "ToolUse",
    "AssistantResponseEvent",
    "MessageMetadataEvent",
    "ToolUseEvent",
    "CodeEvent",
    "CodeReferenceEvent",
    "CitationEvent",
    "FollowupPromptEvent",
    "InvalidStateEvent",
    "OtherEvent",
    "export_token",
    "doctor",
    "Error",
    "NoLoginError",
    "ServiceError",
    "ProtocolError",
    "TransportError",
    "InvalidInputError",
    "StoreError",
    "AnswerTooLargeError",
]

#: Any event of an answer.
Event = Union[
    AssistantResponseEvent,
    MessageMetadataEvent,
    ToolUseEvent,
    CodeEvent,
    CodeReferenceEvent,
    CitationEvent,
    FollowupPromptEvent,
    InvalidStateEvent,
    OtherEvent,
]

PathLike = Union[str, "os.PathLike[str]"]


def _path(db: Optional[PathLike]) -> Optional[str]:
    if db is None:
        return None
    try:
        return os.fspath(db)
    except TypeError:
        raise InvalidInputError(
            f"db must be a path (str or os.PathLike), not {type(db).__name__}"
        ) from None


async def _readable(native: Any) -> None:
    """Waits until the native side has queued something: the event loop
    watches its socket (no thread waits, the GIL is free meanwhile)."""
    loop = asyncio.get_running_loop()
    fd = native.fileno()
    waiter = loop.create_future()
    loop.add_reader(fd, native.wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


class EventStream:
    """The events of one answer, as an async iterator. The request is sent
    when the stream is first read; events come as their frames complete.

    A cancelled task closes the connection at once; so does :meth:`aclose`
    (or leaving ``async with stream:``); a stream left unfinished otherwise
    closes it when it is dropped. An unfinished turn is not kept in the
    conversation; a turn is kept once the stream has ended."""

    __slots__ = ("_native", "_events")

    def __init__(self, native: _qbox.NativeStream) -> None:
        self._native = native
        self._events = self._read(native)

    @staticmethod
    async def _read(native: _qbox.NativeStream) -> AsyncGenerator[Event, None]:
        # An async generator: its C-level __anext__ hands out the events of
        # a batch without a coroutine per event. The native side reads
        # ahead; only an empty queue makes it wait.
        try:
            while True:
                events, ended = native.take()
                if events is not None:
                    for event in events:
                        yield event
                if ended:
                    return
                if events is None:
                    await _readable(native)
        finally:
            # A cancelled task, a loop left early, a stream dropped: the
            # request is cancelled and its connection closed.
            native.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    @property
    def conversation_id(self) -> Optional[str]:
        """The conversation's id: given, or made when the request was sent
        (``None`` before that for a new conversation)."""
        return self._native.conversation_id

    async def aclose(self) -> None:
        """Closes the connection now; the turn is not kept."""
        self._native.close()
        await self._events.aclose()

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Client:
    """A client of Amazon Q's streaming API.

    With no arguments it uses the login the CLI uses (``QBOX_DB`` and
    ``QBOX_CLI`` choose a store, as for ``qbox``; without a store,
    ``QBOX_ACCESS_TOKEN`` or a Kiro API key in ``KIRO_API_KEY``). ``db``
    names a store file instead; ``access_token`` (with ``profile_arn`` for
    IAM Identity Center) gives a bare token, never refreshed. ``endpoint``
    overrides the endpoint the login's profile picks (as
    ``QBOX_Q_ENDPOINT``). A stored token is refreshed as ``qbox`` refreshes
    it: under the same lock, by the same rule. Conversations are kept where
    ``qbox chat`` keeps them, so either can continue the other's.
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        db: Optional[PathLike] = None,
        endpoint: Optional[str] = None,
        access_token: Optional[str] = None,
        profile_arn: Optional[str] = None,
    ) -> None:
        self._native: _qbox.NativeClient = _qbox.NativeClient(
            _path(db), endpoint, access_token, profile_arn
        )

    def generate_assistant_response(
        self,
        prompt: str,
        conversation_id: Optional[str] = None,
        model: Optional[str] = None,
    ) -> EventStream:
        """Asks ``prompt`` (in the conversation ``conversation_id``, a UUID
        from an earlier answer, or a new one) and returns its events as an
        async iterator. A bad prompt or id raises here, before anything is
        sent."""
        return EventStream(self._native.stream(prompt, conversation_id, model))

    async def chat(
        self,
        prompt: str,
        conversation_id: Optional[str] = None,
        model: Optional[str] = None,
    ) -> ChatResponse:
        """Asks ``prompt`` and returns the whole answer: ``.text``,
        ``.conversation_id`` (pass it back to continue),
        ``.tool_uses`` and ``.code_references``."""
        native = self._native.chat(prompt, conversation_id, model)
        try:
            while True:
                response = native.result()
                if response is not None:
                    return response
                await _readable(native)
        finally:
            native.close()


def export_token(db: Optional[PathLike] = None, field: Optional[str] = "access") -> Any:
    """The login's token, refreshed first when it is due (as ``qbox
    export-token``): ``field="access"`` (the default) or ``"refresh"``
    returns that token as a ``str``; ``field=None`` returns a dict with
    ``accessToken``, ``refreshToken``, ``expiresAt``, ``region`` and
    ``profileArn``. The token grants access to your AWS account: never log
    it."""
    return _qbox.export_token(_path(db), field)


def doctor() -> Dict[str, Any]:
    """What ``qbox doctor --json`` reports, as a dict: where qbox looked,
    the login and its token's state, the refresh plan, where chat requests
    go (``chatEndpoint``), the Docker engine. Never a token."""
    return _qbox.doctor()
