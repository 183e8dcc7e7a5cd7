"""Slow clients against the service: connections that each send part of a request head and stop,
reopened as the server closes them, while another client samples /health and /predict.

To run: python -m bench.slow_clients   (the registry's nsmc-sentiment/current, or --model DIR)
        python -m bench.slow_clients --smoke   (a tiny model on the test fixture, 20 slow connections)

Traffic goes to 127.0.0.1 only; the connections, the samples and the seconds are all bounded, and
the server it starts is stopped at the end. Target (hardening 2, item 1): with 500 slow connections
held open, >= 99% of samples from another client answer 200, with a p99 under 1 s.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.common import BenchParser, project_path, write_result
from bench.serve_load import smoke_model, start_server
from caviar.experiment.layout import registry_root

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished
# a whole head announcing a body that never comes (issue 47, item 6)
HEAD_WITHOUT_BODY = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
)
PATHS = ("/health", "/predict")
TARGET_SHARE, TARGET_P99_S = 0.99, 1.0


def allow_open_files(wanted: int) -> None:
    """Raise this process's open-file limit toward `wanted` (up to the hard limit): one per socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class SlowClients:
    """`count` connections that each send `payload` (part of a head, or a head without its body) and
    wait; each is reopened when closed."""

    def __init__(self, host: str, port: int, count: int, payload: bytes = PARTIAL_HEAD):
        self.host, self.port, self.count, self.payload = host, port, count, payload
        self.open = self.peak = self.closed_by_server = self.refused = 0
        self.stop = asyncio.Event()

    async def hold(self) -> None:
        await asyncio.gather(*(self._one() for _ in range(self.count)))

    async def _one(self) -> None:
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.05)
                continue
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                writer.write(self.payload)
                reading = asyncio.ensure_future(reader.read(1))
                stopping = asyncio.ensure_future(self.stop.wait())
                done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if reading in done:
                    self.closed_by_server += 1
                reading.cancel()
                stopping.cancel()
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.close()


async def sample(base: str, per_path: int, interval_s: float, deadline: float) -> dict[str, list]:
    """(status, seconds) for `per_path` requests to each path, each on a fresh connection."""
    samples: dict[str, list] = {path: [] for path in PATHS}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=5.0) as client:
        for _ in range(per_path):
            for path in PATHS:
                if time.monotonic() > deadline:
                    return samples
                started = time.perf_counter()
                try:
                    if path == "/health":
                        status = (await client.get(path)).status_code
                    else:
                        status = (await client.post(path, json={"text": "정말 재미있는 영화"})).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                samples[path].append((status, time.perf_counter() - started))
                await asyncio.sleep(interval_s)
    return samples


def summary(samples: list) -> dict:
    seconds = np.array([s for _, s in samples]) if samples else np.array([np.nan])
    share = sum(status == 200 for status, _ in samples) / max(len(samples), 1)
    p99 = float(np.percentile(seconds, 99))
    return {
        "samples": len(samples),
        "share_200": share,
        "p50_ms": float(np.percentile(seconds, 50)) * 1000,
        "p99_ms": p99 * 1000,
        "statuses": dict(Counter(str(status) for status, _ in samples)),
        "met": share >= TARGET_SHARE and p99 < TARGET_P99_S,
    }


async def under_slow_clients(
    base: str, slow: int, per_path: int, interval_s: float = 0.05, budget_s: float = 60.0, payload: bytes = PARTIAL_HEAD
) -> dict:
    """Hold `slow` slow connections, then sample both paths from another client; stop everything."""
    host, port = base.removeprefix("http://").split(":")
    attack = SlowClients(host, int(port), slow, payload)
    holding = asyncio.ensure_future(attack.hold())
    deadline = time.monotonic() + budget_s
    while attack.peak < slow and time.monotonic() < min(deadline, time.monotonic() + 15):
        await asyncio.sleep(0.05)
    held = attack.open
    started = time.perf_counter()
    samples = await sample(base, per_path, interval_s, deadline)
    wall = time.perf_counter() - started
    attack.stop.set()
    await asyncio.wait_for(holding, 30)
    return {
        "slow_connections": slow,
        "held_when_sampling_began": held,
        "peak_held": attack.peak,
        "closed_by_server": attack.closed_by_server,
        "refused": attack.refused,
        "sampling_s": wall,
        **{path: summary(samples[path]) for path in PATHS},
    }


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--model", type=Path, default=registry_root() / "nsmc-sentiment" / "current")
    parser.add_argument("--slow", type=int, nargs="+", default=[300, 500, 1500], help="slow connections per phase")
    parser.add_argument("--samples", type=int, default=300, help="samples of each path per phase")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    parser.add_argument(
        "--kind", choices=["head", "body"], default="head", help="half a request head, or a whole head and no body"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.model, args.slow, args.samples, args.interval = smoke_model(Path(tmp)), [20], 10, 0.05
        run(args)


def run(args) -> None:
    if not args.model.exists():
        raise SystemExit(f"slow_clients: {args.model} does not exist; promote a model first")
    allow_open_files(max(args.slow) + 256)

    server, base = start_server(args.model, threads=None)
    try:
        phases = []
        for slow in args.slow:
            payload = HEAD_WITHOUT_BODY if args.kind == "body" else PARTIAL_HEAD
            phase = asyncio.run(under_slow_clients(base, slow, args.samples, args.interval, 120, payload))
            print(
                f"{slow} slow connections (held {phase['held_when_sampling_began']}, "
                f"{phase['closed_by_server']} closed by the server): "
                + "; ".join(f"{p} {phase[p]['share_200']:.1%} 200s, p99 {phase[p]['p99_ms']:.0f} ms" for p in PATHS)
            )
            phases.append(phase)
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result(
        "slow_clients" if args.kind == "head" else f"slow_clients_{args.kind}",
        {
            "model": project_path(args.model),
            "kind": args.kind,
            "phases": phases,
            "targets": {"share_200": f">= {TARGET_SHARE}", "p99_s": f"< {TARGET_P99_S}", "at": "500 slow"},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
