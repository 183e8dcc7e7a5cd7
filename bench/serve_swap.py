"""Hot swaps under load: clients hammer `caviar serve` while `current` flips between two versions,
and every failed request is kept with its time, its error and the versions answering either side
(issue 47, item 11: 2 of 24,411 requests failed with httpx.ReadError during swaps). The cause was
not the swap: with --pause near 5 s it showed the server closing idle connections just as httpx
(which expires its own at 5 s) reused them; caviar/serving/limits.py says more.

To run: python -m bench.serve_swap [--seconds 300] [--clients 32] [--swap-every 1.5] [--shape default]
        python -m bench.serve_swap --smoke   (seconds: 4 clients, a few swaps; checks the script runs)

The two versions are one small model trained on the fixture reviews and a copy with one bias
nudged (other bytes, the same size), promoted into a registry of its own, so each swap loads,
checks and warms up a whole version as in use. Traffic goes to 127.0.0.1 only; clients, swaps and
seconds are all bounded, and the server is stopped at the end.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import FIXTURE_DATA, SMOKE_MODEL, BenchParser, bench_job, run_main, write_result
from bench.serve_load import review_texts, start_server
from bench.slow_clients import SlowClients, allow_open_files
from model.data import load_splits

SHAPES = {"smoke": SMOKE_MODEL, "default": {"vocab_size": 2000}}  # default: 2 layers, hidden 256


def two_versions(folder: Path, shape: str) -> Path:
    """A registry with v1 and v2 of one model (v2: a bias nudged); returns the model's folder."""
    # lazy: torch, the trainer and the registry, to build what the service loads
    from safetensors.torch import load_file, save_file

    from caviar.registry.promote import promote
    from caviar.tuning.stages.single_run import run_single

    job = bench_job({"name": "swap", "data": FIXTURE_DATA, "model": SHAPES[shape], "train": {"epochs": 1}}, folder)
    run_single(job, folder / "run", load_splits(job.data), progress=False)
    promote(folder / "run", "swap", force=True, root=folder / "registry")
    shutil.copytree(folder / "run", folder / "nudged")
    weights = folder / "nudged" / "checkpoint" / "model.safetensors"
    tensors = load_file(weights)
    bias = next(k for k in sorted(tensors) if k.endswith("bias"))
    tensors[bias] = tensors[bias] + 1e-4
    save_file(tensors, weights, metadata={"format": "pt"})
    promote(folder / "nudged", "swap", force=True, root=folder / "registry")
    return folder / "registry" / "swap"


class ServerLog:
    """The server's stderr, each line stamped on arrival (its swap lines say what it served when)."""

    def __init__(self, stream, t0: float):
        self.lines: list[tuple[float, str]] = []
        self.t0 = t0
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            self.lines.append((time.monotonic() - self.t0, raw.decode("utf-8", "replace").rstrip()))

    def swaps(self) -> list[tuple[float, str]]:
        return [(t, line) for t, line in self.lines if "now serving" in line]


async def flip(model_dir: Path, every_s: float, deadline: float, t0: float, flips: list) -> None:
    """Point `current` at v1, v2, v1, ... every `every_s` seconds, as promote and rollback do."""
    # lazy: the registry's link swap, the one thing this process does to the registry
    from caviar.registry.store import current_version, set_current

    version = current_version(model_dir)
    while time.monotonic() + every_s < deadline:
        await asyncio.sleep(every_s)
        version = "v2" if version == "v1" else "v1"
        set_current(model_dir, version)
        flips.append((time.monotonic() - t0, version))


async def hammer(
    url: str, texts: list[str], clients: int, deadline: float, t0: float, pause: tuple[float, float] | None = None
) -> list[dict]:
    """`clients` workers posting reviews until the deadline, each on its own connection (httpx's
    defaults otherwise: idle connections expire after 5 s) and waiting `pause` (a range of seconds)
    between its requests if given; one record per request, with how long its connection sat idle.
    Each worker owns its connection so that the pause is that connection's idle time: from one
    shared pool, a request takes the connection freed last, and none sits idle near the timeout."""
    records: list[dict] = []
    rng = random.Random(0)

    async def worker(start: int) -> None:
        i, idle = start, None
        async with httpx.AsyncClient(timeout=15.0) as client:
            while time.monotonic() < deadline:
                sent = time.monotonic() - t0
                try:
                    response = await client.post(url, json={"text": texts[i % len(texts)]})
                    record = {"status": response.status_code, "by": response.headers.get("caviar-model")}
                except httpx.HTTPError as err:
                    record = {"status": None, "error": type(err).__name__, "message": repr(err)[:300]}
                records.append({"sent": sent, "done": time.monotonic() - t0, "idle_s": idle, **record})
                i += clients
                if pause:  # an idle keep-alive connection, for a while around the client's own expiry
                    idle = rng.uniform(*pause)
                    await asyncio.sleep(idle)

    await asyncio.gather(*(worker(n) for n in range(clients)))
    return records


