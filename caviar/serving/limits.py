"""Limits that keep one slow or oversized client from holding the service: head and body size, head
and body deadlines, a bound on connections that slow clients cannot fill, and one on requests in flight.

uvicorn closes idle keep-alive connections, but a client that sends half a request head, or a body
one byte at a time, is otherwise waited on for ever. `TimedH11Protocol` (serving/uvicorn_compat.py)
closes a connection whose request head is not complete in time, and makes room for a new connection
by closing the one idle longest; `BodyLimit` reads the body with a size cap and a deadline before the
app sees it, answering 413 or 408 itself (the first byte within BODY_FIRST_BYTE_S, the whole within
BODY_TIMEOUT_S); `InFlightLimit` answers 503 past MAX_IN_FLIGHT requests. A request counts against
that limit only once its body is in (BodyLimit runs first), and /health never does: 260-500 clients
that sent a head and then never finished the body held every slot, and /health answered 503 in 29
to 33 of 50 samples (issue 47, item 6). uvicorn's own limit_concurrency is not used: it counts idle
connections, so slow clients filled it.

An idle keep-alive connection is kept KEEP_ALIVE_S (75 s), longer than clients keep theirs (httpx
5 s, aiohttp 15 s, nginx's upstream pool 60 s): the side that closes an idle connection must be the
client. At 5 s on both sides, a client that reused a connection idle just under 5 s raced the
server's close and got httpx.ReadError: 13 of 3,904 requests on connections idle 4.9 to 5.0 s
(issue 47, item 11; docs/benchmarks.md). Idle connections still make room for new ones past ROOM_AT.
"""

from __future__ import annotations

import asyncio
import json

from caviar.serving.uvicorn_compat import TimedH11Protocol

MAX_HEAD_BYTES = 16 * 1024  # the request line and headers
MAX_BODY_BYTES = 2 << 20  # 256 texts x 1,000 characters x up to 4 UTF-8 bytes, plus JSON
# one text: 1,000 characters, each at most 12 bytes as JSON escapes (a surrogate pair), plus the braces
ROUTE_MAX_BYTES = {"/predict": 16 * 1024}
BODY_TIMEOUT_S = 10.0
BODY_FIRST_BYTE_S = 2.0  # a client that sent its head then nothing is let go well before the total
KEEP_ALIVE_S = 75  # seconds; above every common client's idle expiry (see the docstring)
MAX_IN_FLIGHT = 256  # requests being served at once; past it, 503 with Retry-After


class BodyLimit:
    """ASGI middleware: the whole body within `max_bytes` and `timeout_s`, or 413 / 408 without the app."""

    def __init__(
        self,
        app,
        max_bytes: int = MAX_BODY_BYTES,
        timeout_s: float = BODY_TIMEOUT_S,
        first_s: float = BODY_FIRST_BYTE_S,
    ):
        self.app, self.max_bytes, self.timeout_s, self.first_s = app, max_bytes, timeout_s, first_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (head := head_bytes(scope)) > MAX_HEAD_BYTES:
            # h11 refuses an incomplete head over the limit; this refuses a complete one sent in one write
            return await _answer(send, 431, f"the request head is {head} bytes; at most {MAX_HEAD_BYTES}")
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        cap = min(self.max_bytes, ROUTE_MAX_BYTES.get(scope["path"], self.max_bytes))
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > cap:
            return await _answer(send, 413, f"the body is {int(declared)} bytes; at most {cap}")
        started = asyncio.get_running_loop().time()
        try:
            first = await asyncio.wait_for(receive(), min(self.first_s, self.timeout_s))
        except TimeoutError:
            return await _answer(send, 408, f"the body did not begin within {self.first_s:g}s")
        left = self.timeout_s - (asyncio.get_running_loop().time() - started)
        try:
            body = await asyncio.wait_for(self._read(receive, first, cap), max(left, 0.001))
        except _TooLarge:
            return await _answer(send, 413, f"the body is over {cap} bytes")
        except TimeoutError:
            return await _answer(send, 408, f"the body did not arrive within {self.timeout_s:g}s")
        if body is None:
            return None  # the client went away

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # the app now waits for the disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _read(self, receive, message: dict, cap: int) -> bytes | None:
        """The body from its first message on; None if the client went away."""
        chunks, size = [], 0
        while True:
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()


class InFlightLimit:
    """ASGI middleware: at most `max_requests` HTTP requests in the app at once, else 503 at once;
    the `exempt` paths (the health check) never wait on the others' slots."""

    def __init__(self, app, max_requests: int = MAX_IN_FLIGHT, exempt: tuple[str, ...] = ("/health",)):
        self.app, self.max_requests, self.in_flight, self.exempt = app, max_requests, 0, exempt

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_requests:
            detail = f"the service is serving {self.in_flight} requests, its limit; retry shortly"
            return await _answer(send, 503, detail, [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def head_bytes(scope) -> int:
    """The request line and headers as they came over the wire, near enough."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + len(scope["method"]) + 12
    return line + sum(len(k) + len(v) + 4 for k, v in scope["headers"])


class _TooLarge(Exception):
    pass


async def _answer(send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def uvicorn_limits(keep_alive_s: float = KEEP_ALIVE_S) -> dict:
    """The uvicorn.run keywords that go with the limits above."""
    return {
        "http": TimedH11Protocol,
        "timeout_keep_alive": keep_alive_s,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,  # an incomplete head over the limit is refused
    }
