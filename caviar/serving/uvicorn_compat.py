"""A deadline for each request head, and room kept for new clients: the one workaround on uvicorn's
internals, kept here alone.

uvicorn has no timeout that covers receiving a request: timeout_keep_alive covers only the idle time
between requests, so a client that sends half a request head (slowloris) holds its connection for
ever. Upstream: Kludex/uvicorn#157 ("Further timeouts and resource limiting", closed without such a
timeout). And uvicorn's only bound, limit_concurrency, counts those held connections too: 300 slow
clients against a cap of 256 made every other client's request a 503, so the bound became the attack.
Here the connections are bounded instead: past ROOM_AT open connections, each new one closes the one
that has waited longest for a request head, if it has waited at least EVICT_IDLE_S (a client that
sends its request at once is never the one closed); past MAX_CONNECTIONS, a new one is closed itself.
A connection busy with a request is never closed for room.

This subclasses uvicorn's H11Protocol, a private class, which is why uvicorn is pinned; the canary
in tests/code/serving/test_uvicorn_compat.py fails once the hooks it overrides change.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
ROOM_AT = 512  # open connections past which idle ones make room for new ones
MAX_CONNECTIONS = 768  # the hard bound, under the common 1,024 open-file limit
EVICT_IDLE_S = 1.0  # only a connection idle this long is closed for room
HOOKS = ("connection_made", "data_received", "on_response_complete", "connection_lost")  # what it overrides


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head (slowloris guard), and room
    made for new connections by closing idle ones (see the module's docstring).

    The head's clock starts when the connection opens, and on a kept-alive connection at the first
    byte of the next request: the time in between is idle, bounded by uvicorn's keep-alive timeout
    alone, which must outlast the client's own (serving/limits.py)."""

    header_timeout_s = HEADER_TIMEOUT_S
    room_at, max_connections, evict_idle_s = ROOM_AT, MAX_CONNECTIONS, EVICT_IDLE_S
    _head_timer = None
    _idle_since: float | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._start_head_clock()
        if len(self.connections) > self.room_at:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._busy():  # a whole request head has arrived
            self._stop_head_clock()
            self._idle_since = None
        elif self._head_timer is None and not self.transport.is_closing():
            self._start_head_clock()  # the first bytes of the next request on a kept-alive connection

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._busy():  # (a pipelined request may already be in)
            self._idle_since = self.loop.time()

    def connection_lost(self, exc) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    @property
    def waiting_since(self) -> float | None:
        """When this connection began waiting for a request head; None while it serves one."""
        return self._idle_since

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _start_head_clock(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._busy() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the connection idle longest (at least evict_idle_s); else, past the hard bound, this
        new one. Connections already closing still sit in uvicorn's set and are not counted."""
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_) <= self.room_at:
            return
        latest = self.loop.time() - self.evict_idle_s
        idle = [
            (since, id(c), c)
            for c in open_
            if c is not self and (since := getattr(c, "waiting_since", None)) is not None and since <= latest
        ]
        if idle:
            min(idle)[2].transport.close()
        elif len(open_) > self.max_connections:
            self.transport.close()
