"""Ending a stream's upstream call from outside the task that reads it, without a cancel scope.

The drain ends the streams still open at its deadline. Cancelling a scope around every wait on
the upstream costs a scope per event; instead, the stream's response is closed at once (its
connection, synchronously): a read waiting on it wakes with a read error, and the door, told
that the stream was cut, ends it with its error event. Only AILB's own transport offers this
(see :func:`closer`); responses of any other (``UPSTREAM__TRANSPORT=httpx``, a test's) leave
the drain to the scope around each wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast


class Abort:
    """Armed by :func:`ailb.providers.http.stream_bytes` once the response is open."""

    __slots__ = ("_close",)

    def __init__(self) -> None:
        self._close: Callable[[], None] | None = None

    def arm(self, close: Callable[[], None] | None) -> None:
        self._close = close

    @property
    def armed(self) -> bool:
        return self._close is not None

    def __call__(self) -> bool:
        """Close the upstream connection now; False when that is not possible."""
        close, self._close = self._close, None
        if close is None:
            return False
        close()
        return True


def closer(extensions: dict[str, Any]) -> Callable[[], None] | None:
    """How to close a response's connection at once, from its httpx ``extensions``: AILB's
    own transport gives ``ailb.abort``, which closes the connection only while the response
    still holds it, never one already back in the pool. None for any other transport.
    httpcore's ``network_stream`` is not used: closing its socket from another task can race
    with httpcore returning the connection to its pool, and then cut a connection another
    request had taken."""
    own = extensions.get("ailb.abort")
    return cast(Callable[[], None], own) if callable(own) else None
