"""The exceptions qbox raises: every one is a :class:`Error`."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "NoLoginError",
    "ServiceError",
    "ProtocolError",
    "TransportError",
    "InvalidInputError",
    "StoreError",
    "AnswerTooLargeError",
]


class Error(Exception):
    """Any failure of qbox. ``str(error)`` is the error and, on a second
    line, ``hint: ...`` when there is a next step to suggest (also in
    ``.hint``)."""

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is None and "\nhint: " in message:
            hint = message.split("\nhint: ", 1)[1]
        self.hint = hint


class NoLoginError(Error):
    """No usable login: no store, a login that has expired and cannot be
    refreshed, a bare token past its expiry, a rejected API key. The
    message ends with how to log in."""


class ServiceError(Error):
    """Amazon Q answered with an error: an HTTP error before the answer
    (``status`` set) or an exception frame inside it (``status`` None).

    ``code`` is the service's error code (``ThrottlingException``,
    ``AccessDeniedException``, ...), ``kind`` qbox's class of it
    (``Throttling``, ``MonthlyLimit``, ``ExpiredToken``, ...), and
    ``retryable`` whether trying again later may help (qbox already
    retried before the answer started)."""

    def __init__(
        self,
        message: str,
        *,
        hint: Optional[str] = None,
        code: str = "",
        status: Optional[int] = None,
        retryable: bool = False,
        kind: str = "Other",
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.status = status
        self.retryable = retryable
        self.kind = kind


class ProtocolError(Error):
    """The answer was not a valid event stream: a frame failed a check
    (length, checksum, headers), the connection was cut in the middle of a
    frame, an event's JSON was broken, or something else answered."""


class TransportError(Error):
    """Amazon Q could not be reached, went silent for longer than the idle
    timeout, or answered with a redirect (never followed)."""


class InvalidInputError(Error, ValueError):
    """Something passed in is wrong: a prompt that is not a non-empty
    ``str``, a ``conversation_id`` that is not a UUID or names no stored
    conversation, a bad profile ARN or setting. Nothing was sent."""


class StoreError(Error):
    """The store cannot be read: its path is a directory, a FIFO, a
    symbolic link or not an SQLite database, or it is locked or broken."""


class AnswerTooLargeError(Error):
    """The answer grew past the cap (``QBOX_Q_MAX_ANSWER_BYTES``, 2 MiB by
    default): qbox stopped reading it and kept none of it. ``limit`` is the
    cap in bytes."""

    def __init__(self, message: str, *, hint: Optional[str] = None, limit: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.limit = limit
