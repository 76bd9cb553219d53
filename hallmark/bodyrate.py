"""The minimum pace of a request body, shared by the event-loop watchdog and the raw body reader.

A client that trickles a body (one byte every few seconds) holds a connection, a file
descriptor and a partial upload for as long as it likes. The rule: in every ``window``
seconds during which the server is waiting for the body, at least ``min_rate * window``
bytes (and at least one) must arrive, else the request is cut. Only time the server spends
waiting counts: while it is busy (writing to disk, reading is paused) the client cannot
send and is not to blame. A stalled body is cut after one to two windows; a slow one after
the first window that brought too little.

No aiohttp here: the registry's raw body reader (a pool thread) uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass

# Request key under which the HTTP layer puts the :class:`BodyLimits` configured for the server.
BODY_LIMITS_KEY = "hallmark.body_limits"


class BodyTooSlow(TimeoutError):
    """The request body arrived slower than the configured minimum rate (or stopped).

    A TimeoutError, so aiohttp's lingering read of an unread body after the response ends quietly.
    """


@dataclass(frozen=True)
class BodyLimits:
    window: float = 60.0
    min_rate: int = 1024

    @property
    def need(self) -> float:
        """Bytes each full window must bring."""
        return max(1.0, self.min_rate * self.window)


class BodyRate:
    """Accounts waiting time and bytes window by window (not thread-safe: one reader at a time)."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.waited = 0.0  # seconds the server waited for the client in the current window
        self.got = 0  # bytes received in the current window

    def time_left(self) -> float:
        """Waiting time left in the current window."""
        return max(self.limits.window - self.waited, 0.0)

    def add(self, waited: float, nbytes: int) -> None:
        """Record ``nbytes`` received and ``waited`` seconds spent waiting; raises when a window closes
        having brought too little."""
        self.got += nbytes
        self.waited += waited
        if self.waited < self.limits.window:
            return
        if self.got < self.limits.need:
            raise BodyTooSlow(
                f"request body slower than {self.limits.min_rate} bytes/s "
                f"({self.got} bytes in {self.limits.window:g} s of waiting)"
            )
        self.waited, self.got = 0.0, 0
