"""A deadline for each request head: the one workaround on uvicorn's internals, kept here alone.

uvicorn has no timeout that covers receiving a request: timeout_keep_alive covers only the idle time
between requests, so a client that sends half a request head (slowloris) holds its connection for
ever. Upstream: Kludex/uvicorn#157 ("Further timeouts and resource limiting", closed without such a
timeout). This subclasses uvicorn's H11Protocol, a private class, which is why uvicorn is pinned;
the canary in tests/code/serving/test_uvicorn_compat.py fails once the hooks it overrides change.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
HOOKS = ("connection_made", "data_received", "on_response_complete", "connection_lost")  # what it overrides


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head (slowloris guard)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_head_timer()  # a whole request head has arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.transport.is_closing():
            self.transport.close()