def around(records: list[dict], t: float) -> tuple[str | None, str | None]:
    """The version that gave the last answer finished before t, and the first finished after."""
    ok = sorted((r["done"], r["by"]) for r in records if r["status"] == 200)
    before = [by for done, by in ok if done <= t]
    after = [by for done, by in ok if done > t]
    return (before[-1] if before else None, after[0] if after else None)


def failures(records: list[dict], flips: list, swaps: list) -> list[dict]:
    found = []
    for r in (r for r in records if r["status"] != 200):
        before, after = around(records, r["done"])
        flip_gap = min((abs(r["done"] - t) for t, _ in flips), default=None)
        swap_gap = min((abs(r["done"] - t) for t, _ in swaps), default=None)
        found.append(
            {
                **r,
                "served_before": before,
                "served_after": after,
                "nearest_link_flip_ms": None if flip_gap is None else round(flip_gap * 1000, 1),
                "nearest_swap_log_ms": None if swap_gap is None else round(swap_gap * 1000, 1),
            }
        )
    return found


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the load runs (at most 1 hour)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--swap-every", type=float, default=1.5, help="seconds between flips of `current`")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="default")
    parser.add_argument(
        "--slow",
        type=int,
        default=0,
        help="connections held with half a request head meanwhile (bench/slow_clients.py)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="each client idles LOW to HIGH seconds between requests (httpx expires an idle connection at 5 s)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.swap_every, args.shape = 6.0, 4, 1.5, "smoke"
    seconds = min(args.seconds, 3600.0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = two_versions(Path(tmp), args.shape)
        server, base = start_server(model_dir / "current", None)
        t0 = time.monotonic()
        log = ServerLog(server.stderr, t0)
        try:
            held: dict = {}
            records, flips = asyncio.run(run(base, model_dir, args, seconds, t0, held))
        finally:
            server.terminate()
            server.wait(timeout=30)
        log.thread.join(timeout=5)
    swaps = log.swaps()
    failed = failures(records, flips, swaps)
    for f in failed:
        what = f.get("error") or f["status"]
        idle = "" if f["idle_s"] is None else f", its connection idle {f['idle_s']:.3f} s"
        print(f"failed at {f['done']:.3f} s: {what}, between {f['served_before']} and {f['served_after']}{idle}")
    figures = {
        "seconds": seconds,
        "clients": args.clients,
        "shape": args.shape,
        "swap_every_s": args.swap_every,
        "pause_s": args.pause,
        "slow_connections": {"asked": args.slow, **held},
        "requests": len(records),
        "requests_per_s": round(len(records) / seconds, 1),
        "link_flips": len(flips),
        "swaps_logged": len(swaps),
        "versions_answering": sorted({r["by"] for r in records if r.get("by")}),
        "failed": len(failed),
        "failures": failed[:50],
        "server_lines_other_than_swaps": [  # the scratch folder named as such, not as this machine's path
            line.replace(tmp, "<tmp>") for _, line in log.lines if "now serving" not in line
        ][-20:],
    }
    write_result("serve_swap", figures, smoke=args.smoke)


async def run(base: str, model_dir: Path, args, seconds: float, t0: float, held: dict) -> tuple[list[dict], list]:
    texts = review_texts(2000, args.smoke)
    deadline = time.monotonic() + seconds
    flips: list = []
    host, port = base.removeprefix("http://").rsplit(":", 1)
    slow = SlowClients(host, int(port), args.slow)
    allow_open_files(args.slow + args.clients + 256)
    holding = asyncio.ensure_future(slow.hold()) if args.slow else None
    records, _ = await asyncio.gather(
        hammer(f"{base}/predict", texts, args.clients, deadline, t0, tuple(args.pause) if args.pause else None),
        flip(model_dir, args.swap_every, deadline, t0, flips),
    )
    slow.stop.set()
    if holding is not None:
        await holding
    held.update(peak=slow.peak, closed_by_server=slow.closed_by_server, refused=slow.refused)
    return records, flips


if __name__ == "__main__":
    run_main(main, "bench.serve_swap")
